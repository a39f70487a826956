"""Turn a notebook's model into a BentoML bundle: model, service, schema, sample, provenance.

Everything here runs in the user's process (the kernel), because that is where the model
object lives. The result is a Bento exported to one archive, which the agent imports:
the same hand-off for a local agent and a remote one.

How each kind of model is saved, loaded and called is its flavor (nbserve/_flavors.py).
"""

from __future__ import annotations

import importlib.metadata as _metadata
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _config  # noqa: F401  (privacy env before bentoml)
from ._service_template import (
    BUNDLE_FILE,
    KINDS_FILE,
    PROTOCOL_MODULES,
    PROTOCOLS_FILE,
    REFERENCE_FILE,
    SERVICE_FEATURES,
    SERVICE_FILE,
    SERVICE_MODULE,
    SERVING_FILE,
    render_bundle_file,
    render_service,
    service_class_name,
)
from ._flavors import FLAVOR_CALLS_FILE, Flavor, flavor_for, flavor_named, register_flavor
from ._kinds import ANSWER_COLUMN, INPUT_COLUMN, KINDS, InputKind
from ._provenance import provenance
from ._requirements import ByValue, code_and_pickle, pinned_requirements, resolved_set, with_packages
from ._runtimes import DEFAULT_RUNTIME, Runtime, check_runtime, choose_runtime
from .errors import BundleError, InvalidArgument, ModelNotServable

__all__ = ["Flavor", "register_flavor", "flavor_for", "served_methods", "Bundle", "build_bundle"]

REFERENCE_ROWS = 10_000
PREDICTION_COLUMN = "__prediction__"
MAX_ANSWER_BYTES = 32 * 2**20  # vector answers kept for the parity replay (10,000 x 768 floats would not fit)
# nbserve's own modules the generated service imports, copied into every Bento (numpy, pandas
# and bentoml only, so a Bento serves without nbserve): what every service does, the input
# kinds, and the loaders and calls of flavors that need more than BentoML's (PyTorch, pipelines)
_COPIED_MODULES = {"_serving.py": SERVING_FILE, "_kinds.py": KINDS_FILE, "_flavor_calls.py": FLAVOR_CALLS_FILE,
                   "_protocols.py": PROTOCOLS_FILE,
                   # the wire formats' adapters, one module each, and what they share
                   **{f"_{stem}.py": f"nbserve_{stem}.py" for stem in PROTOCOL_MODULES}}
ONNX_MODULE = "nbserve_onnx"  # nbserve/_onnx_runtime.py, copied into a Bento on the onnx runtime

# -- methods --------------------------------------------------------------------------


# Methods worth naming when a model lacks the one asked for.
_KNOWN_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform",
                  "score_samples", "__call__")


def served_methods(model: Any, flavor: Flavor, method: str | None = None,
                   methods: Iterable[str] | None = None) -> list[str]:
    """The model methods a version serves, the first at ``/predict``. By default: the
    flavor's own (``predict``, or calling the model) and ``predict_proba`` when the model has it."""
    if methods is not None and method is not None:
        raise InvalidArgument("give method or methods, not both", hint="methods=['predict', 'predict_proba']")
    if methods is not None:
        asked = list(methods)
        if not asked or not all(isinstance(m, str) for m in asked):
            raise InvalidArgument("methods must be a non-empty list of method names",
                                  hint="e.g. methods=['predict', 'predict_proba']")
    elif method is not None:
        asked = [method]
    else:
        asked = [flavor.default_method]
        if flavor.default_method == "predict" and callable(getattr(model, "predict_proba", None)):
            asked.append("predict_proba")
    if len(set(asked)) != len(asked):
        raise InvalidArgument(f"methods named twice: {asked}")
    has = [m for m in _KNOWN_METHODS if (callable(model) if m == "__call__" else callable(getattr(model, m, None)))]
    for name in asked:
        if not isinstance(name, str) or not (name == "__call__" or (name.isidentifier() and not name.startswith("_"))):
            raise InvalidArgument(f"{name!r} cannot be served: name a public method, or '__call__'",
                                  hint=f"{type(model).__name__} has: {', '.join(has) or 'no known method'}")
        ok = callable(model) if name == "__call__" else callable(getattr(model, name, None))
        if not ok:
            what = "is not callable" if name == "__call__" else f"has no {name}() method"
            raise ModelNotServable(
                f"{type(model).__name__} {what}, so it cannot be served",
                hint=(f"serve one it has: method={has[0]!r}" if has else
                      "deploy a fitted estimator, a function, or an object with predict(self, X)")
                + (f" (it has {', '.join(has)})" if len(has) > 1 else ""),
            )
    return asked


