"""Kinds of input beyond DataFrames: text, N-D arrays and records.

The kinds themselves (nbserve/_kinds.py, copied into every Bento) are checked here directly;
then real deploys of each kind answer what the notebook's model answers over real HTTP,
refuse a wrong request with a 422 that names what is wrong, pass the parity replay, show
their kind in /schema, and give drift its derived columns."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

import nbserve
from nbserve import errors
from nbserve._kinds import Array, Invalid, Records, Text, kind_of

REVIEWS = ["great pasta", "cold soup", "lovely wine and great bread", "rude waiter", "great service",
           "awful noise, cold food"] * 4
LIKED = [1, 0, 1, 0, 1, 0] * 4
ORDERS = [
    {"customer": "a", "items": [{"price": 3.5, "qty": 2}, {"price": 1.0, "qty": 1}], "express": True},
    {"customer": "b", "items": [{"price": 10, "qty": 1}], "express": False},
    {"customer": "c", "items": [], "express": False},
] * 5


def order_total(orders):
    """A plain function over records, as a notebook might write one."""
    return [sum(i["price"] * i["qty"] for i in o["items"]) + (5.0 if o["express"] else 0.0) for o in orders]


# -- the kinds on their own -----------------------------------------------------------------


def test_samples_are_told_apart():
    assert kind_of(REVIEWS) is Text and kind_of(pd.Series(REVIEWS)) is Text
    assert kind_of(ORDERS) is Records
    assert kind_of(np.zeros((4, 8, 8))) is Array and kind_of(np.zeros(4)) is Array
    assert kind_of(np.zeros((4, 3))) is None, "2-D tables stay frames"
    assert kind_of(pd.DataFrame({"a": [1]})) is None


def test_text_names_the_items_that_are_not_strings():
    kind = Text(Text.describe(pd.Series(REVIEWS, name="review")))
    assert list(kind.decode(["ok"])) == ["ok"] and isinstance(kind.decode(["ok"]), pd.Series)
    with pytest.raises(Invalid, match=r"data\[1\], data\[2\] are not") as caught:
        kind.decode(["fine", 3, None])
    assert caught.value.detail["type_errors"][0] == {"path": "data[1]", "expected": "string", "got": "int"}
    with pytest.raises(Invalid, match="no items"):
        kind.decode([])
    with pytest.raises(Invalid, match="must be a list"):
        kind.decode("one string")


def test_arrays_check_shape_and_dtype():
    kind = Array(Array.describe(np.zeros((2, 8, 8), dtype="float32")))
    assert kind.decode(np.ones((3, 8, 8)).tolist()).dtype == np.float32
    with pytest.raises(Invalid, match=r"expected shape \(batch, 8, 8\), got \(1, 8\)"):
        kind.decode([[0.0] * 8])
    with pytest.raises(Invalid, match="differ in shape or hold values"):
        kind.decode([[[0.0] * 8] * 8, [[0.0] * 7] * 8])
    with pytest.raises(Invalid, match="not numbers"):
        kind.decode([[["x"] * 8] * 8])
    described = kind.json_schema()
    assert described["items"]["minItems"] == 8 and described["items"]["items"]["maxItems"] == 8
    assert "(batch, 8, 8), dtype float32" in described["description"]
    ints = Array(Array.describe(np.zeros((2, 3), dtype="int64")[:, 0]))
    with pytest.raises(Invalid, match="integers"):
        ints.decode([1.5])


def test_records_name_the_path_of_what_is_wrong():
    kind = Records(Records.describe(ORDERS))
    assert kind.decode([ORDERS[0]]) == [ORDERS[0]]
    with pytest.raises(Invalid) as caught:
        kind.decode([{"customer": "x", "items": [{"price": "cheap", "qty": 1}, {"qty": 2}], "express": True},
                     {"customer": "y", "items": []}])
    paths = [e["path"] for e in caught.value.detail["type_errors"]]
    assert paths == ["data[0].items[0].price", "data[0].items[1].price", "data[1].express"]
    assert "data[0].items[0].price (string, expected number)" in caught.value.message
    features = kind.features(ORDERS[:2])
    assert {"express", "items.length"} <= set(features.columns)


def test_a_sample_nbserve_cannot_read_lists_the_kinds_it_takes(module_home):
    with pytest.raises(errors.InvalidArgument, match="cannot read a sample of type") as caught:
        nbserve.deploy(order_total, "unreadable", {1, 2, 3}, progress=False)
    assert "list, Series or 1-D array of strings" in caught.value.hint
    assert "list of dicts" in caught.value.hint and "numpy array" in caught.value.hint


# -- real deploys ---------------------------------------------------------------------------



@pytest.mark.slow
def test_a_text_pipeline_serves_strings(module_home):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(REVIEWS, LIKED)
    dep = nbserve.deploy(model, "reviews", REVIEWS, progress=False)
    asked = ["great pasta", "cold and rude", "lovely"]
    np.testing.assert_array_equal(dep.predict(asked), model.predict(asked))
    np.testing.assert_allclose(dep.predict(asked, endpoint="predict_proba"), model.predict_proba(asked), rtol=1e-6)
    np.testing.assert_array_equal(dep.predict(pd.Series(asked)), model.predict(asked))
    assert "parity_passed" in set(dep.events()["kind"])
    bad = httpx.post(f"{dep.url}/predict", json={"data": ["fine", 42]}, trust_env=False, timeout=30)
    assert bad.status_code == 422 and bad.json()["type_errors"][0]["path"] == "data[1]"
    schema = httpx.get(f"{dep.url}/schema", trust_env=False, timeout=30).json()
    assert schema["kind"] == "text" and isinstance(schema["example"], str)
    assert "vocabulary" not in schema["schema"]
    ok = httpx.post(f"{dep.url}/predict", json=schema["request"], trust_env=False, timeout=30)
    assert ok.status_code == 200, "the ready request body in /schema is answered"
    assert ok.headers["x-nbserve-rows"] == str(len(schema["request"]["data"]))
    traffic = dep.traffic("10m")
    assert {"text_length", "token_count", "unseen_token_share"} <= set(traffic.columns)
    same = dep.drift(REVIEWS)  # texts are compared through their derived columns
    assert not same.attrs["dataset_drift"] and "unseen_token_share" in same["feature"].tolist()
    shifted = dep.drift([f"the quantum flux capacitor {i} exploded in orbit tonight" for i in range(30)])
    assert shifted.attrs["dataset_drift"]
    card = dep.model_card().to_markdown()
    assert "kind of input" in card and "text" in card and "inputs, kept at deploy time" in card
    assert '{"data": ["' in card, "the card shows a ready request"


@pytest.mark.slow
def test_records_and_arrays_serve_their_own_shapes(module_home):
    dep = nbserve.deploy(order_total, "orders", ORDERS, progress=False)
    asked = [ORDERS[0], {"customer": "z", "items": [{"price": 2.0, "qty": 3}], "express": False}]
    served = dep.predict(asked)
    assert served == pytest.approx(order_total(asked)) and isinstance(served, list)
    bad = httpx.post(f"{dep.url}/predict", json={"data": [{"customer": "z", "items": [{"qty": 1}], "express": 1}]},
                     trust_env=False, timeout=30)
    assert bad.status_code == 422
    assert sorted(e["path"] for e in bad.json()["type_errors"]) == ["data[0].express", "data[0].items[0].price"]
    with pytest.raises(errors.SchemaMismatch, match="items"):
        dep.predict([{"customer": "z", "items": "none", "express": False}])

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    images = rng.random((40, 6, 6))
    labels = (images[:, :3].mean(axis=(1, 2)) > images[:, 3:].mean(axis=(1, 2))).astype(int)
    flatten = FunctionTransformer(lambda x: np.asarray(x).reshape(len(x), -1))
    model = make_pipeline(flatten, LogisticRegression()).fit(images, labels)
    dep = nbserve.deploy(model, "tiles", images[:20], progress=False)
    np.testing.assert_array_equal(dep.predict(images[20:]), model.predict(images[20:]))
    wrong = httpx.post(f"{dep.url}/predict", json={"data": images[:2, :5].tolist()}, trust_env=False, timeout=30)
    assert wrong.status_code == 422 and "expected shape (batch, 6, 6), got (2, 5, 6)" in wrong.json()["error"]
    assert "parity_passed" in set(dep.events()["kind"])


def brightness(images):
    """A function of a notebook over PIL images."""
    return [float(np.asarray(img.convert("L"), dtype=float).mean()) for img in images]


def _images(count: int):
    from PIL import Image

    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (16, 12, 3), dtype=np.uint8), "RGB") for _ in range(count)]


def test_images_travel_as_base64_files_and_a_broken_one_is_named():
    import base64

    from nbserve._kinds import Images

    sample = _images(3)
    assert kind_of(sample) is Images
    kind = Images(Images.describe(sample))
    decoded = kind.decode(kind.items(sample))
    assert [img.size for img in decoded] == [(12, 16)] * 3 and decoded[0].mode == "RGB"
    assert np.array_equal(np.asarray(decoded[1]), np.asarray(sample[1]))  # PNG is lossless
    truncated = base64.b64encode(base64.b64decode(kind.items(sample[:1])[0])[:60]).decode()
    with pytest.raises(Invalid, match=r"items are not images: data\[1\], data\[2\], data\[3\]") as caught:
        kind.decode([kind.items(sample[:1])[0], "not base64!", truncated, 7])
    assert [e["path"] for e in caught.value.detail["type_errors"]] == ["data[1]", "data[2]", "data[3]"]
    features = kind.features(kind.items(sample))
    assert {"width", "height", "mean_R", "mean_G", "mean_B"} <= set(features.columns)


@pytest.mark.slow
def test_an_image_model_is_served(module_home):
    sample = _images(8)
    dep = nbserve.deploy(brightness, "bright", sample, progress=False)
    np.testing.assert_allclose(dep.predict(sample[:3]), brightness(sample[:3]), rtol=1e-9)
    assert "parity_passed" in set(dep.events()["kind"])
    broken = httpx.post(f"{dep.url}/predict", json={"data": ["aGVsbG8="]}, trust_env=False, timeout=30)
    assert broken.status_code == 422 and broken.json()["type_errors"][0]["path"] == "data[0]"
    import io

    files = []
    for img in sample[:2]:
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        files.append(("data", ("tile.png", buffer.getvalue(), "image/png")))
    as_files = httpx.post(f"{dep.url}/predict", files=files, trust_env=False, timeout=30)
    assert as_files.status_code == 200 and as_files.json() == pytest.approx(brightness(sample[:2]))
    broken_file = httpx.post(f"{dep.url}/predict", files=[("data", ("x.png", b"\x89PNG broken", "image/png"))],
                             trust_env=False, timeout=30)
    assert broken_file.status_code == 422 and broken_file.json()["type_errors"][0]["path"] == "data[0]"
    meta = dep._client.get("/v1/deployments/bright/versions/1")["metadata"]
    assert any(p.lower().startswith("pillow==") for p in meta["provenance"]["packages"])


@pytest.mark.slow
def test_the_docs_describe_each_kind_of_request(module_home):
    dep = nbserve.deploy(order_total, "orders-docs", ORDERS, progress=False)
    docs = httpx.get(f"{dep.url}/docs.json", trust_env=False, timeout=30).json()
    body = docs["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = docs["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    data = body["properties"]["data"]
    item = data["items"]
    assert data["type"] == "array" and item["type"] == "object"
    assert item["properties"]["items"]["items"]["properties"]["price"] == {"type": "number"}
    assert set(item["required"]) == {"customer", "items", "express"}
