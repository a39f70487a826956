"""Kinds of model input: what a request's ``data`` holds, and how it is checked.

One class per kind: a DataFrame (``frame``), a batch of strings (``text``), an N-D numeric
array whose first axis is the batch (``array``), a list of JSON-like records (``records``), or
a list of images (``images``, base64 files in requests; Pillow in the server).
Each kind is described from the notebook's sample (``describe``), turns a request's JSON into
the object the model was given in the notebook (``decode``, raising :class:`Invalid` that names
what is wrong), and gives the derived columns drift compares (``features``).

This module is copied into every Bento as ``nbserve_kinds.py`` and imported by the generated
service, so it depends on numpy and pandas only (Pillow for images; never on nbserve).
"""

from __future__ import annotations

import json
import math
import typing as t

import numpy as np
import pandas as pd

__all__ = ["Invalid", "InputKind", "Text", "Array", "Records", "Images", "kind_of", "from_spec", "KINDS"]

_MAX_ERRORS = 10  # a request with many wrong items is told about the first ten
INPUT_COLUMN = "__input__"  # the reference sample's column holding each item's request JSON
ANSWER_COLUMN = "__answer_json__"  # the model's answer per item when it is not one value (probabilities, vectors)
NOT_FEATURES = (INPUT_COLUMN, ANSWER_COLUMN)  # reference columns drift never compares


