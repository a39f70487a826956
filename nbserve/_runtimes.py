"""Which runtime serves a version: the native model, or the model compiled to ONNX.

``runtime="auto"`` converts a model nbserve knows how to convert (scikit-learn estimators and
pipelines through skl2onnx, LightGBM Boosters and XGBoost models through onnxmltools, PyTorch
modules through torch.onnx), runs the compiled graph with onnxruntime on the reference sample
in the kernel, and keeps it only when it answers what the native model answers: labels and
strings identical, numbers within ``TOLERANCE``. Otherwise the version serves the native model
and records why. ``runtime="onnx"`` fails the deploy with that reason instead; ``"native"``
never converts. The agent's parity replay then checks the served version against the
notebook's own answers with the same tolerance, before it takes traffic.

The converters and onnxruntime are optional (``pip install 'nbserve[fast]'``).
"""

from __future__ import annotations

import importlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgument

__all__ = ["DEFAULT_RUNTIME", "RUNTIMES", "TOLERANCE", "Runtime", "choose_runtime", "check_runtime"]

RUNTIMES = ("auto", "onnx", "native")
DEFAULT_RUNTIME = "auto"
# a compiled graph computes in float32 where the framework computes in float64: probabilities
# and regression values agree to about 1e-7; labels and strings must be identical
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
FAST_EXTRA = "pip install 'nbserve[fast]'"
_CONVERTIBLE_METHODS = ("predict", "predict_proba")
# flavor -> (the methods its graph answers, the converter packages: a Booster's input types are skl2onnx's)
_CONVERTERS = {"sklearn": (_CONVERTIBLE_METHODS, ("skl2onnx",)),
               "lightgbm": (("predict",), ("onnxmltools", "skl2onnx")),
               "xgboost": (_CONVERTIBLE_METHODS, ("onnxmltools", "skl2onnx")),
               "pytorch": (("__call__",), ("torch",))}
_LOCALE = "C.UTF-8"  # onnxruntime's StringNormalizer needs a locale every Linux has


