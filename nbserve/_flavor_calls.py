"""What some flavors run to load and call a model: the same code in the kernel (on the sample,
before anything is built) and in the server, so the parity replay compares like with like.

This module is copied into every Bento as ``nbserve_flavor_calls.py``; the generated service
imports it as the loader of those flavors (``load_model``, which picks ``load_torch`` or
``load_pipeline`` by the module the model was saved with) and calls it from the flavor's serve
expression. It depends on numpy only: torch, transformers and bentoml are
imported by the functions that need them, so a Bento of another flavor never needs them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import typing as t
import warnings

import numpy as np

__all__ = ["GENERATION", "generation_options", "json_ready", "load_model", "load_pipeline", "load_torch", "pipeline_answers", "pipeline_params",
           "torch_call", "xgboost_call"]

# model metadata: the notebook pipeline's call settings, as JSON (metadata takes no None)
PIPELINE_PARAMS = "nbserve_pipeline_params"

# Pipelines that generate text, and one request's settings for them (OpenAI's completions:
# max_tokens, temperature, top_p), set by the service around that request's call.
GENERATIVE_TASKS = ("text-generation", "text2text-generation")
GENERATION: contextvars.ContextVar[dict[str, t.Any] | None] = contextvars.ContextVar("nbserve_generation",
                                                                                     default=None)
# name: (type, smallest, largest)
_GENERATION_SETTINGS = {"max_new_tokens": (int, 1, 4096), "do_sample": (bool, None, None),
                        "temperature": (float, 1e-6, 2.0), "top_p": (float, 1e-6, 1.0),
                        "return_full_text": (bool, None, None)}


def generation_options(raw: str) -> dict[str, t.Any]:
    """A request's generation settings (JSON) checked: known names, types and bounds only, so
    no request can hand a pipeline an argument of its choosing. Raises ValueError."""
    options = json.loads(raw)
    if not isinstance(options, dict):
        raise ValueError("generation settings are a JSON object")
    for name, value in options.items():
        if name not in _GENERATION_SETTINGS:
            raise ValueError(f"unknown generation setting {name!r} (known: {', '.join(_GENERATION_SETTINGS)})")
        kind, low, high = _GENERATION_SETTINGS[name]
        ok = isinstance(value, bool) if kind is bool else \
            isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
        if not ok or (low is not None and not low <= value <= high):
            raise ValueError(f"generation setting {name} must be a {kind.__name__}"
                             + (f" from {low:g} to {high:g}" if low is not None else ""))
    return options


def load_model(model_ref: t.Any) -> t.Any:
    """The service's model: loaded by the saver's own loader, with what that one lacks."""
    import bentoml

    stored = bentoml.models.get(getattr(model_ref, "tag", model_ref))  # the service's BentoModel, resolved
    loaders = {"bentoml.pytorch": load_torch, "bentoml.transformers": load_pipeline}
    if stored.info.module not in loaders:
        raise ValueError(f"nbserve_flavor_calls cannot load a model saved with {stored.info.module}")
    return loaders[stored.info.module](stored)


@contextlib.contextmanager
def _quiet_deprecations() -> t.Iterator[None]:
    """bentoml.pytorch and bentoml.transformers warn on every use that they are deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is deprecated since", category=DeprecationWarning)
        yield


# -- PyTorch ------------------------------------------------------------------------------


def _tensor(module: t.Any, data: t.Any) -> t.Any:
    """``data`` as a tensor of its own dtype; floats in the module's float dtype (numpy arrays
    default to float64, torch modules to float32), integers (token ids) as they are."""
    import torch

    if isinstance(data, torch.Tensor):
        tensor = data
    else:
        tensor = torch.as_tensor(np.asarray(data))
    if tensor.is_floating_point():
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32) \
            if hasattr(module, "parameters") else torch.float32
        tensor = tensor.to(dtype)
    device = next((p.device for p in module.parameters()), None) if hasattr(module, "parameters") else None
    return tensor.to(device) if device is not None else tensor


