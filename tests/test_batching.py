"""Adaptive batching with real servers and real HTTP: concurrent requests are merged into one
model call, each is validated (and, if the model fails on it, answered) on its own, and a
latency budget too small for the model is a warning at deploy time and at run time."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import numpy as np
import pytest

import nbserve
from nbserve import errors
from nbserve._runtimes import TOLERANCE

pytestmark = pytest.mark.slow


class Picky:
    """Predicts like the model it wraps, but fails on any row with sepal_length == 99."""

    def __init__(self, model) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict(self, X):
        if (X["sepal_length"] == 99).any():
            raise ValueError("sepal_length 99 is out of range")
        return self.model.predict(X)

    def predict_proba(self, X):
        return self.model.predict_proba(X)


class Slow:
    """Takes 40 ms a call whatever the rows: a budget of a few ms cannot hold it."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, X):
        time.sleep(0.04)
        return self.model.predict(X)


Picky.__module__ = Slow.__module__ = "__main__"  # pickled by value, as if defined in a notebook


def _post(url: str, rows, path: str = "/predict") -> httpx.Response:
    with httpx.Client(timeout=60, trust_env=False) as client:
        return client.post(f"{url}{path}", content='{"data": ' + rows.to_json(orient="records") + "}",
                           headers={"content-type": "application/json"})


def test_concurrent_requests_are_batched_and_each_is_answered_and_validated_alone(module_home, iris, forest):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(Picky(forest), "batched", X_test, batching=True, max_batch_size=64,
                         max_latency_ms=5000, progress=False)
    assert nbserve.top().loc["batched", "batching"] == {"max_batch_size": 64, "max_latency_ms": 5000}
    checked = dep.events().query("kind == 'batching_checked'")
    assert len(checked) == 1 and checked.iloc[0]["data"]["probe_rows"] == 64

    poisoned = X_test.iloc[[0]].assign(sepal_length=99.0)
    missing = X_test.iloc[[1]].drop(columns="petal_width")

    def call(i: int) -> tuple[int, httpx.Response]:
        if i % 10 == 3:
            return i, _post(dep.url, poisoned)
        if i % 10 == 7:
            return i, _post(dep.url, missing)
        if i % 10 == 5:
            return i, _post(dep.url, X_test.iloc[[i % len(X_test)]], "/predict_proba")
        return i, _post(dep.url, X_test.iloc[[i % len(X_test)]])

    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(240)))
    batch_rows = []
    for i, r in answers:
        row = X_test.iloc[[i % len(X_test)]]
        if i % 10 == 3:  # the model failed on this request's rows: it alone gets the error
            assert r.status_code == 500, r.text
        elif i % 10 == 7:  # validated before batching: its own 422, naming the column
            assert r.status_code == 422 and r.json()["missing_columns"] == ["petal_width"], r.text
        elif i % 10 == 5:
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json(), forest.predict_proba(row))
        else:
            assert r.status_code == 200, r.text
            assert r.json() == forest.predict(row).tolist()  # its own answer, split back out of the batch
            batch_rows.append(int(r.headers["x-nbserve-batch-rows"]))
    assert max(batch_rows) > 1, batch_rows  # requests really were merged into one model call
    assert max(batch_rows) <= 64

    # A request larger than a batch is split across batches and comes back whole.
    big = X_test.sample(n=150, replace=True, random_state=1)
    r = _post(dep.url, big)
    assert r.status_code == 200 and r.json() == forest.predict(big).tolist()

    # One knob changes alone; batching=False turns it off (the server is replaced).
    dep.scale(max_latency_ms=2000)
    assert nbserve.top().loc["batched", "batching"] == {"max_batch_size": 64, "max_latency_ms": 2000}
    with pytest.warns(errors.NbserveWarning, match="max_latency_ms=1"):  # checked as at a deploy
        dep.scale(max_latency_ms=1)
    dep.scale(batching=False)
    assert nbserve.top().loc["batched", "batching"] is None
    r = _post(dep.url, X_test.iloc[[2]])
    assert r.status_code == 200 and "x-nbserve-batch-rows" not in r.headers
    assert "batching" not in dep.events().query("kind == 'scaled'").iloc[-1]["message"]


def test_a_budget_too_small_for_the_model_warns_at_deploy_and_when_requests_are_refused(module_home, iris, forest):
    _, X_test, _, _ = iris
    with pytest.warns(errors.NbserveWarning, match="max_latency_ms=5"):
        dep = nbserve.deploy(Slow(forest), "hurried", X_test, max_latency_ms=5, progress=False)
    assert dep.version == 1  # a warning, not a failure: it serves
    warning = dep.events().query("kind == 'batching_warning'").iloc[-1]
    assert warning["data"]["suggested_max_latency_ms"] >= 40

    def call(_: int) -> httpx.Response:
        return _post(dep.url, X_test.iloc[[0]])

    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(64)))
    refused = [r for r in answers if r.status_code == 503]
    assert refused and all(r.status_code in (200, 503) for r in answers), [r.status_code for r in answers]
    body = refused[0].json()
    assert body["type"] == "batch_latency_exceeded" and "max_latency_ms" in body["hint"]
    assert refused[0].headers["retry-after"] == "1"
    deadline = time.monotonic() + 20
    while (events := dep.events().query("kind == 'batch_overloaded'")).empty:
        assert time.monotonic() < deadline, "no batch_overloaded event"
        time.sleep(0.5)
    assert events.iloc[-1]["data"]["refused"] >= 1 and "raise it" in events.iloc[-1]["message"]