@dataclass
class Runtime:
    """The runtime a version is built for, and why."""

    name: str  # "native" or "onnx"
    asked: str = "auto"
    graph: bytes | None = None
    spec: dict[str, Any] | None = None
    reason: str | None = None  # why not onnx
    tried: bool = False  # a converter ran (its error or the differing rows are the reason)
    missing_extra: bool = False  # nbserve[fast] would compile it: said once per kernel
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What the bundle records (``model.runtime``): shown by history, /metadata and the card."""
        found = {"name": self.name, "asked": self.asked, **self.details}
        if self.name == "onnx":
            found["tolerance"] = dict(TOLERANCE)
        if self.reason:
            # a fallback is an event the user is told of; a model nothing converts is just native
            found["fallback" if self.tried else "native_because"] = self.reason
        return found


def check_runtime(runtime: Any) -> str:
    if runtime not in RUNTIMES:
        raise InvalidArgument(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}",
                              hint='runtime="auto" compiles to ONNX when the answers agree, else serves the model')
    return runtime


def choose_runtime(asked: str, model: Any, *, flavor: str, kind: str, inputs: Any,
                   answered: dict[str, Any]) -> Runtime:
    """The runtime for ``model``: ``inputs`` are what the native model answered (``answered``:
    method -> its answers) in the kernel."""
    if asked == "native":
        return Runtime("native", asked)
    started = time.perf_counter()
    try:
        graph, spec, tried = _compile(model, flavor=flavor, kind=kind, inputs=inputs, answered=answered)
    except _NotConvertible as exc:
        return Runtime("native", asked, reason=str(exc), tried=exc.tried, missing_extra=exc.missing_extra,
                       details={"seconds": round(time.perf_counter() - started, 3)})
    return Runtime("onnx", asked, graph=graph, spec=spec,
                   details={"converter": tried, "feed": spec["feed"],
                            "seconds": round(time.perf_counter() - started, 3)})


class _NotConvertible(Exception):
    """Why a model is served natively: said in the progress (and, when a converter ran, the
    runtime_fallback event)."""

    def __init__(self, reason: str, *, tried: bool = False, missing_extra: bool = False) -> None:
        super().__init__(reason)
        self.tried, self.missing_extra = tried, missing_extra


def _compile(model: Any, *, flavor: str, kind: str, inputs: Any,
             answered: dict[str, Any]) -> tuple[bytes, dict[str, Any], str]:
    converter = _CONVERTERS.get(flavor)
    if converter is None:
        raise _NotConvertible(f"no ONNX converter for the {flavor} flavor here (nbserve compiles scikit-learn "
                              "estimators and pipelines, LightGBM Boosters, XGBoost models and PyTorch modules)")
    methods, packages = converter
    other = [m for m in answered if m not in methods]
    if other:
        raise _NotConvertible(f"{', '.join(other)} has no ONNX equivalent (compiled: {', '.join(methods)})")
    missing = _missing(*packages, "onnx", "onnxruntime")
    if missing:
        raise _NotConvertible(f"{' and '.join(missing)} not installed; for the compiled runtime: {FAST_EXTRA}",
                              missing_extra=True)
    import numpy as np

    failures = []
    if flavor == "pytorch":  # one tensor of the sample's shape: floats as the module's float32, ids as int64
        dtype = "int64" if np.asarray(inputs).dtype.kind in "biu" else "float32"
        feeds = [({"feed": "tensor", "input": "X", "dtype": dtype, "keep_shape": True}, inputs)]
    else:
        feeds = _feeds(kind, inputs, np)
    if flavor in ("lightgbm", "xgboost"):  # one float tensor (their trees compare in float32 too)
        feeds = [f for f in feeds if f[0]["feed"] == "tensor"][:1]
    # a Booster's predict is its probabilities or values; an estimator's, its labels (see _outputs)
    booster = flavor == "lightgbm" or type(model).__name__ == "Booster"
    for spec, initial_types in feeds:
        try:
            with warnings.catch_warnings():  # the converter's notes on opsets are not the user's business
                warnings.simplefilter("ignore")
                onx, named = _convert(flavor, model, initial_types)
        except Exception as exc:  # noqa: BLE001 - any converter failure means: serve natively
            raise _NotConvertible(f"{packages[0]} cannot convert it: {type(exc).__name__}: {_short(exc)}",
                                  tried=True) from None
        graph = onx.SerializeToString()
        spec["outputs"] = _outputs(flavor, booster, [o.name for o in onx.graph.output], answered, np)
        try:
            differs = _differs(graph, spec, inputs, answered, np)
        except Exception as exc:  # noqa: BLE001 - onnxruntime refused the graph or the input
            differs = f"onnxruntime could not run it: {type(exc).__name__}: {_short(exc)}"
        if differs is None:
            return graph, spec, f"{named} ({spec.get('dtype', 'strings')} input)"
        failures.append(differs)
    # a differing answer says more than a graph onnxruntime refused for another input type
    differing = [f for f in failures if not f.startswith("onnxruntime could not run it")]
    raise _NotConvertible((differing or failures or [f"no ONNX input for the {kind} kind"])[0], tried=bool(failures))



def _convert(flavor: str, model: Any, initial_types: list[Any]) -> tuple[Any, str]:
    """The ONNX graph of ``model`` and the converter that made it (for a torch module,
    ``initial_types`` is the sample it is traced with)."""
    if flavor == "pytorch":
        return _export_torch(model, initial_types)
    if flavor in ("lightgbm", "xgboost"):
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        # onnxmltools checks its own type classes, not skl2onnx's of the same name
        initial_types = [(name, FloatTensorType(kind.shape)) for name, kind in initial_types]
        named = f"onnxmltools {onnxmltools.__version__}"
        if flavor == "xgboost":
            return onnxmltools.convert_xgboost(_without_feature_names(model), initial_types=initial_types), named
        return onnxmltools.convert_lightgbm(model, initial_types=initial_types, zipmap=False), named
    import skl2onnx

    extra: dict[str, Any] = {}
    if _register_boosting_converters(model):  # onnxmltools writes ai.onnx.ml opset 3 trees
        extra["target_opset"] = {"": skl2onnx.get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    return (skl2onnx.to_onnx(model, initial_types=initial_types, options=_options(model), **extra),
            f"skl2onnx {skl2onnx.__version__}")


# (module, estimator, the name skl2onnx knows it by, classifier?, onnxmltools' converter)
_BOOSTING_ESTIMATORS = (
    ("lightgbm", "LGBMClassifier", "LightGbmLGBMClassifier", True, "lightgbm.operator_converters.LightGbm"),
    ("lightgbm", "LGBMRegressor", "LightGbmLGBMRegressor", False, "lightgbm.operator_converters.LightGbm"),
    ("xgboost", "XGBClassifier", "XGBoostXGBClassifier", True, "xgboost.operator_converters.XGBoost"),
    ("xgboost", "XGBRegressor", "XGBoostXGBRegressor", False, "xgboost.operator_converters.XGBoost"),
)
_registered: set[str] = set()


def _register_boosting_converters(model: Any) -> bool:
    """skl2onnx converts LightGBM's and XGBoost's scikit-learn estimators (alone, or as a
    pipeline's step) once onnxmltools' converters are registered for them, as skl2onnx's own
    examples do. Only for libraries already imported (the model's): nothing heavy is imported.
    True when ``model`` holds one of those estimators."""
    import sys

    held = {f"{type(p).__module__.split('.')[0]}.{type(p).__name__}" for p in _estimators_in(model)}
    found = False
    for module, estimator, alias, classifier, converter in _BOOSTING_ESTIMATORS:
        if f"{module}.{estimator}" not in held or module not in sys.modules:
            continue
        found = True
        if alias in _registered:
            continue
        try:
            from skl2onnx import update_registered_converter
            from skl2onnx.common.shape_calculator import (
                calculate_linear_classifier_output_shapes,
                calculate_linear_regressor_output_shapes,
            )

            cls = getattr(importlib.import_module(module), estimator)
            convert = getattr(importlib.import_module(f"onnxmltools.convert.{converter}"),
                              f"convert_{module}")
        except (ImportError, AttributeError):  # no onnxmltools: skl2onnx says it has no converter
            return False
        if classifier:
            update_registered_converter(cls, alias, calculate_linear_classifier_output_shapes, convert,
                                        options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
        else:
            update_registered_converter(cls, alias, calculate_linear_regressor_output_shapes, convert)
        _registered.add(alias)
    return found


def _export_torch(module: Any, sample: Any) -> tuple[Any, str]:
    """torch.onnx's TorchScript exporter (the dynamo one needs onnxscript), traced in eval mode on
    two rows of the sample, the batch axis left free."""
    import io

    import numpy as np
    import onnx
    import torch

    from ._flavors import _evaluating

    first = np.asarray(sample[:2])
    traced = torch.as_tensor(first, dtype=torch.int64 if first.dtype.kind in "biu" else torch.float32)
    buffer = io.BytesIO()
    with _evaluating(module), torch.no_grad():
        torch.onnx.export(module, (traced,), buffer, dynamo=False, input_names=["X"], output_names=["Y"],
                          dynamic_axes={"X": {0: "batch"}, "Y": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue()), f"torch.onnx {torch.__version__}"


def _without_feature_names(model: Any) -> Any:
    """A copy of an XGBoost model whose Booster has no feature names: onnxmltools reads each
    split's feature as ``f<column index>``, and a DataFrame's column names are not that."""
    import copy

    unnamed = copy.deepcopy(model)
    (unnamed.get_booster() if hasattr(unnamed, "get_booster") else unnamed).feature_names = None
    return unnamed


def _outputs(flavor: str, booster: bool, names: list[str], answered: dict[str, Any], np: Any) -> dict[str, Any]:
    """Which graph output answers each method. A Booster's ``predict`` is its probabilities (one
    column of them for a binary objective) or its values; scikit-learn's are label then probabilities."""
    if flavor == "pytorch":
        return {"__call__": names[0]}
    if not booster:
        return {m: names[i] for i, m in enumerate(_CONVERTIBLE_METHODS) if m in answered}
    if "probabilities" not in names:
        return {"predict": names[0]}
    return {"predict": "probabilities" if np.asarray(answered["predict"]).ndim == 2 else ["probabilities", 1]}


def _missing(*names: str) -> list[str]:
    found = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            found.append(name)
    return found


def _feeds(kind: str, inputs: Any, np: Any) -> list[tuple[dict[str, Any], list[Any]]]:
    """The ways to feed this input to a graph, fastest first: float32 is what tree ensembles
    compare in (scikit-learn casts to float32 too), float64 keeps linear models exact."""
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType, Int64TensorType,
                                            StringTensorType)

    tensor_types = {"float32": FloatTensorType, "float64": DoubleTensorType}
    if kind == "text":
        return [({"feed": "strings", "input": "X"}, [("X", StringTensorType([None, 1]))])]
    if kind == "array":
        values = np.asarray(inputs)
        if values.ndim != 2 or values.dtype.kind not in "biuf":
            raise _NotConvertible("only 2-D numeric arrays are compiled")
        return [({"feed": "tensor", "input": "X", "dtype": d}, [("X", t([None, values.shape[1]]))])
                for d, t in tensor_types.items()]
    if kind != "frame":
        raise _NotConvertible(f"inputs of the {kind} kind are not compiled")
    kinds = {str(c): inputs[c].dtype.kind for c in inputs.columns}
    if all(k in "biuf" for k in kinds.values()):
        return [({"feed": "tensor", "input": "X", "dtype": d}, [("X", t([None, len(kinds)]))])
                for d, t in tensor_types.items()]
    feeds = []
    for number, number_type in tensor_types.items():
        columns, types = [], []
        for name, k in kinds.items():
            dtype, tensor = (("int64", Int64TensorType) if k in "biu" else (number, number_type) if k == "f"
                             else ("str", StringTensorType))
            columns.append([name, dtype])
            types.append((name, tensor([None, 1])))
        feeds.append(({"feed": "columns", "inputs": columns, "dtype": number}, types))
    return feeds


