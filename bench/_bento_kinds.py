"""Hand-written BentoML services for bench/kinds.py's baseline: the models of its text, array
and image deployments, served the way a BentoML 1.4 user would write it.

    BENTOML_HOME=<store holding kinds-reviews, kinds-tiles and kinds-pictures> \\
        python -m bentoml serve _bento_kinds:Reviews --working-dir bench   # or :Tiles, :Pictures

Each is a ``@bentoml.service`` class loading its model from the model store with
``bentoml.sklearn`` and one ``@bentoml.api`` with a typed argument: ``texts: list[str]``
(``{"texts": ["great pasta", ...]}``), ``images: np.ndarray`` (``{"images": [[[0.1, ...]]]}``)
and ``image: PIL.Image.Image``, which BentoML takes as a multipart/form-data file in the field
named after the argument (``curl -F image=@a.png``) and opens with ``PIL.Image.open``. BentoML
checks the argument's type (pydantic) and nothing more: no shape or dtype check, no check that
the file is a whole image before the model reads it, which nbserve's kinds add. The image
model's first step, ``_image_model.pixels``, is imported by the unpickler from this directory
(the ``--working-dir``). As nbserve's generated service does, no access log and a 300 s
request timeout, so the two differ in what they do per request, not in logging.
"""

from __future__ import annotations

import bentoml
import numpy as np
from PIL import Image

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


@bentoml.service(name="kinds-pictures", **_OPTIONS)
class Pictures:
    model_ref = bentoml.models.BentoModel("kinds-pictures:latest")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def predict(self, image: Image.Image) -> np.ndarray:
        return self.model.predict([image.convert("RGB")])  # the model was trained on RGB