def torch_call(module: t.Any, method: str, data: t.Any) -> t.Any:
    """Call the module (or one of its methods) on ``data`` in eval mode without gradients; the
    answer as a numpy array."""
    import torch

    call = module if method == "__call__" else getattr(module, method)
    with torch.no_grad():
        result = call(_tensor(module, data))
    if isinstance(result, torch.Tensor):
        return result.detach().cpu().numpy()
    raise TypeError(f"the module returned a {type(result).__name__}, not one tensor "
                    "(nbserve serves modules whose forward returns a tensor; return e.g. out[0] or out['logits'])")


def load_torch(model_ref: t.Any) -> t.Any:
    """The saved module in eval mode. bentoml.pytorch saves the whole module (a pickle), which
    torch >= 2.6 no longer loads by default (``weights_only=True``)."""
    import bentoml

    with _quiet_deprecations():
        module = bentoml.pytorch.load_model(model_ref, weights_only=False)
    module.eval()  # dropout off, batch norm's running statistics: as the notebook called it
    return module


# -- Hugging Face pipelines ----------------------------------------------------------------


def json_ready(value: t.Any) -> t.Any:
    """A pipeline's answer as JSON values: numpy scalars (entity scores) and arrays as Python."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist") and hasattr(value, "detach"):  # a tensor
        return value.detach().cpu().tolist()
    return value


def pipeline_answers(pipe: t.Any, texts: t.Any) -> t.Any:
    """One answer per text. Feature extraction is mean-pooled over each text's tokens (special
    tokens included, as sentence-transformers' mean pooling does): one fixed-size vector per
    text, an array of (texts, hidden size). Other tasks answer their own JSON: a {label, score}
    per text for text classification, a list of entities per text for token classification."""
    texts = [str(v) for v in (texts.tolist() if hasattr(texts, "tolist") else texts)]
    if getattr(pipe, "task", None) == "feature-extraction":
        # each text alone: no padding, so every token of it counts in its mean
        return np.stack([np.asarray(pipe(text, return_tensors=True)[0], dtype=np.float32).mean(axis=0)
                         for text in texts])
    generation = GENERATION.get() if getattr(pipe, "task", None) in GENERATIVE_TASKS else None
    answers = pipe(texts, **generation) if generation else pipe(texts)
    if len(texts) == 1 and isinstance(answers, dict):  # a pipeline that unwraps a batch of one
        answers = [answers]
    return json_ready(list(answers))


def pipeline_params(pipe: t.Any) -> dict[str, t.Any]:
    """The pipeline's call settings (``top_k``, ``aggregation_strategy``...) as JSON values:
    save_pretrained does not keep them, so they are saved with the model and given back to
    ``transformers.pipeline`` when it is loaded."""
    import enum

    params: dict[str, t.Any] = {}
    for part in ("_preprocess_params", "_forward_params", "_postprocess_params"):
        for key, value in (getattr(pipe, part, None) or {}).items():
            if key.startswith("_"):
                continue
            if isinstance(value, enum.Enum):
                value = value.value
            if value is None or isinstance(value, (bool, int, float, str)):
                params[key] = value
    return params


def load_pipeline(model_ref: t.Any) -> t.Any:
    """The saved pipeline, with the notebook's call settings, from the model store only: the
    weights and tokenizer are files in the Bento, nothing is fetched from a hub."""
    import os

    import bentoml

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    stored = bentoml.models.get(getattr(model_ref, "tag", model_ref))
    params = json.loads(stored.info.metadata.get(PIPELINE_PARAMS) or "{}")
    with _quiet_deprecations():
        return bentoml.transformers.load_model(stored, **params)


def xgboost_call(model: t.Any, method: str, frame: t.Any) -> t.Any:
    """``method`` of an XGBoost model on ``frame``: a Booster takes its rows as a DMatrix (the
    frame's column names kept, for the Booster's check of its features); an estimator, as it is."""
    if type(model).__name__ == "Booster":
        import xgboost

        frame = xgboost.DMatrix(frame)
    return model(frame) if method == "__call__" else getattr(model, method)(frame)