def _estimators_in(model: Any) -> list[Any]:
    """The model and every estimator it holds (a pipeline's steps, their own parts)."""
    from sklearn.base import BaseEstimator

    return [model, *(v for v in model.get_params(deep=True).values() if isinstance(v, BaseEstimator))]


def _options(model: Any) -> dict[Any, dict[str, Any]]:
    """Per estimator class: probabilities as a plain tensor (no ZipMap), text in a locale that exists."""
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    options: dict[Any, dict[str, Any]] = {}
    for est in _estimators_in(model):
        if is_classifier(est) and not isinstance(est, Pipeline) and hasattr(est, "predict_proba"):
            options[type(est)] = {"zipmap": False}
        elif type(est).__name__ in ("TfidfVectorizer", "CountVectorizer"):
            options[type(est)] = {"locale": _LOCALE}
    return options


def _differs(graph: bytes, spec: dict[str, Any], inputs: Any, answered: dict[str, Any], np: Any) -> str | None:
    """None when the compiled graph answers the reference sample as the model did; else the first
    differing row, said plainly."""
    from ._onnx_runtime import OnnxModel

    compiled = OnnxModel(graph, spec)
    for method, want in answered.items():
        have = getattr(compiled, method)(inputs)
        want = np.asarray(want)
        if have.shape != want.shape:
            return f"the compiled {method} answers shape {have.shape}, the model {want.shape}"
        if want.dtype.kind in "fc":
            same = np.isclose(have, want, equal_nan=True, **TOLERANCE)
        else:
            same = have.astype(str) == want.astype(str) if want.dtype.kind in "OUS" else have == want
        rows = np.flatnonzero(~same.reshape(len(want), -1).all(axis=1))
        if len(rows):
            row = int(rows[0])
            return (f"the compiled {method} differs on {len(rows)} of {len(want)} reference rows (row {row}: "
                    f"{_plain(want[row])!r} native, {_plain(have[row])!r} compiled)")
    return None


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def _short(exc: Exception, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text[:limit] + ("..." if len(text) > limit else "")
