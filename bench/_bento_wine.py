"""A hand-written BentoML service for bench/runtime.py's baseline: the wine forest, served the way a
BentoML 1.4 user would write it.

    BENTOML_HOME=<store holding wine-forest> python -m bentoml serve _bento_wine:WineForest --working-dir bench

A ``@bentoml.service`` class loading the forest from the model store with ``bentoml.sklearn`` and one
``@bentoml.api`` taking a DataFrame of records, the body nbserve's stable URL takes
(``{"data": [{"alcohol": 14.23, ...}]}``), and answering ``model.predict`` of it. Not batchable: nbserve's
versions do not batch unless asked either. BentoML checks the argument's type (pydantic) and nothing more.
As nbserve's generated service does, no access log and a 300 s request timeout, so the two differ in what
they do per request, not in logging.
"""

from __future__ import annotations

import typing as t

import bentoml
import numpy as np
import pandas as pd
from bentoml.validators import DataframeSchema

_OPTIONS = {"traffic": {"timeout": 300}, "logging": {"access": {"enabled": False}}}


@bentoml.service(name="wine-forest", **_OPTIONS)
class WineForest:
    model_ref = bentoml.models.BentoModel("wine-forest:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def predict(self, data: t.Annotated[pd.DataFrame, DataframeSchema(orient="records")]) -> np.ndarray:
        return self.model.predict(data)
