"""Request ids, per-version URLs, metadata, real outcomes, quality and model cards, against
real deployments over real HTTP."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

import nbserve
from nbserve import errors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dep(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(tree, "q-iris", X_test, progress=False, description="a stump",
                   intended_use="the quality tests", limitations="iris only")
    return nbserve.deploy(forest, "q-iris", X_test, progress=False)  # v2 live, v1 warm


def test_request_ids_round_trip_and_a_client_id_is_kept(dep, iris):
    _, X_test, _, _ = iris
    frame = dep.predict(X_test.head(4), ids=True)
    rid = dep.last_request_id
    assert rid and list(frame["id"]) == [f"{rid}:{i}" for i in range(4)]
    body = {"data": X_test.head(1).to_dict(orient="records")}
    r = httpx.post(f"{dep.url}/predict", json=body, headers={"x-request-id": "order-17"}, trust_env=False)
    assert r.status_code == 200 and r.headers["x-request-id"] == "order-17"
    r = httpx.post(f"{dep.url}/predict", json={"nope": 1}, trust_env=False)  # a 4xx carries one too
    assert r.status_code in (400, 422) and r.headers["x-request-id"]
    ids = {httpx.post(f"{dep.url}/predict", json=body, trust_env=False).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_per_version_urls_answer_from_that_version_while_the_stable_url_points_elsewhere(dep, iris, forest, tree):
    _, X_test, _, _ = iris
    assert dep.version == 2
    np.testing.assert_array_equal(dep.predict(X_test, version=1), tree.predict(X_test))
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    r = httpx.post(f"{dep.url}/v/1/predict", json={"data": X_test.head(2).to_dict(orient="records")},
                   trust_env=False)
    assert r.headers["x-nbserve-version"] == "1"
    assert dep.alias("staging", 1) == {"staging": 1}
    np.testing.assert_array_equal(dep.predict(X_test, version="staging"), tree.predict(X_test))
    r = httpx.get(f"{dep.url}/v/nope/metadata", trust_env=False)
    assert r.status_code == 404 and "alias" in r.json()["error"]
    r = httpx.post(f"{dep.url}/v/99/predict", json={}, trust_env=False)
    assert r.status_code == 404
    assert nbserve.get("q-iris").aliases == {"staging": 1}
    assert dep.alias("staging", None) == {}
    assert "alias_set" in set(dep.audit()["action"])


def test_metadata_and_schema_reflect_what_was_deployed(dep, iris, forest):
    _, X_test, _, _ = iris
    live = httpx.get(f"{dep.url}/metadata", trust_env=False).json()
    assert live["version"] == 2 and live["model"]["class"].endswith("RandomForestClassifier")
    assert live["model"]["task"] == "classification" and live["model"]["params"]["n_estimators"] == 20
    assert any(p.startswith("scikit-learn==") for p in live["packages"])
    first = httpx.get(f"{dep.url}/v/1/metadata", trust_env=False).json()
    assert first["model"]["class"].endswith("DecisionTreeClassifier") and first["description"] == "a stump"
    assert first["card"] == {"intended_use": "the quality tests", "limitations": "iris only"}
    schema = httpx.get(f"{dep.url}/schema", trust_env=False).json()
    assert [c["name"] for c in schema["schema"]["columns"]] == list(X_test.columns)
    example = schema["request"]  # a body that works as is
    assert httpx.post(f"{dep.url}/predict", json=example, trust_env=False).status_code == 200
    assert httpx.post(f"{dep.url}/metadata", trust_env=False).status_code == 405
    assert dep.metadata(1) == first
    history = dep.history()
    assert history.loc[1, "intended_use"] == "the quality tests" and history.loc[1, "limitations"] == "iris only"
    assert history.loc[2, "from"] == "127.0.0.1"  # the deploy's source address, from the audit log
    # the stable URL's own OpenAPI document names the real columns and their types
    doc = httpx.get(f"{dep.url}/docs.json", trust_env=False).json()
    rows = doc["components"]["schemas"]["predict__Input"]["properties"]["data"]["items"]
    assert rows["required"] == list(X_test.columns)
    assert {name: col["type"] for name, col in rows["properties"].items()} == {c: "number" for c in X_test.columns}


def test_feedback_joins_the_right_predictions_across_two_versions(dep, iris, forest, tree):
    _, X_test, _, y_test = iris
    live = dep.predict(X_test, ids=True)  # v2
    old = dep.predict(X_test, ids=True, version=1)  # v1 through its own URL
    report = dep.feedback(pd.concat([live["id"], old["id"]]), pd.concat([y_test, y_test]))
    assert report["stored"] == 2 * len(X_test) and report["unknown"] == report["invalid"] == 0
    quality = dep.quality("1h", bucket="1h")
    assert quality.attrs["task"] == "classification"
    by_version = quality.groupby("version")
    for version, model in ((1, tree), (2, forest)):
        rows = by_version.get_group(version)
        assert int(rows["labelled"].sum()) == len(X_test)
        y_pred = model.predict(X_test)
        # one bucket each: equal to scikit-learn on the same rows
        assert rows["accuracy"].iloc[-1] == pytest.approx(accuracy_score(y_test, y_pred))
        assert rows["f1"].iloc[-1] == pytest.approx(f1_score(y_test, y_pred, average="macro", zero_division=0))
        assert rows["precision"].iloc[-1] == pytest.approx(
            precision_score(y_test, y_pred, average="macro", zero_division=0))
        assert rows["recall"].iloc[-1] == pytest.approx(recall_score(y_test, y_pred, average="macro", zero_division=0))
    only = dep.quality("1h", metrics=["accuracy"], version=1)
    assert list(only.columns) == ["time", "version", "labelled", "accuracy"]
    fig = dep.plot_quality("1h", bucket="1h")
    assert fig.axes[0].get_legend_handles_labels()[1] == ["v1", "v2"]


def test_bad_feedback_is_counted_and_reported_never_a_crash(dep, iris):
    _, X_test, _, y_test = iris
    ids = list(dep.predict(X_test.head(3), ids=True)["id"])
    report = dep.feedback(["no-such-id:0", ids[0], ids[0], ids[1], f"{ids[2].split(':')[0]}:99"],
                          [1, 2, 2, {"a": 1}, 0])
    assert report == {"received": 5, "stored": 1, "updated": 0, "unknown": 2, "duplicate": 1, "invalid": 1,
                      "examples": {"unknown": ["no-such-id:0", f"{ids[2].split(':')[0]}:99"],
                                   "duplicate": [ids[0]], "invalid": [ids[1]]}}
    again = dep.feedback([ids[0]], [0])
    assert again["updated"] == 1  # a correction replaces the label
    with pytest.raises(errors.InvalidArgument, match="2 ids but 1 outcomes"):
        dep.feedback(ids[:2], [1])
    # the stable URL takes feedback too (what an application would use), with the same report
    r = httpx.post(f"{dep.url}/feedback", json={"ids": ids, "y_true": [0, 1, 2]}, trust_env=False)
    assert r.status_code == 200 and r.json()["stored"] == 3
    r = httpx.post(f"{dep.url}/feedback", content=b"not json", trust_env=False)
    assert r.status_code == 400 and "ids" in r.json()["error"]
    with pytest.raises(errors.InvalidArgument, match="unknown metric"):
        dep.quality(metrics=["accuracy", "bogus"])


def test_a_canary_below_its_quality_floor_is_rolled_back(dep, iris, tree):
    _, X_test, _, y_test = iris
    dep.gates(quality={"accuracy": 0.9}, min_labels=40, min_requests=1, window="10m", clear=True)
    canary = nbserve.deploy(tree, "q-iris", X_test, canary=50, sticky_header="x-user", progress=False)
    assert canary.rollout()["version"] == 3
    assert canary.rollout()["verdict"] == "waiting"  # no labels yet: nothing judged
    frame = canary.predict(X_test, ids=True, version=3)  # the stump answers these
    canary.feedback(frame["id"], y_test)
    deadline = time.monotonic() + 30
    while canary.refresh().rollout() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert canary.rollout() is None and canary.version == 2
    breach = canary.events().query("kind == 'gate_breached'").iloc[-1]
    assert "accuracy" in breach["message"] and "< 0.9" in breach["message"]
    canary.gates(clear=True)


def test_model_card_inline_markdown_and_html(dep, tmp_path):
    card = dep.model_card(1)
    html = card._repr_html_()
    for text in ("q-iris v1", "DecisionTreeClassifier", "the quality tests", "iris only", "Input schema",
                 "accuracy", "Reference sample"):
        assert text in html, text
    md = card.save(tmp_path / "card.md").read_text()
    assert md.startswith("# q-iris v1") and "| accuracy |" in md and "## Limitations" in md
    page = card.save(tmp_path / "card.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page
    with pytest.raises(errors.InvalidArgument):
        card.save(tmp_path / "card.pdf")
    live = dep.model_card()
    assert "q-iris v2" in live.to_markdown() and "Not stated" in live.to_markdown()


def test_magic_alias_quality_and_card(dep):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "nbserve")
        assert shell.run_line_magic("deploy", "--alias canary-a q-iris 1") == {"canary-a": 1}
        assert not shell.run_line_magic("deploy", "--quality q-iris").empty
        assert "q-iris v2" in shell.run_line_magic("deploy", "--card q-iris").to_markdown()
        from IPython.core.error import UsageError

        with pytest.raises(UsageError, match="VERSION"):
            shell.run_line_magic("deploy", "--alias x q-iris two")
    finally:
        InteractiveShell.clear_instance()


def test_summary_and_dashboard_show_the_latest_quality_and_its_trend(dep, iris):
    from nbserve._dashboard import quality_text

    _, X_test, _, y_test = iris
    frame = dep.predict(X_test, ids=True)
    dep.feedback(frame["id"], y_test)
    flag = dep.summary()["quality"]
    assert flag["metric"] == "accuracy" and flag["task"] == "classification"
    assert 0.8 < flag["value"] <= 1.0 and flag["labelled"] >= len(X_test)
    assert quality_text(flag).startswith(f"accuracy {flag['value']:.3g}")
    assert quality_text({"metric": "accuracy", "value": 0.8, "previous": 0.9, "labelled": 10}) == \
        "accuracy 0.8 ↓0.1 (worse) (10 labelled)"
    assert quality_text({"metric": "rmse", "value": 0.8, "previous": 0.9, "labelled": 10}) == \
        "rmse 0.8 ↓0.1 (10 labelled)"
    dash = dep.dashboard(refresh=60)
    try:
        deadline = time.monotonic() + 20
        while "accuracy" not in dash.header.value and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "accuracy" in dash.header.value and "labelled" in dash.header.value
    finally:
        dash.stop()