def service_apis(methods: list[str]) -> list[tuple[str, str]]:
    """(path name, method) pairs: the first method at ``/predict``, each named one at its own
    path too (``/transform``, ``/predict_proba``); calling the model is ``/predict`` only."""
    apis = [("predict", methods[0])]
    for name in methods:
        if name not in ("predict", "__call__") and (name, name) not in apis:
            apis.append((name, name))
    return apis


# -- schema and reference sample ------------------------------------------------------


def _column_kind(dtype: Any) -> str:
    import pandas as pd

    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    kind = getattr(dtype, "kind", "O")
    return {"b": "bool", "i": "int", "u": "int", "f": "float", "M": "datetime"}.get(kind, "string")


def sample_frame(sample: Any) -> tuple["Any", bool]:
    """The sample as a DataFrame, and whether the model takes positional arrays."""
    import numpy as np
    import pandas as pd

    if isinstance(sample, pd.Series):
        sample = sample.to_frame()
    if isinstance(sample, pd.DataFrame):
        if sample.shape[1] == 0:
            raise InvalidArgument("the sample has no columns")
        if len(sample) == 0:
            raise InvalidArgument("the sample has no rows", hint="pass a few rows of your test data")
        frame = sample.copy()
        frame.columns = [str(c) for c in frame.columns]
        if frame.columns.duplicated().any():
            raise InvalidArgument("the sample has duplicate column names")
        return frame.reset_index(drop=True), False
    if isinstance(sample, (list, tuple)):
        try:
            sample = np.asarray(sample)
        except ValueError:  # ragged
            pass
    if isinstance(sample, np.ndarray) and sample.dtype.kind in "biufc":
        if sample.ndim != 2 or sample.shape[0] == 0:
            raise InvalidArgument(
                f"the sample must be 2-D with at least one row, got shape {sample.shape}",
                hint="pass X_test (rows x features), not a single row or a label vector",
            )
        names = [f"x{i}" for i in range(sample.shape[1])]
        return pd.DataFrame(sample, columns=names), True
    raise InvalidArgument(
        f"nbserve cannot read a sample of type {type(sample).__name__}",
        hint="pass a few inputs the model takes, as one of: a pandas DataFrame (or a 2-D array) of rows; "
        + "; ".join(kind.how for kind in KINDS),
        kinds=["frame", *(kind.name for kind in KINDS)],
    )


def infer_schema(frame: Any, positional: bool) -> dict[str, Any]:
    columns = []
    for name in frame.columns:
        dtype = frame[name].dtype
        kind = _column_kind(dtype)
        column = {"name": name, "dtype": str(dtype), "kind": kind}
        if kind == "category":
            column["categories"] = [str(c) for c in dtype.categories]
        columns.append(column)
    return {"columns": columns, "positional": positional}


# -- the bundle -----------------------------------------------------------------------


@dataclass
class Bundle:
    """A built Bento and what the agent needs to know about it."""

    name: str
    bento_tag: str
    model_tag: str
    flavor: str
    archive: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.archive.parent, ignore_errors=True)


def model_task(model: Any, predictions: Any) -> str | None:
    """"classification" or "regression" (for quality metrics), from the estimator when it
    says, else from its predictions on the sample."""
    kind = getattr(model, "_estimator_type", None)
    if kind is None:
        try:
            from sklearn.base import is_classifier, is_regressor

            kind = "classifier" if is_classifier(model) else "regressor" if is_regressor(model) else None
        except Exception:  # noqa: BLE001 - not a scikit-learn object
            kind = None
    if kind == "classifier" or callable(getattr(model, "predict_proba", None)):
        return "classification"
    if kind == "regressor":
        return "regression"
    if getattr(predictions, "ndim", 0) != 1 or _structured(predictions):
        return None
    dtype = getattr(predictions, "dtype", None)
    if dtype is not None and dtype.kind in "biuUSOb":
        return "classification"
    if dtype is not None and dtype.kind == "f":
        return "regression"
    return None


def _runtime_for(runtime: str, model: Any, flavor: Flavor, schema: dict[str, Any], inputs: Any,
                 answered: dict[str, Any], on_step: Callable[[str, str | None], None]) -> Runtime:
    """The runtime the version is built for (see ``_runtimes``); ``onnx`` that cannot be had is
    ``ModelNotServable`` with the reason, before anything is saved."""
    chosen = choose_runtime(runtime, model, flavor=flavor.name, kind=schema.get("kind", "frame"), inputs=inputs,
                            answered=answered)
    if chosen.name == "onnx":
        on_step("runtime", f"compiled to ONNX ({chosen.details['converter']}); it answers the sample as the "
                           "model does")
    elif runtime == "onnx":
        raise ModelNotServable(f"runtime='onnx': {chosen.reason}",
                               hint='runtime="auto" serves the model itself when it cannot be compiled')
    elif chosen.tried or (chosen.missing_extra and not _SAID["missing_extra"]):
        _SAID["missing_extra"] |= chosen.missing_extra  # how to get the fast path: once per kernel
        on_step("runtime", f"serving the model itself: {chosen.reason}")
    return chosen


