"""The BentoML service module nbserve writes into every Bento: only the model's own part.

BentoML serves classes from importable ``.py`` files, never from notebook cells, so each
version gets a small module rendered with its own model tag, loader, method calls and typed
APIs. Everything else a service does (request checks, answers, batching, image uploads) is
``nbserve/_serving.py``, a real module copied beside it as ``nbserve_serving.py``. Neither
needs nbserve, so the Bento can be containerized and served anywhere.
"""

from __future__ import annotations

import json
import string

BUNDLE_FILE = "nbserve_bundle.json"
KINDS_FILE = "nbserve_kinds.py"  # nbserve/_kinds.py, copied in: inputs that are not DataFrames
PROTOCOLS_FILE = "nbserve_protocols.py"  # nbserve/_protocols.py, copied in: other wire formats
# ... and its adapters, nbserve/_<stem>.py copied in as nbserve_<stem>.py
PROTOCOL_MODULES = ("protocol_base", "protocol_v2", "protocol_mlflow", "protocol_openai")
SERVING_MODULE = "nbserve_serving"  # nbserve/_serving.py, copied in: what every service does
SERVING_FILE = f"{SERVING_MODULE}.py"
REFERENCE_FILE = "reference.parquet"
SERVICE_MODULE = "nbserve_service"  # distinctive: never shadows a user's own service.py
SERVICE_FILE = f"{SERVICE_MODULE}.py"
# What the rendered service can do beyond predicting, recorded in every bundle so the agent
# knows whether an older version honours a setting (batching) before it starts it.
SERVICE_FEATURES = ("batching", "protocols")
# The serving process reads its batching settings from here (set by the agent, or by hand
# when the Bento is served elsewhere): {"max_batch_size": 100, "max_latency_ms": 60000}.
BATCHING_ENV = "NBSERVE_BATCHING"
VERSION_ENV = "NBSERVE_VERSION"  # the version's number, for the protocols that name versions

_TEMPLATE = string.Template(
    '''\
"""BentoML service for nbserve deployment ${deployment}: generated, do not edit.

The model's own part: its tag, loader, the calls of its methods and the typed APIs. What
every version does around them (checks, answers, batching) is nbserve_serving.py."""

from __future__ import annotations

import typing as t

import bentoml
import numpy as np
import pandas as pd
from nbserve_serving import BATCHING, DOCS, KIND_DATA, Files, Protocols, Rows, Serving


# No access log: nbserve's stable URL records every request, and a log line per
# request costs CPU and grows the log without bound.
@bentoml.service(
    name=${service_name},
    traffic={"timeout": 300},
    logging={"access": {"enabled": False}},
)
@bentoml.asgi_app(DOCS, path="/docs")
class ${class_name}(Serving):
    model_ref = bentoml.models.BentoModel(${model_tag})

    def __init__(self) -> None:
        import ${loader_module}

        self.model = ${loader_module}.load_model(self.model_ref)
        self._start({${predictors}})

    # With batching the APIs are coroutines, so requests can wait together for a batch;
    # without it they run in BentoML's thread, as plain BentoML APIs do.
${apis}

${class_name}.add_asgi_middleware(Files)
${class_name}.add_asgi_middleware(Protocols)  # V2, MLflow and OpenAI requests (nbserve_protocols.py)
'''
)

# One API endpoint (predict, predict_proba) of the service class.
_API = string.Template(
    '''
    if BATCHING:
        @bentoml.api
        async def ${api}(
            self, data: t.Annotated[pd.DataFrame, Rows(orient="records")], ctx: bentoml.Context
        ) -> np.ndarray:
            return await self._answer_batched("${api}", data, ctx)
    else:
        @bentoml.api
        def ${api}(
            self, data: t.Annotated[pd.DataFrame, Rows(orient="records")], ctx: bentoml.Context
        ) -> np.ndarray:
            return self._answer("${api}", data, ctx)
'''
)


# Names the service class already uses: a model method of that name cannot be an API too.
_RESERVED_APIS = frozenset({"model_ref", "model", "docs", "readyz", "livez", "metrics"})


# One API of a service whose input is not a DataFrame: a JSON value its kind checks.
_ANY_API = string.Template(
    '''
    if BATCHING:
        @bentoml.api
        async def ${api}(self, data: KIND_DATA, ctx: bentoml.Context) -> t.Any:
            return await self._answer_any_batched("${api}", data, ctx)
    else:
        @bentoml.api
        def ${api}(self, data: KIND_DATA, ctx: bentoml.Context) -> t.Any:
            return self._answer_any("${api}", data, ctx)
'''
)


def service_class_name(deployment: str) -> str:
    """The Python class name of a deployment's service: ``churn-v2`` -> ``ChurnV2Service``."""
    parts = deployment.replace("-", "_").split("_")
    return "".join(p.capitalize() for p in parts if p) + "Service"


def render_service(
    *,
    deployment: str,
    model_tag: str,
    loader_module: str,
    apis: list[tuple[str, str]],
    kind: str = "frame",
) -> str:
    """The source of the service module for one version. ``apis``: (path name, Python
    expression of ``frame`` that answers it), ``predict`` first."""
    for name, _ in apis:
        if not name.isidentifier() or name.startswith("_") or name in _RESERVED_APIS:
            raise ValueError(f"{name!r} cannot name an API")
    return _TEMPLATE.substitute(
        # Values that land in Python literals are repr()'d, so no name can break the module.
        deployment=repr(deployment),
        service_name=repr(deployment),
        class_name=service_class_name(deployment),
        model_tag=repr(model_tag),
        loader_module=loader_module,
        predictors=", ".join(f"{name!r}: lambda frame: {expr}" for name, expr in apis),
        apis="".join((_API if kind == "frame" else _ANY_API).substitute(api=name) for name, _ in apis),
    )


def render_bundle_file(bundle: dict) -> str:
    return json.dumps(bundle, indent=2, sort_keys=True, default=str)