class Invalid(Exception):
    """A request whose data is not of the deploy-time kind; ``detail`` goes in the 422 body."""

    def __init__(self, message: str, **detail: t.Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InputKind:
    """One kind of input. ``spec`` is the JSON description stored in the bundle's schema."""

    name: t.ClassVar[str]
    how: t.ClassVar[str]  # how a user passes a sample of this kind (for errors)

    def __init__(self, spec: dict[str, t.Any]) -> None:
        self.spec = spec

    # -- in the kernel ---------------------------------------------------------------------

    @classmethod
    def accepts(cls, sample: t.Any) -> bool:
        raise NotImplementedError

    @classmethod
    def describe(cls, sample: t.Any) -> dict[str, t.Any]:
        raise NotImplementedError

    def items(self, sample: t.Any) -> list[t.Any]:
        """The sample as JSON-ready items, one per row (a request's ``data``)."""
        raise NotImplementedError

    def take(self, sample: t.Any, rows: t.Any) -> t.Any:
        """A subset of the sample's rows, of the sample's own type."""
        raise NotImplementedError

    # -- in the server ---------------------------------------------------------------------

    def decode(self, data: t.Any) -> t.Any:
        """A request's ``data`` as the object the notebook gave the model; raises ``Invalid``."""
        raise NotImplementedError

    def json_schema(self) -> dict[str, t.Any]:
        """The JSON schema of a request's ``data`` (for the service's OpenAPI document)."""
        raise NotImplementedError

    # -- drift -----------------------------------------------------------------------------

    def features(self, items: list[t.Any]) -> pd.DataFrame:
        """Numeric columns derived from items, for drift (a kind that is not columns)."""
        raise NotImplementedError

    @staticmethod
    def _batch(data: t.Any) -> list[t.Any]:
        if not isinstance(data, list):
            raise Invalid(f"data must be a list with one item per input, got {type(data).__name__}",
                          expected="a JSON list")
        if not data:
            raise Invalid("the request has no items", expected="a non-empty JSON list")
        return data


# -- text --------------------------------------------------------------------------------


def _is_texts(values: t.Iterable[t.Any]) -> bool:
    values = list(values)
    return bool(values) and all(isinstance(v, str) for v in values)


class Text(InputKind):
    """A batch of strings: ``{"data": ["great pasta", "cold soup"]}``."""

    name = "text"
    how = 'a list, Series or 1-D array of strings (request: {"data": ["some text", ...]})'

    @classmethod
    def accepts(cls, sample: t.Any) -> bool:
        if isinstance(sample, pd.Series):
            return _is_texts(sample.tolist())
        if isinstance(sample, np.ndarray):
            return sample.ndim == 1 and _is_texts(sample.tolist())
        return isinstance(sample, (list, tuple)) and _is_texts(sample)

    @classmethod
    def describe(cls, sample: t.Any) -> dict[str, t.Any]:
        container = "series" if isinstance(sample, pd.Series) else "array" if isinstance(sample, np.ndarray) else "list"
        return {"kind": cls.name, "container": container,
                "name": str(sample.name) if isinstance(sample, pd.Series) and sample.name is not None else None}

    def items(self, sample: t.Any) -> list[t.Any]:
        return list(sample.tolist() if hasattr(sample, "tolist") else sample)

    def take(self, sample: t.Any, rows: t.Any) -> t.Any:
        return self._container([self.items(sample)[i] for i in rows])

    def decode(self, data: t.Any) -> t.Any:
        batch = self._batch(data)
        bad = [{"path": f"data[{i}]", "expected": "string", "got": type(v).__name__}
               for i, v in enumerate(batch) if not isinstance(v, str)]
        if bad:
            raise Invalid(f"items must be strings: {', '.join(b['path'] for b in bad[:_MAX_ERRORS])} "
                          f"{'is' if len(bad) == 1 else 'are'} not", type_errors=bad[:_MAX_ERRORS])
        return self._container(batch)

    def json_schema(self) -> dict[str, t.Any]:
        return {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "one text per input"}

    def _container(self, texts: list[str]) -> t.Any:
        container = self.spec.get("container")
        if container == "series":
            return pd.Series(texts, name=self.spec.get("name"), dtype=object)
        if container == "array":
            return np.asarray(texts, dtype=object)
        return texts

    def features(self, items: list[t.Any]) -> pd.DataFrame:
        texts = [v if isinstance(v, str) else "" for v in items]
        tokens = [v.lower().split() for v in texts]
        vocabulary = set(self.spec.get("vocabulary") or ())
        unseen = [
            (sum(tok not in vocabulary for tok in toks) / len(toks)) if toks and vocabulary else 0.0
            for toks in tokens
        ]
        return pd.DataFrame({"text_length": [float(len(v)) for v in texts],
                             "token_count": [float(len(toks)) for toks in tokens],
                             "unseen_token_share": unseen})


# -- N-D numeric arrays --------------------------------------------------------------------


def _numpy(sample: t.Any) -> t.Any:
    """A torch tensor as a numpy array (known by its class's module: torch is not imported
    here, the server of a model that is not PyTorch has no torch); anything else as it is."""
    if type(sample).__module__.startswith("torch") and callable(getattr(sample, "detach", None)):
        return sample.detach().cpu().numpy()
    return sample


class Array(InputKind):
    """A numeric array whose first axis is the batch: ``{"data": [[[0.1, ...], ...], ...]}``.
    Its shape beyond the batch axis and its dtype are checked. A torch tensor sample is taken
    as the numpy array of its values (dtype ``float32``, ``int64``...)."""

    name = "array"
    how = "a numeric numpy array (or torch tensor) whose first axis is the batch (request: nested JSON lists)"

    @classmethod
    def accepts(cls, sample: t.Any) -> bool:
        values = _numpy(sample)
        tensor = values is not sample
        # 2-D numpy tables stay frames (positional columns x0, x1, ...), as they always were;
        # a tensor was never a frame
        return isinstance(values, np.ndarray) and values.dtype.kind in "biuf" and values.ndim != 0 \
            and (tensor or values.ndim != 2) and len(values) > 0

    @classmethod
    def describe(cls, sample: t.Any) -> dict[str, t.Any]:
        sample = _numpy(sample)
        return {"kind": cls.name, "shape": list(sample.shape[1:]), "dtype": str(sample.dtype)}

    def items(self, sample: t.Any) -> list[t.Any]:
        return np.asarray(_numpy(sample)).tolist()

    def take(self, sample: t.Any, rows: t.Any) -> t.Any:
        return np.asarray(_numpy(sample))[list(rows)]

    def decode(self, data: t.Any) -> t.Any:
        batch = self._batch(data)
        shape, dtype = tuple(self.spec["shape"]), np.dtype(self.spec["dtype"])
        expected = "(batch" + "".join(f", {d}" for d in shape) + ")"
        try:
            array = np.asarray(batch, dtype=np.float64 if dtype.kind == "f" else None)
        except (ValueError, TypeError):
            raise Invalid(f"data is not a numeric array of shape {expected}: its rows differ in shape "
                          "or hold values that are not numbers", expected_shape=[None, *shape]) from None
        if array.dtype.kind not in "biuf":
            raise Invalid(f"data must hold numbers only (expected dtype {dtype})", expected_dtype=str(dtype))
        if array.shape[1:] != shape:
            got = "(" + ", ".join(str(d) for d in array.shape) + ")"
            raise Invalid(f"expected shape {expected}, got {got}", expected_shape=[None, *shape],
                          got_shape=list(array.shape))
        if dtype.kind in "iu" and array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or np.any(array % 1):
                raise Invalid(f"data must hold integers (expected dtype {dtype})", expected_dtype=str(dtype))
        if dtype.kind == "b" and array.dtype.kind != "b":
            raise Invalid(f"data must hold booleans (expected dtype {dtype})", expected_dtype=str(dtype))
        return array.astype(dtype, copy=False)

    def json_schema(self) -> dict[str, t.Any]:
        leaf: dict[str, t.Any] = {"type": "integer" if np.dtype(self.spec["dtype"]).kind in "iu" else
                                  "boolean" if np.dtype(self.spec["dtype"]).kind == "b" else "number"}
        for size in reversed(self.spec["shape"]):
            leaf = {"type": "array", "minItems": size, "maxItems": size, "items": leaf}
        shape = ", ".join(["batch", *map(str, self.spec["shape"])])
        return {"type": "array", "minItems": 1, "items": leaf,
                "description": f"an array of shape ({shape}), dtype {self.spec['dtype']}"}

    def features(self, items: list[t.Any]) -> pd.DataFrame:
        rows = []
        size = int(np.prod(self.spec["shape"])) if self.spec["shape"] else 1
        for item in items:
            try:
                flat = np.asarray(item, dtype=np.float64).ravel()
            except (ValueError, TypeError):
                flat = np.zeros(0)
            row = {"mean": float(flat.mean()) if flat.size else math.nan,
                   "norm": float(np.linalg.norm(flat)) if flat.size else math.nan}
            if size <= 32 and flat.size == size:  # small arrays: every position is a column too
                row.update({f"x{i}": float(v) for i, v in enumerate(flat)})
            rows.append(row)
        return pd.DataFrame(rows)


# -- records -------------------------------------------------------------------------------


def _json_type(value: t.Any) -> dict[str, t.Any]:
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, (int, np.integer)):
        return {"type": "integer"}
    if isinstance(value, (float, np.floating)):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, dict):
        return {"type": "object", "fields": {str(k): _json_type(v) for k, v in value.items()},
                "required": sorted(str(k) for k in value)}
    if isinstance(value, (list, tuple)):
        items = None
        for v in value:
            items = _merge(items, _json_type(v))
        return {"type": "array", "items": items}
    raise TypeError(f"{type(value).__name__} is not JSON-like")