_SAID = {"missing_extra": False}


def _compiled_expr(method: str) -> str:
    """What the service runs for ``method`` of a compiled model: its ``OnnxModel`` method."""
    return "self.model(frame)" if method == "__call__" else f"self.model.{method}(frame)"


def _write_compiled(ctx: Path, compiled: Runtime) -> list[str]:
    """The compiled graph, its feed spec and the module that loads them, beside the service."""
    if compiled.name != "onnx":
        return []
    from . import _onnx_runtime

    (ctx / _onnx_runtime.MODEL_FILE).write_bytes(compiled.graph)
    (ctx / _onnx_runtime.SPEC_FILE).write_text(json.dumps(compiled.spec))
    shutil.copyfile(_onnx_runtime.__file__, ctx / f"{ONNX_MODULE}.py")
    return [_onnx_runtime.MODEL_FILE, _onnx_runtime.SPEC_FILE, f"{ONNX_MODULE}.py"]


def _predict_column(model: Any, frame: Any, positional: bool, flavor: Flavor,
                    method: str = "predict") -> tuple[Any, dict[str, Any]]:
    """The model's answers to a tabular sample through one served method."""
    return _answers(model, frame.to_numpy() if positional else frame, flavor, method, unit="rows",
                    hint="the sample must have the columns and types the model was trained on")


def _described_kind(kind_class: type[InputKind], sample: Any, limit: int) -> tuple[InputKind, Any]:
    """The kind with its spec from the sample (at most ``limit`` items of it, chosen at random)."""
    import numpy as np

    count = len(sample)
    if count > limit:
        rows = sorted(np.random.default_rng(0).choice(count, size=limit, replace=False).tolist())
        sample = kind_class(kind_class.describe(sample)).take(sample, rows)
    spec = kind_class.describe(sample)
    if kind_class.name == "text":  # what "unseen tokens" are measured against, for drift
        from collections import Counter

        counts = Counter(tok for text in kind_class(spec).items(sample) for tok in text.lower().split())
        spec["vocabulary"] = sorted(tok for tok, _ in counts.most_common(20_000))
    return kind_class(spec), sample


def _answers(model: Any, sample: Any, flavor: Flavor, method: str, *, unit: str = "inputs",
             hint: str = "the sample must be inputs of the kind the model takes") -> tuple[Any, dict[str, Any]]:
    """The model's answers to the sample through one served method, one per row or item
    (proof, before anything is built, that it can serve what it will be sent), and the type
    it returned them as."""
    call = "model(...)" if method == "__call__" else f"model.{method}"
    try:
        result = flavor.call(model, method, sample)
    except Exception as exc:  # noqa: BLE001 - any failure of user code
        raise ModelNotServable(f"{call} failed on the sample: {type(exc).__name__}: {exc}", hint=hint) from None
    returned = output_spec(result)
    result = answers_array(result)
    if result.ndim == 0 or len(result) != len(sample):
        raise ModelNotServable(f"{call} returned {result.shape} for {len(sample)} sample {unit}",
                               hint=f"{call} must return one answer per {unit[:-1]}")
    return result, returned


def output_spec(result: Any) -> dict[str, Any]:
    """What type a method returned in the notebook, so a client can give the same type back."""
    import numpy as np
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return {"type": "frame", "columns": [str(c) for c in result.columns]}
    if isinstance(result, pd.Series):
        return {"type": "series", "name": None if result.name is None else str(result.name)}
    if isinstance(result, list):
        return {"type": "list"}
    if isinstance(result, np.ndarray):
        # the shape of one answer (V2 metadata says the output tensor's shape)
        return {"type": "array", "dtype": str(result.dtype), "shape": list(result.shape[1:])}
    return {"type": "array"}


def answers_array(result: Any) -> Any:
    """A model's answers as an array: sparse matrices densified, frames and series unwrapped."""
    import numpy as np

    if hasattr(result, "toarray") and not isinstance(result, np.ndarray):  # scipy.sparse
        result = result.toarray()
    if hasattr(result, "to_numpy"):
        result = result.to_numpy()
    if isinstance(result, (list, tuple)) and any(_is_record(v) for v in result[:10]):
        return _objects(result)  # a record (or a list of them: entities) per input, kept whole
    try:
        return np.asarray(result)
    except ValueError:  # ragged: lists of different lengths per input
        return _objects(result)


