"""Flavors: how each kind of model is saved into BentoML, loaded in the server and called.

A registry, filled in order of specificity; :func:`flavor_for` picks the first that takes a
model. A new framework is one :class:`Flavor` (a subclass when it calls the model in its own
way) plus :func:`register_flavor`, or an entry point in the ``nbserve.flavors`` group.
"""

from __future__ import annotations

import importlib.metadata as _metadata
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import _flavor_calls
from ._kinds import Array, InputKind, Text, kind_of
from .errors import InvalidArgument, ModelNotServable

__all__ = ["Flavor", "register_flavor", "flavor_for", "FLAVOR_CALLS_FILE"]

# nbserve/_flavor_calls.py, copied into every Bento: the loaders and calls flavors name
FLAVOR_CALLS_FILE = "nbserve_flavor_calls.py"
_CALLS = "__import__('nbserve_flavor_calls')"  # in a serve expression: that module, in the server


def _module_of(model: Any) -> str:
    return type(model).__module__ or ""


def _isinstance_by_name(model: Any, module: str, qualname: str) -> bool:
    """isinstance without importing a framework the user never imported."""
    mod = sys.modules.get(module)
    cls = getattr(mod, qualname, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(model, cls)


@dataclass(frozen=True)
class Flavor:
    """How one kind of model is saved into and loaded from BentoML."""

    name: str
    bentoml_module: str  # has save_model / load_model
    matches: Callable[[Any], bool]
    predict_expr: str = "self.model.predict(frame)"  # what the server runs for the "predict" method
    default_method: str = "predict"  # what is served when the deploy names no method
    # the module the service imports to load the model (``loader.load_model(model_ref)``)
    loader: str | None = None
    packages: tuple[str, ...] = ()  # modules pinned beyond those the model's pickle names
    pickled: bool = True  # the saver pickles the model: its pickle names its code and packages

    @property
    def loader_module(self) -> str:
        return self.loader or self.bentoml_module

    def input_kind(self, sample: Any) -> type[InputKind] | None:
        """The kind of input the sample is; None for rows of columns (a DataFrame, a 2-D array)."""
        return kind_of(sample)

    def serve_expr(self, method: str) -> str:
        """The service's Python expression that calls ``method`` on ``frame``."""
        if method == self.default_method:
            return self.predict_expr
        if method == "__call__":
            return "self.model(frame)"
        return f"self.model.{method}(frame)"

    def call(self, model: Any, method: str, data: Any) -> Any:
        """The same call in the kernel, on the sample (proof the model can serve it)."""
        return model(data) if method == "__call__" else getattr(model, method)(data)

    def save(self, name: str, model: Any, metadata: dict[str, Any]) -> str:
        import importlib

        module = importlib.import_module(self.bentoml_module)
        saved = module.save_model(name, model, metadata=metadata)
        return str(saved.tag)


def _is_tensor(value: Any) -> bool:
    return _isinstance_by_name(value, "torch", "Tensor")


@contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    """The torch module in eval mode (dropout off) while the sample is answered, as the server's
    is; the notebook's module as it was afterwards."""
    training = getattr(module, "training", False)
    if training:
        module.eval()
    try:
        yield
    finally:
        if training:
            module.train()


@dataclass(frozen=True)
class PyTorchFlavor(Flavor):
    """A ``torch.nn.Module``: its input is a tensor of the sample's shape beyond the batch axis
    (any shape: images (N, 3, H, W), rows (N, 5), token ids (N, 12)), checked as the ``array``
    kind; the server turns each request into a tensor, calls the module in eval mode without
    gradients and answers its output tensor as an array."""

    def input_kind(self, sample: Any) -> type[InputKind] | None:
        import numpy as np

        if _is_tensor(sample) or (isinstance(sample, np.ndarray) and sample.dtype.kind in "biuf"
                                  and sample.ndim >= 1):
            if len(sample) == 0:
                raise InvalidArgument("the sample has no rows",
                                      hint="pass a batch of inputs: its first axis is the batch")
            return Array  # a module takes a tensor of the sample's shape, 2-D included
        return kind_of(sample)  # a DataFrame: rows, as a tensor of its values

    def serve_expr(self, method: str) -> str:
        return f"{_CALLS}.torch_call(self.model, {method!r}, frame)"

    def call(self, model: Any, method: str, data: Any) -> Any:
        with _evaluating(model):
            return _flavor_calls.torch_call(model, method, data)


@dataclass(frozen=True)
class PipelineFlavor(Flavor):
    """A Hugging Face ``transformers`` pipeline (text classification, feature extraction, token
    classification...): texts in, each text's answer as JSON out (see
    :func:`nbserve._flavor_calls.pipeline_answers`). Saved with ``save_pretrained`` into the
    model store, the weights and tokenizer travel in the Bento; nothing is downloaded."""

    def input_kind(self, sample: Any) -> type[InputKind] | None:
        if isinstance(sample, str):
            raise InvalidArgument("the sample of a pipeline is a list of texts, not one text",
                                  hint='sample=["great pasta", "cold soup"]')
        if not Text.accepts(sample):
            raise InvalidArgument(f"a transformers pipeline takes texts, and the sample is a "
                                  f"{type(sample).__name__}",
                                  hint='pass a few texts: sample=["great pasta", "cold soup"]')
        return Text

    def serve_expr(self, method: str) -> str:
        if method != "__call__":
            return super().serve_expr(method)
        return f"{_CALLS}.pipeline_answers(self.model, frame)"

    def call(self, model: Any, method: str, data: Any) -> Any:
        if method != "__call__":
            return super().call(model, method, data)
        with _evaluating(getattr(model, "model", None)):  # a model fine-tuned in the notebook is left training
            return _flavor_calls.pipeline_answers(model, data)

    def save(self, name: str, model: Any, metadata: dict[str, Any]) -> str:
        import json

        import bentoml

        metadata = {**metadata, _flavor_calls.PIPELINE_PARAMS: json.dumps(_flavor_calls.pipeline_params(model))}
        with _TransformersFiveShim():
            saved = bentoml.transformers.save_model(
                name, model, metadata=metadata,
                # bentoml infers signatures through transformers.TFPreTrainedModel, gone in 5.x
                signatures={"__call__": {"batchable": False}},
            )
        return str(saved.tag)


class _TransformersFiveShim:
    """bentoml.transformers.save_model imports ``is_tf_available`` and ``is_flax_available``
    from ``transformers.utils``, which transformers 5 removed (it has neither backend): while
    saving, the missing ones answer False, as they would; they are removed again after."""

    _NAMES = ("is_tf_available", "is_flax_available")

    def __enter__(self) -> "_TransformersFiveShim":
        import transformers.utils

        self.added = [n for n in self._NAMES if not hasattr(transformers.utils, n)]
        for name in self.added:
            setattr(transformers.utils, name, lambda: False)
        return self

    def __exit__(self, *exc: Any) -> None:
        import transformers.utils

        for name in self.added:
            delattr(transformers.utils, name)


@dataclass(frozen=True)
class XGBoostFlavor(Flavor):
    """An XGBoost model: a scikit-learn-API estimator (``XGBClassifier``, ``XGBRegressor``...) is
    called as it is; a ``Booster`` answers a ``DMatrix`` only, so each request's rows become one
    (their column names kept: the Booster checks them against its features)."""

    def serve_expr(self, method: str) -> str:
        return f"{_CALLS}.xgboost_call(self.model, {method!r}, frame)"

    def call(self, model: Any, method: str, data: Any) -> Any:
        return _flavor_calls.xgboost_call(model, method, data)

    def save(self, name: str, model: Any, metadata: dict[str, Any]) -> str:
        import importlib

        # that module's function, once: importing "bentoml.xgboost" again may load it anew
        save_model = importlib.import_module(self.bentoml_module).save_model
        with _DistributionOfModule(save_model.__globals__):
            return str(save_model(name, model, metadata=metadata).tag)


class _DistributionOfModule:
    """BentoML's saver records the version of the distribution named like the framework's module
    (``importlib.metadata.version("xgboost")``), and xgboost-cpu, XGBoost's wheel without CUDA,
    installs that module under another name: while saving, a name with no distribution of its own
    is looked up through the distribution that installed the module of that name."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace  # the saver's globals

    def __enter__(self) -> "_DistributionOfModule":
        self.original = original = self.namespace.get("get_pkg_version")

        def version(name: str) -> str:
            try:
                return original(name)
            except _metadata.PackageNotFoundError:
                installed_by = _metadata.packages_distributions().get(name)
                if not installed_by:
                    raise
                return _metadata.version(installed_by[0])

        if original is not None:
            self.namespace["get_pkg_version"] = version
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.original is not None:
            self.namespace["get_pkg_version"] = self.original


_FLAVORS: list[Flavor] = []


def register_flavor(flavor: Flavor, *, first: bool = False) -> None:
    """Add a flavor; ``first=True`` puts it ahead of the built-in ones."""
    _FLAVORS.insert(0, flavor) if first else _FLAVORS.append(flavor)


register_flavor(
    XGBoostFlavor(
        "xgboost",
        "bentoml.xgboost",
        lambda m: _module_of(m).startswith("xgboost")
        and (_isinstance_by_name(m, "xgboost", "XGBModel") or _isinstance_by_name(m, "xgboost", "Booster")),
    )
)
register_flavor(
    # LightGBM's BentoML flavor takes Boosters; its sklearn-API estimators go to sklearn.
    Flavor("lightgbm", "bentoml.lightgbm", lambda m: _isinstance_by_name(m, "lightgbm", "Booster"))
)
register_flavor(
    Flavor(
        "sklearn",
        "bentoml.sklearn",
        lambda m: _isinstance_by_name(m, "sklearn.base", "BaseEstimator"),
    )
)
register_flavor(
    PyTorchFlavor(
        "pytorch",
        "bentoml.pytorch",
        lambda m: _isinstance_by_name(m, "torch.nn", "Module"),
        default_method="__call__",
        loader="nbserve_flavor_calls",  # its load_model: bentoml.pytorch's, in eval mode
        packages=("torch",),
    )
)
register_flavor(
    PipelineFlavor(
        "transformers",
        "bentoml.transformers",
        lambda m: _isinstance_by_name(m, "transformers.pipelines.base", "Pipeline"),
        default_method="__call__",
        loader="nbserve_flavor_calls",  # its load_model: bentoml.transformers', with the call settings
        packages=("transformers", "torch", "tokenizers", "safetensors"),
        pickled=False,  # save_pretrained writes files; pickling the weights to scan them costs a copy
    )
)
register_flavor(
    # Plain functions, lambdas and callable objects without predict: called with the input.
    Flavor(
        "function",
        "bentoml.picklable_model",
        lambda m: callable(m) and not isinstance(m, type) and not callable(getattr(m, "predict", None)),
        predict_expr="self.model(frame)",
        default_method="__call__",
    )
)
register_flavor(Flavor("picklable", "bentoml.picklable_model", lambda m: True))


def flavor_named(name: str) -> Flavor:
    return next(f for f in _FLAVORS if f.name == name)


_entry_points_loaded = False


def _load_entry_point_flavors() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in _metadata.entry_points(group="nbserve.flavors"):
        flavor = ep.load()
        register_flavor(flavor() if callable(flavor) and not isinstance(flavor, Flavor) else flavor, first=True)


def flavor_for(model: Any) -> Flavor:
    """The first registered flavor that takes this model."""
    _load_entry_point_flavors()
    for flavor in _FLAVORS:
        if flavor.matches(model):
            return flavor
    raise ModelNotServable(f"no flavor can save a {type(model).__name__}")  # pragma: no cover