def _merge(a: dict[str, t.Any] | None, b: dict[str, t.Any] | None) -> dict[str, t.Any] | None:
    """One type that takes values of both (what several sample records have in common)."""
    if a is None or b is None:
        return a or b
    if a == b:
        return a
    kinds = {a["type"], b["type"]}
    if kinds == {"integer", "number"}:
        return {"type": "number"}
    if "null" in kinds and len(kinds) == 2:
        other = a if b["type"] == "null" else b
        return {**other, "nullable": True}
    if kinds == {"object"}:
        fields = dict(a["fields"])
        for key, value in b["fields"].items():
            fields[key] = _merge(fields.get(key), value)
        return {"type": "object", "fields": fields, "required": sorted(set(a["required"]) & set(b["required"]))}
    if kinds == {"array"}:
        return {"type": "array", "items": _merge(a.get("items"), b.get("items"))}
    return {"type": "any"}


_PYTHON = {"integer": (int,), "number": (int, float), "string": (str,), "boolean": (bool,)}


def _check(value: t.Any, spec: dict[str, t.Any] | None, path: str, errors: list[dict[str, t.Any]]) -> None:
    if spec is None or spec["type"] == "any" or len(errors) >= _MAX_ERRORS:
        return
    if value is None:
        if spec["type"] != "null" and not spec.get("nullable"):
            errors.append({"path": path, "expected": spec["type"], "got": "null"})
        return
    kind = spec["type"]
    if kind == "object":
        if not isinstance(value, dict):
            errors.append({"path": path, "expected": "object", "got": _name(value)})
            return
        for key in spec.get("required", ()):
            if key not in value:
                errors.append({"path": f"{path}.{key}", "expected": spec["fields"][key]["type"], "got": "missing"})
        for key, sub in spec["fields"].items():
            if key in value:
                _check(value[key], sub, f"{path}.{key}", errors)
    elif kind == "array":
        if not isinstance(value, list):
            errors.append({"path": path, "expected": "array", "got": _name(value)})
            return
        for i, item in enumerate(value):
            _check(item, spec.get("items"), f"{path}[{i}]", errors)
    elif kind == "null":
        errors.append({"path": path, "expected": "null", "got": _name(value)})
    elif isinstance(value, bool) and kind != "boolean" or not isinstance(value, _PYTHON[kind]):
        errors.append({"path": path, "expected": kind, "got": _name(value)})