def _is_record(value: Any) -> bool:
    """A dict, or a list holding dicts: one input's structured answer."""
    return isinstance(value, dict) or (isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value))


def _objects(values: Any) -> Any:
    """A 1-D object array of the values as they are (np.asarray would nest or refuse them)."""
    import numpy as np

    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _structured(predictions: Any) -> bool:
    """Answers that are records or lists (a pipeline's labels and scores, entities), which are
    kept as JSON per row, not as a column of values."""
    return predictions.dtype.kind == "O" and any(isinstance(v, (dict, list, tuple)) for v in predictions[:10])


def build_bundle(
    model: Any,
    *,
    name: str,
    sample: Any,
    description: str | None = None,
    notebook: str | None = None,
    reference_rows: int = REFERENCE_ROWS,
    on_step: Callable[[str, str | None], None] = lambda step, detail: None,
    card: dict[str, str | None] | None = None,
    method: str | None = None,
    methods: Iterable[str] | None = None,
    packages: Iterable[str] | None = None,
    runtime: str = DEFAULT_RUNTIME,
) -> Bundle:
    """Save ``model`` with BentoML and build its Bento; return the exported archive.

    Raises ``ModelNotServable`` before anything is written if the model cannot predict
    its own sample, and ``BundleError`` (with BentoML's message cut short) if BentoML fails.
    """
    requested = with_packages([], packages)  # a malformed pin fails before anything is done
    check_runtime(runtime)
    flavor = flavor_for(model)
    local_code, pickled = code_and_pickle(model) if flavor.pickled else ([], None)
    if local_code and flavor.name in ("sklearn", "xgboost", "lightgbm"):
        # Their savers pickle classes by reference ("__main__.Clip"), which a server that is
        # not the notebook cannot resolve; cloudpickle carries the code itself.
        flavor = flavor_named("picklable")
    served = served_methods(model, flavor, method, methods)
    kind_class = flavor.input_kind(sample)
    if kind_class is None:  # rows of columns: a DataFrame or a 2-D array
        frame, positional = sample_frame(sample)
        if len(frame) > reference_rows:
            frame = frame.sample(n=reference_rows, random_state=0).reset_index(drop=True)
        schema = infer_schema(frame, positional)
        answered = {m: _predict_column(model, frame, positional, flavor, m) for m in served}
        reference = frame.copy()
        sample_row = json.loads(frame.head(1).to_json(orient="records", date_format="iso"))[0]
    else:
        kind, sample = _described_kind(kind_class, sample, reference_rows)
        schema = kind.spec
        answered = {m: _answers(model, sample, flavor, m) for m in served}
        items = kind.items(sample)
        reference = kind.features(items)
        reference[INPUT_COLUMN] = [json.dumps(item) for item in items]
        sample_row = items[0]
    predictions = answered[served[0]][0]  # what /predict answers, replayed by the parity check
    compiled = _runtime_for(runtime, model, flavor, schema, frame if kind_class is None else sample,
                            {m: a for m, (a, _) in answered.items()}, on_step)

    by_value = ByValue(local_code)
    # the code's own imports are found (and pinned) in the by-value pickle made above
    extra = [*flavor.packages, *(["PIL"] if schema.get("kind") == "images" else []),
             *(["onnxruntime"] if compiled.name == "onnx" else [])]
    found = pinned_requirements(None, extra, pickled=pickled)
    packages = with_packages(found, requested)
    on_step("dependencies", ", ".join(packages))
    # what the Bento installs (a serving environment, an image): the pins and their requirements
    # at the kernel's versions, so a cluster runs what ran here
    resolved = resolved_set(packages)
    prov = provenance(packages, resolved=resolved, notebook=notebook)
    model_info = {
        "class": _described(model),
        "flavor": flavor.name,
        "params": _model_params(model),
        "task": model_task(model, predictions),
        "code_by_value": local_code,  # notebook code saved with the model (see notebook_code)
        "methods": served,  # the first at /predict, each named one at its own path too
        "outputs": {m: returned for m, (_, returned) in answered.items()},  # the type each returned
        "runtime": compiled.describe(),  # native, or compiled (the native model stays in the Bento)
        # a Hugging Face pipeline's task: text generation is served as OpenAI's completions too
        "pipeline_task": getattr(model, "task", None) if flavor.name == "transformers" else None,
    }

    import bentoml  # deferred: importing bentoml costs ~1 s

    on_step("saving", f"{model_info['class']} with {flavor.bentoml_module}")
    try:
        with by_value:
            model_tag = flavor.save(name, model, {"nbserve_deployment": name})
    except Exception as exc:  # noqa: BLE001
        raise BundleError(
            f"BentoML could not save the model: {_short(exc)}",
            hint="check the model pickles (no open files, locks or lambdas in its attributes)",
        ) from None

    workdir = Path(tempfile.mkdtemp(prefix=f"nbserve-{name}-"))
    try:
        ctx = workdir / "ctx"
        ctx.mkdir()
        (ctx / SERVICE_FILE).write_text(
            render_service(
                deployment=name,
                model_tag=model_tag,
                loader_module=ONNX_MODULE if compiled.name == "onnx" else flavor.loader_module,
                apis=[(path, _compiled_expr(m) if compiled.name == "onnx" else flavor.serve_expr(m))
                      for path, m in service_apis(served)],
                kind=schema.get("kind", "frame"),
            )
        )
        if predictions.ndim == 1 and not _structured(predictions):
            reference[PREDICTION_COLUMN] = predictions
        else:  # probabilities, embeddings, records: compared element by element by the parity replay
            answers = [json.dumps(row, default=str) for row in predictions.tolist()]
            if sum(map(len, answers)) <= MAX_ANSWER_BYTES:  # else not kept: parity_not_applicable
                reference[ANSWER_COLUMN] = answers
        reference.to_parquet(ctx / REFERENCE_FILE, index=False)
        bundle_meta = {
            "deployment": name,
            "schema": schema,
            "model": model_info,
            "model_tag": model_tag,
            "provenance": prov,
            "description": description,
            # free text for the model card (intended use, limitations), kept with the version
            "card": {k: v for k, v in (card or {}).items() if v},
            "reference_rows": len(reference),
            "nbserve_version": _version(),
            "service_features": list(SERVICE_FEATURES),
        }
        (ctx / BUNDLE_FILE).write_text(render_bundle_file(bundle_meta))
        for source, copy in _COPIED_MODULES.items():
            shutil.copyfile(Path(__file__).with_name(source), ctx / copy)
        compiled_files = _write_compiled(ctx, compiled)

        on_step("building", f"Bento with {len(packages)} pinned packages ({len(resolved)} with what they need)")
        # bentoml.build imports the modules; a previous build's copies in sys.modules
        # (holding that build's schema) would be found instead of these.
        copied = (SERVICE_MODULE, *(Path(copy).stem for copy in _COPIED_MODULES.values()))
        for module in copied:
            sys.modules.pop(module, None)
        try:
            bento = bentoml.build(
                f"{SERVICE_MODULE}:{service_class_name(name)}",
                name=name,
                build_ctx=str(ctx),
                include=[SERVICE_FILE, BUNDLE_FILE, REFERENCE_FILE, *_COPIED_MODULES.values(), *compiled_files],
                models=[model_tag],
                description=description,
                labels={"nbserve.deployment": name, "nbserve.flavor": flavor.name, "nbserve.runtime": compiled.name},
                python={"packages": resolved, "lock_packages": False},
            )
        except Exception as exc:  # noqa: BLE001
            raise BundleError(f"bentoml build failed: {_short(exc)}") from None
        finally:
            for module in copied:
                sys.modules.pop(module, None)
        archive = workdir / f"{name}.bento"
        bentoml.export_bento(str(bento.tag), str(archive))
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(workdir / "ctx", ignore_errors=True)
    bundle_meta["bento_tag"] = str(bento.tag)
    bundle_meta["sample_row"] = sample_row
    return Bundle(name, str(bento.tag), model_tag, flavor.name, archive, bundle_meta)


def _described(model: Any) -> str:
    """``module.QualName`` of the model's class, or of the function itself."""
    import inspect

    named = model if inspect.isfunction(model) or inspect.isbuiltin(model) else type(model)
    return f"{getattr(named, '__module__', None) or '?'}.{getattr(named, '__qualname__', type(model).__name__)}"


def _model_params(model: Any) -> dict[str, Any]:
    get_params = getattr(model, "get_params", None)
    if not callable(get_params):
        return {}
    try:
        params = get_params(deep=False)
    except Exception:  # noqa: BLE001
        return {}
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)[:200] for k, v in params.items()}


def _short(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    text = " ".join(lines[-6:]) if len(lines) > 6 else " ".join(lines)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _version() -> str:
    try:
        return _metadata.version("nbserve")
    except _metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0+unknown"
