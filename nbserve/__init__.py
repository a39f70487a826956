"""nbserve: deploy, version and watch notebook models as BentoML services.

    import nbserve
    dep = nbserve.deploy(model, name="iris", sample=X_test)
    dep.predict(X_test[:5]); dep.history(); dep.rollback()

In a notebook: ``%load_ext nbserve`` then ``%deploy model --name iris --sample X_test``.
Everything public is importable from here; modules with a leading underscore may change.
Heavy imports (bentoml, pandas, httpx) are deferred until first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _config  # noqa: F401  (privacy defaults before anything imports bentoml)
from . import errors
from .errors import (
    AgentUnreachable,
    DeployFailed,
    DeploymentNotFound,
    InvalidArgument,
    ModelNotServable,
    NbserveError,
    NbserveWarning,
    SchemaMismatch,
)

from ._version import __version__

__all__ = [
    "__version__",
    "deploy",
    "get",
    "deployments",
    "top",
    "export_k8s",
    "export_ray",
    "connect",
    "Deployment",
    "schedule",
    "schedules",
    "get_schedule",
    "Schedule",
    "DriftConfig",
    "admin",
    "flavors",
    "errors",
    "NbserveError",
    "InvalidArgument",
    "ModelNotServable",
    "SchemaMismatch",
    "NbserveWarning",
    "DeploymentNotFound",
    "DeployFailed",
    "AgentUnreachable",
    "load_ipython_extension",
]

_LAZY = {"deploy", "get", "deployments", "connect", "Deployment", "top"}

if TYPE_CHECKING:
    from ._api import Deployment, connect, deploy, deployments, get, top
    from ._drift import DriftConfig
    from ._export import export_k8s
    from ._export_ray import export_ray
    from ._schedules import Schedule, get_schedule, schedule, schedules


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _api

        return getattr(_api, name)
    if name in {"schedule", "schedules", "get_schedule", "Schedule"}:
        from . import _schedules

        return getattr(_schedules, name)
    if name in ("admin", "flavors"):  # tokens, audit, targets; new kinds of model (submodules)
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name == "export_k8s":  # Kubernetes manifests for a deployment (past one host)
        from ._export import export_k8s

        return export_k8s
    if name == "export_ray":  # a KubeRay RayService for a deployment's version
        from ._export_ray import export_ray

        return export_ray
    if name == "DriftConfig":
        from ._drift import DriftConfig

        return DriftConfig
    raise AttributeError(f"module 'nbserve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbserve``: registers the ``%deploy`` magic."""
    from ._magic import register

    register(ipython)