def test_bad_batching_settings_are_refused_before_anything_exists(module_home, iris, forest):
    _, X_test, _, _ = iris
    with pytest.raises(errors.InvalidArgument, match="max_batch_size"):
        nbserve.deploy(forest, "never-batched", X_test, max_batch_size=0, progress=False)
    with pytest.raises(errors.InvalidArgument, match="need batching on"):
        nbserve.deploy(forest, "never-batched", X_test, batching=False, max_latency_ms=10, progress=False)
    with pytest.raises(errors.DeploymentNotFound):
        nbserve.get("never-batched")


REVIEWS = ["great pasta", "cold soup", "lovely wine and great bread", "rude waiter", "great service",
           "awful noise, cold food"] * 4
LIKED = [1, 0, 1, 0, 1, 0] * 4


def receipts(orders):
    """Records in, records out: a function of the notebook answering a dict per order."""
    return [{"customer": o["customer"], "total": sum(i["price"] * i["qty"] for i in o["items"])} for o in orders]


receipts.__module__ = "__main__"


def _batched_concurrently(url: str, bodies: list) -> list[httpx.Response]:
    with httpx.Client(timeout=60, trust_env=False) as client, cf.ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda body: client.post(f"{url}/predict", json={"data": body}), bodies))


def test_texts_and_records_are_batched_and_each_is_answered_and_checked_alone(module_home):
    """Batching is not only for DataFrames: texts and records are joined into one model
    call after each request's own check, and each gets its own answers back."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(REVIEWS, LIKED)
    dep = nbserve.deploy(model, "batched-text", REVIEWS, batching=True, max_batch_size=32, max_latency_ms=5000,
                         progress=False)
    kinds = set(dep.events()["kind"])
    assert "batching_checked" in kinds and not kinds & {"batching_unavailable", "batching_warning"}, kinds
    bodies = [["fine", i] if i % 10 == 3 else [f"great pasta {i}", REVIEWS[i % 6]] for i in range(160)]
    batch_rows = []
    for body, r in zip(bodies, _batched_concurrently(dep.url, bodies)):
        if not all(isinstance(text, str) for text in body):
            assert r.status_code == 422 and r.json()["type_errors"][0]["path"] == "data[1]", r.text
            continue
        assert r.status_code == 200, r.text
        assert r.json() == model.predict(body).tolist()
        assert r.headers["x-nbserve-rows"] == "2"
        batch_rows.append(int(r.headers["x-nbserve-batch-rows"]))
    assert max(batch_rows) > 2, batch_rows  # requests really were merged into one model call
    many = [f"{text} {i}" for i, text in enumerate(REVIEWS * 5)]  # 120 texts: split across batches of 32
    assert dep.predict(many).tolist() == model.predict(many).tolist()

    orders = [{"customer": f"c{i}", "items": [{"price": 1.5, "qty": i}], "express": bool(i % 2)} for i in range(40)]
    dep = nbserve.deploy(receipts, "batched-records", orders, batching=True, max_latency_ms=5000, progress=False)
    assert "batching_checked" in set(dep.events()["kind"])
    bodies = [orders[i % 40:i % 40 + 3] for i in range(120)]
    answers = _batched_concurrently(dep.url, bodies)
    assert [r.json() for r in answers] == [receipts(body) for body in bodies], "each its own dicts, in order"
    assert max(int(r.headers["x-nbserve-batch-rows"]) for r in answers) > 3
    assert dep.predict(orders[:2]) == receipts(orders[:2])


def test_a_version_serving_probabilities_first_is_timed_for_batching(module_home, iris, forest):
    """The batching check sent the reference's stored answers as a column (a 422, and a
    batching_warning that the check could not run) when the first method answers vectors."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "batched-proba", X_test, method="predict_proba", batching=True,
                         max_latency_ms=5000, progress=False)
    events = dep.events()
    assert "batching_checked" in set(events["kind"]), events[["kind", "message"]].to_string()
    assert "batching_warning" not in set(events["kind"])
    # the forest serves compiled (runtime="auto"): float32, within the documented tolerance
    np.testing.assert_allclose(dep.predict(X_test.head(3)), forest.predict_proba(X_test.head(3)), **TOLERANCE)
