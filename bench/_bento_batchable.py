"""BentoML's own adaptive batching on the model of an nbserve deployment: bench/scale.py's baseline.

    NBSERVE_BENCH_MODEL_TAG=forest-b1:<version> BENTOML_HOME=<store with that model> \\
        python -m bentoml serve _bento_batchable:NativeBatching --working-dir bench

The minimal service a BentoML user would write: ``@bentoml.api(batchable=True)`` taking a
DataFrame of records (``{"data": [...]}``, the body nbserve's stable URL takes) and calling
the model on the merged batch, with no per-request validation. The model is loaded from the
BentoML model store by tag with the loader of the flavor it was saved with (the model's own
``module``: ``bentoml.sklearn`` or ``bentoml.picklable_model`` for nbserve's deployments).
Batching settings come from ``NBSERVE_BENCH_MAX_BATCH_SIZE`` / ``NBSERVE_BENCH_MAX_LATENCY_MS``.
One fix to BentoML 1.4.40 is applied first (see PATCHED below): unpatched, a batchable API taking
a DataFrame answers no request (the first hang, the rest get a 503 after max_latency_ms).
As nbserve's generated service does, it has no access log and a 300 s request timeout.

``POST /batches`` answers how many model calls and rows the batchable API has made (and the
sum of squared batch rows, for the mean batch a request was part of): BentoML's own answers
carry no batch size.
"""

from __future__ import annotations

import importlib
import os
import typing as t

import bentoml
import numpy as np
import pandas as pd
from bentoml._internal.runner.container import PandasDataFrameContainer
from bentoml.validators import DataframeSchema

if not isinstance(PandasDataFrameContainer.get_batch_size(pd.DataFrame({"x": [0]}), 0), int):
    # BentoML 1.4.40 answers a DataFrame's batch size with ``batch.shape`` (a tuple): its dispatcher
    # then cannot size any request ("Error in training optimizer" in the log), so a batchable
    # DataFrame API answers nothing: the first requests hang (no answer within 15 s, seen here),
    # every later one gets a 503 "process is overloaded" after max_latency_ms. Patched to the row
    # count, so the baseline is BentoML's batching as it is meant to work.
    PandasDataFrameContainer.get_batch_size = classmethod(lambda cls, batch, batch_dim: batch.shape[0])
    PATCHED = True
else:
    PATCHED = False

MODEL_TAG = os.environ["NBSERVE_BENCH_MODEL_TAG"]
MAX_BATCH_SIZE = int(os.environ.get("NBSERVE_BENCH_MAX_BATCH_SIZE", "64"))
MAX_LATENCY_MS = float(os.environ.get("NBSERVE_BENCH_MAX_LATENCY_MS", "1000"))
# From the local store only (raises NotFound): a BentoModel not found locally is pulled from BentoCloud.
_STORED = bentoml.models.get(MODEL_TAG)


@bentoml.service(name="native-batching", traffic={"timeout": 300}, logging={"access": {"enabled": False}})
class NativeBatching:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        loader = importlib.import_module(_STORED.info.module)  # the flavor it was saved with: bentoml.sklearn
        self.model = loader.load_model(self.model_ref)
        self.calls = self.rows = self.rows_squared = 0

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, data: t.Annotated[pd.DataFrame, DataframeSchema(orient="records")]) -> np.ndarray:
        n = len(data)
        self.calls += 1
        self.rows += n
        self.rows_squared += n * n
        return np.asarray(self.model.predict(data))

    @bentoml.api
    def batches(self) -> dict:
        return {"calls": self.calls, "rows": self.rows, "rows_squared": self.rows_squared,
                "patched_get_batch_size": PATCHED}