def _name(value: t.Any) -> str:
    return "null" if value is None else _json_type(value)["type"] if not isinstance(value, (set, bytes)) else type(value).__name__


def _as_json_schema(spec: dict[str, t.Any] | None) -> dict[str, t.Any]:
    if spec is None or spec["type"] == "any":
        return {}
    out: dict[str, t.Any]
    if spec["type"] == "object":
        out = {"type": "object", "properties": {k: _as_json_schema(v) for k, v in spec["fields"].items()},
               "required": list(spec.get("required", []))}
    elif spec["type"] == "array":
        out = {"type": "array", "items": _as_json_schema(spec.get("items"))}
    else:
        out = {"type": spec["type"]}
    if spec.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _leaves(value: t.Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _leaves(sub, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, (int, float)):
        out[prefix] = float(value)
    elif isinstance(value, list):
        out[f"{prefix}.length" if prefix else "length"] = float(len(value))


class Records(InputKind):
    """A list of JSON-like dicts, nested lists and dicts included: ``{"data": [{"items": [...]}]}``.
    Missing keys and wrong types get a 422 naming the path (``data[0].items[1].price``)."""

    name = "records"
    how = 'a list of dicts of JSON values (request: {"data": [{"key": value, ...}, ...]})'

    @classmethod
    def accepts(cls, sample: t.Any) -> bool:
        return isinstance(sample, (list, tuple)) and bool(sample) and all(isinstance(v, dict) for v in sample)

    @classmethod
    def describe(cls, sample: t.Any) -> dict[str, t.Any]:
        record: dict[str, t.Any] | None = None
        for item in sample:
            record = _merge(record, _json_type(item))
        return {"kind": cls.name, "record": record}

    def items(self, sample: t.Any) -> list[t.Any]:
        return json.loads(json.dumps(list(sample), default=_jsonable))

    def take(self, sample: t.Any, rows: t.Any) -> t.Any:
        return [list(sample)[i] for i in rows]

    def decode(self, data: t.Any) -> t.Any:
        batch = self._batch(data)
        errors: list[dict[str, t.Any]] = []
        for i, item in enumerate(batch):
            _check(item, self.spec["record"], f"data[{i}]", errors)
        if errors:
            where = ", ".join(f"{e['path']} ({e['got']}, expected {e['expected']})" for e in errors)
            raise Invalid(f"records do not match the deploy-time sample: {where}", type_errors=errors)
        return batch

    def json_schema(self) -> dict[str, t.Any]:
        return {"type": "array", "minItems": 1, "items": _as_json_schema(self.spec["record"]),
                "description": "one record per input"}

    def features(self, items: list[t.Any]) -> pd.DataFrame:
        rows = []
        for item in items:
            leaves: dict[str, float] = {}
            _leaves(item, "", leaves)
            rows.append(leaves)
        return pd.DataFrame(rows)


# -- images ---------------------------------------------------------------------------------


def _is_image(value: t.Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getbands")


class Images(InputKind):
    """A batch of images: PIL images in the notebook, base64-encoded image files (PNG, JPEG...)
    in a request: ``{"data": ["iVBORw0KGgo...", ...]}``. A broken image gets a 422 naming it;
    the model receives PIL images in the sample's mode."""

    name = "images"
    how = 'a list of PIL images (request: {"data": ["<base64 of a PNG or JPEG file>", ...]})'

    @classmethod
    def accepts(cls, sample: t.Any) -> bool:
        return isinstance(sample, (list, tuple)) and bool(sample) and all(_is_image(v) for v in sample)

    @classmethod
    def describe(cls, sample: t.Any) -> dict[str, t.Any]:
        modes = sorted({img.mode for img in sample})
        sizes = sorted({img.size for img in sample})
        return {"kind": cls.name, "mode": modes[0] if len(modes) == 1 else None,
                "size": list(sizes[0]) if len(sizes) == 1 else None}

    def items(self, sample: t.Any) -> list[t.Any]:
        import base64
        import io

        out = []
        for img in sample:
            if isinstance(img, (bytes, bytearray)):
                out.append(base64.b64encode(bytes(img)).decode("ascii"))
                continue
            buffer = io.BytesIO()
            img.save(buffer, format="PNG")
            out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
        return out

    def take(self, sample: t.Any, rows: t.Any) -> t.Any:
        return [list(sample)[i] for i in rows]

    def decode(self, data: t.Any) -> t.Any:
        import base64
        import binascii
        import io

        from PIL import Image, UnidentifiedImageError

        batch = self._batch(data)
        images, bad = [], []
        for i, value in enumerate(batch):
            if not isinstance(value, str):
                bad.append({"path": f"data[{i}]", "expected": "base64 image", "got": type(value).__name__})
                continue
            try:
                raw = base64.b64decode(value, validate=True)
                img = Image.open(io.BytesIO(raw))
                img.load()  # a truncated file fails here, not in the model
            except (binascii.Error, ValueError):
                bad.append({"path": f"data[{i}]", "expected": "base64 image", "got": "not base64"})
                continue
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
                bad.append({"path": f"data[{i}]", "expected": "an image file", "got": str(exc)[:120]})
                continue
            mode = self.spec.get("mode")
            images.append(img.convert(mode) if mode and img.mode != mode else img)
        if bad:
            raise Invalid(f"items are not images: {', '.join(b['path'] for b in bad[:_MAX_ERRORS])}",
                          type_errors=bad[:_MAX_ERRORS])
        return images

    def json_schema(self) -> dict[str, t.Any]:
        return {"type": "array", "minItems": 1,
                "items": {"type": "string", "contentEncoding": "base64", "description": "an image file (PNG, JPEG...)"}}

    def features(self, items: list[t.Any]) -> pd.DataFrame:
        rows = []
        for value in items:
            try:
                img = self.decode([value])[0] if isinstance(value, str) else value
                pixels = np.asarray(img, dtype=np.float64)
                pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
                row = {"width": float(img.size[0]), "height": float(img.size[1])}
                row.update({f"mean_{band}": float(pixels[:, :, i].mean())
                            for i, band in enumerate(img.getbands()[: pixels.shape[2]])})
            except (Invalid, ValueError, OSError):
                row = {}
            rows.append(row)
        return pd.DataFrame(rows)


def _jsonable(value: t.Any) -> t.Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-like")


KINDS: tuple[type[InputKind], ...] = (Text, Records, Images, Array)


def kind_of(sample: t.Any) -> type[InputKind] | None:
    """The kind of a sample that is not a DataFrame or 2-D table (those are ``frame``)."""
    for kind in KINDS:
        if kind.accepts(sample):
            return kind
    return None


def from_spec(spec: dict[str, t.Any]) -> InputKind | None:
    """The kind a bundle's schema describes; None for a frame (the service's own ``_conform``)."""
    name = spec.get("kind", "frame")
    for kind in KINDS:
        if kind.name == name:
            return kind(spec)
    return None
