"""A model compiled to ONNX, called as the notebook's model was: ``predict`` and ``predict_proba``.

This module is copied into a Bento whose version runs on the ``onnx`` runtime, as
``nbserve_onnx.py``; the generated service imports it as the model's loader, so the serve
expressions (``self.model.predict(frame)``) and everything around them (checks, batching,
monitoring) stay the native model's. The kernel runs the same class on the reference sample
before anything is built, so the parity check compares like with like. It depends on numpy and
onnxruntime only.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import numpy as np

__all__ = ["MODEL_FILE", "OnnxModel", "load_model"]

MODEL_FILE = "nbserve_model.onnx"  # beside this module in the Bento
SPEC_FILE = "nbserve_onnx.json"  # how requests become the graph's inputs, and which output answers what


class OnnxModel:
    """An onnxruntime session with the notebook model's methods.

    ``spec``: ``{"feed": "tensor", "input": "X", "dtype": "float32"}`` (one 2-D tensor of every
    column), ``{"feed": "strings", "input": "X"}`` (one text per row) or ``{"feed": "columns",
    "inputs": [[name, dtype], ...]}`` (one ``(N, 1)`` input per column), and ``outputs``: the
    method each graph output answers (``{"predict": "label", "predict_proba": "probabilities"}``;
    ``["probabilities", 1]``: one column of it, as a binary LightGBM Booster's ``predict`` answers).
    """

    def __init__(self, graph: bytes, spec: dict[str, t.Any], *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # one thread per call: BentoML's workers are the parallelism, and a pool per worker
        # would fight them for the same cores
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.spec = spec
        # a regressor's (N, 1) is flattened as scikit-learn answers it; a torch module's output is kept
        self._flat = set() if spec.get("keep_shape") else {name for name, shape in
                      ((o.name, o.shape) for o in self.session.get_outputs()) if len(shape) == 2 and shape[1] == 1}
        for method, output in spec["outputs"].items():
            name, column = (output, None) if isinstance(output, str) else output
            setattr(self, method, self._method(name, column, probabilities=name == "probabilities"))

    def _method(self, output: str, column: int | None, *, probabilities: bool) -> t.Callable[[t.Any], np.ndarray]:
        names, flat, feed = [output], output in self._flat, self.feed

        def call(data: t.Any) -> np.ndarray:
            answer = self.session.run(names, feed(data))[0]
            if probabilities:  # float32 sums can land a hair above 1 (1.0000001): a probability is not
                np.clip(answer, 0.0, 1.0, out=answer)
            if column is not None:
                return answer[:, column]
            return answer.ravel() if flat else answer  # a regressor's (N, 1): sklearn answers (N,)

        return call

    def __call__(self, data: t.Any) -> np.ndarray:  # a torch module's forward, compiled
        return self.__dict__["__call__"](data)

    def feed(self, data: t.Any) -> dict[str, np.ndarray]:
        """The graph's inputs for a batch of requests (a DataFrame, an array or texts)."""
        spec = self.spec
        if spec["feed"] == "tensor":
            values = data.to_numpy(dtype=spec["dtype"]) if hasattr(data, "to_numpy") else data
            return {spec["input"]: np.ascontiguousarray(values, dtype=spec["dtype"])}
        if spec["feed"] == "strings":
            texts = data.tolist() if hasattr(data, "tolist") else list(data)
            return {spec["input"]: np.asarray(texts, dtype=object).reshape(-1, 1)}
        return {name: _column(data[name], dtype) for name, dtype in spec["inputs"]}


def _column(values: t.Any, dtype: str) -> np.ndarray:
    if dtype == "str":
        return np.asarray(values.astype(str).tolist(), dtype=object).reshape(-1, 1)
    return np.asarray(values, dtype=dtype).reshape(-1, 1)


def load_model(model_ref: t.Any = None, *, where: Path | None = None) -> OnnxModel:
    """The compiled model beside this module (the native one stays in the Bento's model store:
    a redeploy with ``runtime="native"`` serves it)."""
    where = where or Path(__file__).parent
    spec = json.loads((where / SPEC_FILE).read_text())
    return OnnxModel((where / MODEL_FILE).read_bytes(), spec)
