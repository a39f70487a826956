"""Models of other shapes than "an estimator with predict": plain functions, and any named
method (transform, decision_function, several at once), served over real HTTP by real
`bentoml serve` processes, answering what the notebook's own calls answer."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

import nbserve
from nbserve import errors

pytestmark = pytest.mark.slow


def price(frame):
    """A plain function of the notebook: no class, no predict()."""
    return frame["sepal_length"] * 2.5 + frame["petal_width"]


def test_a_plain_function_is_served_and_checked_like_a_model(module_home, iris):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(price, "price-fn", X_test, progress=False)
    served = dep.predict(X_test.iloc[5:9])
    assert isinstance(served, pd.Series), "the type the function returned in the notebook"
    pd.testing.assert_series_equal(served, price(X_test.iloc[5:9]), check_names=False)
    np.testing.assert_allclose(dep.predict(X_test), price(X_test).to_numpy())
    history = dep.history()
    assert history.loc[1, "status"] == "live"
    kinds = set(dep.events()["kind"])
    assert "parity_passed" in kinds, "the function's answers were replayed before it took traffic"
    with pytest.raises(errors.SchemaMismatch, match="missing columns: petal_width"):
        dep.predict(X_test.drop(columns=["petal_width"]).head(2))
    files = httpx.post(f"{dep.url}/predict", files=[("data", ("rows.bin", b"\x89\x00binary", "image/png"))],
                       trust_env=False, timeout=30)
    assert files.status_code == 415, "a file sent to a model of rows is the client's mistake (BentoML said 500)"
    meta = dep._client.get("/v1/deployments/price-fn/versions/1")["metadata"]["model"]
    assert meta["flavor"] == "function" and meta["methods"] == ["__call__"]
    assert meta["class"].endswith(".price")


def test_a_named_method_is_served_at_predict_and_at_its_own_path(module_home, iris):
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, _, _ = iris
    scaler = StandardScaler().fit(X_train)
    with pytest.raises(errors.ModelNotServable, match="has no predict") as refused:
        nbserve.deploy(scaler, "scaled", X_test, progress=False)
    assert "method='transform'" in refused.value.hint
    dep = nbserve.deploy(scaler, "scaled", X_test, method="transform", progress=False)
    expected = scaler.transform(X_test)
    np.testing.assert_allclose(dep.predict(X_test), expected, rtol=1e-6)
    np.testing.assert_allclose(dep.predict(X_test, endpoint="transform"), expected, rtol=1e-6)
    assert dep.version == 1
    passed = dep.events().query("kind == 'parity_passed'")
    assert len(passed) == 1, "a vector per row is replayed and compared element by element"


def frame_out(frame):
    """Returns a DataFrame, as feature pipelines often do."""
    return pd.DataFrame({"double": frame["sepal_length"] * 2, "label": (frame["petal_width"] > 1).map(str)})


def test_answers_come_back_as_the_type_the_notebook_got(module_home, iris):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(frame_out, "frame-out", X_test, progress=False)
    served = dep.predict(X_test.head(4))
    assert isinstance(served, pd.DataFrame) and list(served.columns) == ["double", "label"]
    pd.testing.assert_frame_equal(served, frame_out(X_test.head(4)), check_dtype=False)


def test_several_methods_each_at_its_own_path(module_home, iris):
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, _ = iris
    model = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    dep = nbserve.deploy(model, "many-methods", X_test, methods=["predict", "decision_function"], progress=False)
    np.testing.assert_array_equal(dep.predict(X_test), model.predict(X_test))
    np.testing.assert_allclose(dep.predict(X_test, endpoint="decision_function"),
                               model.decision_function(X_test), rtol=1e-6)
    missing = httpx.post(f"{dep.url}/predict_proba", json={"data": X_test.head(1).to_dict("records")},
                         trust_env=False, timeout=30)
    assert missing.status_code == 404, "only the methods asked for are served"
    docs = httpx.get(f"{dep.url}/docs.json", trust_env=False, timeout=30).json()
    assert {"/predict", "/decision_function"} <= set(docs["paths"])
