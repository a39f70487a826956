"""Hand-written BentoML services for bench/kinds.py's baseline: the models of its text and
array deployments, served the way a BentoML 1.4 user would write it.

    BENTOML_HOME=<store holding kinds-reviews and kinds-tiles> \\
        python -m bentoml serve _bento_kinds:Reviews --working-dir bench   # or _bento_kinds:Tiles

Each is a ``@bentoml.service`` class loading its model from the model store with
``bentoml.sklearn`` and one ``@bentoml.api`` with a typed argument: ``texts: list[str]``
(``{"texts": ["great pasta", ...]}``) and ``images: np.ndarray`` (``{"images": [[[0.1, ...]]]}``).
BentoML checks the argument's type (pydantic) and nothing more: no shape or dtype check,
which nbserve's kinds add. As nbserve's generated service does, no access log and a 300 s
request timeout, so the two differ in what they do per request, not in logging.
"""

from __future__ import annotations

import bentoml
import numpy as np

_OPTIONS = {"traffic": {"timeout": 300}, "logging": {"access": {"enabled": False}}}


@bentoml.service(name="kinds-reviews", **_OPTIONS)
class Reviews:
    model_ref = bentoml.models.BentoModel("kinds-reviews:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def predict(self, texts: list[str]) -> np.ndarray:
        return self.model.predict(texts)


@bentoml.service(name="kinds-tiles", **_OPTIONS)
class Tiles:
    model_ref = bentoml.models.BentoModel("kinds-tiles:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict(images)
