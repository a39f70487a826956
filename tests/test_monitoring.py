"""Monitoring end to end: real agent, real `bentoml serve`, real HTTP through the stable URL.

Every request is counted in per-minute panes (by version, status and rows), sampled
requests keep their inputs and outputs, /metrics speaks Prometheus, and the capture
store survives an agent restart and is bounded by retention.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

import nbserve
from nbserve._agent._monitor import Monitor, MonitorSettings, SamplingPolicy
from nbserve._agent._proxy import RequestRecord
from nbserve.errors import InvalidArgument

pytestmark = pytest.mark.slow


def _post(url: str, frame, client: httpx.Client) -> httpx.Response:
    return client.post(f"{url}/predict", json={"data": frame.to_dict("records")})


@pytest.fixture(scope="module")
def traffic_run(module_home, iris, forest, tree):
    """Two versions; known traffic to each, including rejected and multi-row requests."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "mon", X_test, progress=False)
    sent = {"v1_ok": 0, "v1_rows": 0, "v1_422": 0}
    with httpx.Client(timeout=30) as client:
        for i in range(40):
            rows = X_test.iloc[i : i + 1 + i % 3]
            assert _post(dep.url, rows, client).status_code == 200
            sent["v1_ok"] += 1
            sent["v1_rows"] += len(rows)
        for _ in range(3):
            assert client.post(f"{dep.url}/predict", json={"data": [{"nope": 1}]}).status_code == 422
            sent["v1_422"] += 1
    dep = nbserve.deploy(tree, "mon", X_test, progress=False)
    assert dep.version == 2
    with httpx.Client(timeout=30) as client:
        for i in range(25):
            assert _post(dep.url, X_test.iloc[i : i + 2], client).status_code == 200
    sent["v2_ok"] = 25
    return dep, sent


def test_every_request_is_counted_by_version_status_and_rows(traffic_run) -> None:
    dep, sent = traffic_run
    frame = dep.latency("10m", by_version=True)
    by_version = frame.groupby("version")[["requests", "errors", "client_errors", "rows"]].sum()
    assert by_version.loc[1, "requests"] == sent["v1_ok"] + sent["v1_422"]
    assert by_version.loc[1, "client_errors"] == sent["v1_422"]
    assert by_version.loc[1, "errors"] == 0
    assert by_version.loc[1, "rows"] == sent["v1_rows"] + sent["v1_422"]
    assert by_version.loc[2, "requests"] == sent["v2_ok"]
    merged = dep.latency("10m")
    assert merged["requests"].sum() == sent["v1_ok"] + sent["v1_422"] + sent["v2_ok"]
    assert (merged["p50_ms"] > 0).all() and (merged["p99_ms"] >= merged["p50_ms"]).all()
    assert str(merged["time"].dt.tz) == "UTC"
    since_v2 = dep.latency(since_version=2, by_version=True)
    assert set(since_v2["version"]) <= {1, 2} and since_v2["requests"].sum() >= sent["v2_ok"]


def test_summary_gives_rates_percentiles_and_a_sparkline(traffic_run) -> None:
    dep, sent = traffic_run
    s = dep.summary("10m")
    assert s["requests"] == sent["v1_ok"] + sent["v1_422"] + sent["v2_ok"]
    assert s["rps"] > 0 and s["p50_ms"] > 0 and s["p99_ms"] >= s["p50_ms"]
    assert s["error_rate"] == 0
    assert len(s["sparkline"]) == 30 and s["sparkline"][-1] >= 0 and sum(s["sparkline"]) > 0
    assert set(s["drift"]) == {"drifted", "share", "features", "rows"}


def test_sampled_traffic_holds_the_real_inputs_and_predictions(traffic_run, iris, tree) -> None:
    dep, sent = traffic_run
    _, X_test, _, _ = iris
    traffic = dep.traffic("10m", version=2)
    assert len(traffic) == 2 * sent["v2_ok"]
    assert list(traffic.columns[:3]) == ["ts", "version", "request_id"]
    features = list(X_test.columns)
    expected = tree.predict(traffic[features])
    np.testing.assert_array_equal(traffic["prediction"].to_numpy(), expected)
    assert (traffic["status"] == 200).all() and (traffic["latency_ms"] > 0).all()
    everything = dep.traffic("10m")
    rejected = everything[everything["status"] == 422]
    assert len(rejected) == sent["v1_422"]
    assert "nope" not in everything.columns  # only the schema's columns are kept


def test_prometheus_metrics(traffic_run) -> None:
    dep, sent = traffic_run
    response = dep._client._http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert f'nbserve_requests_total{{code="200",deployment="mon",version="1"}} {float(sent["v1_ok"])}' in text
    assert f'nbserve_requests_total{{code="422",deployment="mon",version="1"}} {float(sent["v1_422"])}' in text
    assert f'nbserve_request_duration_seconds_count{{deployment="mon",version="2"}} {float(sent["v2_ok"])}' in text
    assert 'nbserve_live_version{deployment="mon"} 2.0' in text
    unauthenticated = httpx.get(f"{dep._client.base_url}/metrics")
    assert unauthenticated.status_code == 401


def test_process_resources_are_sampled(traffic_run) -> None:
    dep, _ = traffic_run
    deadline = time.monotonic() + 40
    frame = dep.resources("10m")
    while frame.empty and time.monotonic() < deadline:
        time.sleep(1)
        frame = dep.resources("10m")
    assert not frame.empty
    live = frame[frame["version"] == 2]
    assert (live["rss_bytes"] > 10 * 2**20).all() and (live["processes"] >= 1).all()


def test_resources_right_after_a_deploy_have_the_current_row(module_home, iris, forest) -> None:
    """The first stored sample came up to 15 s after go-live: a user who deployed and asked
    got an empty frame. Now the servers are measured when asked."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "res-now", X_test, progress=False)
    frame = dep.resources("10m")
    assert not frame.empty, "no row for a version that is serving"
    row = frame[frame["version"] == dep.version].iloc[-1]
    assert row["rss_bytes"] > 10 * 2**20 and row["processes"] >= 1 and row["cpu_percent"] >= 0
    again = dep.resources("10m")  # measured rows are stored: asking again does not add another
    assert len(again) == len(frame)
    dep.stop()


def test_settings_turn_sampling_and_capture_off_and_bad_ones_are_refused(traffic_run, iris) -> None:
    dep, _ = traffic_run
    _, X_test, _, _ = iris
    with pytest.raises(InvalidArgument, match="sample_rate"):
        dep.configure(sample_rate=2)
    with pytest.raises(InvalidArgument, match="unknown setting"):
        dep.configure(sampel_rate=0.5)
    assert dep.configure(sample_rate=0.0)["sample_rate"] == 0.0
    before_samples = len(dep.traffic("10m"))
    before_requests = dep.latency("10m")["requests"].sum()
    with httpx.Client(timeout=30) as client:
        for i in range(5):
            assert _post(dep.url, X_test.iloc[i : i + 1], client).status_code == 200
    assert len(dep.traffic("10m")) == before_samples
    assert dep.latency("10m")["requests"].sum() == before_requests + 5
    dep.configure(capture=False)
    with httpx.Client(timeout=30) as client:
        assert _post(dep.url, X_test.iloc[:1], client).status_code == 200
    assert dep.latency("10m")["requests"].sum() == before_requests + 5
    config = dep.configure(capture=True, sample_rate=1.0)
    assert config["capture"] is True
    events = dep.events()
    kinds = events["kind"].tolist()
    assert kinds.count("configured") >= 3
    last = int(events["id"].max())
    assert dep.events(after=last).empty
    dep.configure(sample_rate=1.0)
    newer = dep.events(after=last)
    assert newer["kind"].tolist() == ["configured"] and int(newer["id"].iloc[0]) > last


# -- the monitor on its own: real SQLite, records as the proxy hands them over ---------


def _record(label: str | None, status: int = 200, ms: float = 5.0, body: bytes = b'{"data": [{"x": 1}]}',
            response: bytes | None = b"[1]", path: str = "/predict", rows: int = -1) -> RequestRecord:
    started = time.perf_counter_ns() - int(ms * 1e6)
    return RequestRecord(label, "POST", path, status, started, int(ms * 1e6), len(body), body, response,
                         rows=rows)


def test_rows_the_server_reported_are_counted_without_parsing_the_body(tmp_path) -> None:
    """The model server says how many rows it answered (x-nbserve-rows): the monitor takes
    its word, so a large body is not parsed again in the agent just to be counted."""
    monitor = Monitor(tmp_path / "metrics.sqlite")
    observe = monitor.observer_for("d")
    observe(_record("1", rows=3))  # the body holds one row: the server's 3 is what counts
    observe(_record("1", body=b"not json at all", rows=2, response=None))
    observe(_record("1", status=422, body=b'{"data": [{"y": 1}, {"y": 2}]}'))  # no header: parsed
    monitor._drain()
    totals = monitor.totals[("d", 1)]
    assert totals.rows == 3 + 2 + 2 and totals.unreadable == 0
    assert len(monitor.samples("d", 0)) == 2, "sampled answers are kept whether or not they were parsed"
    monitor.close()


def test_panes_survive_a_restart_mid_minute(tmp_path) -> None:
    first = Monitor(tmp_path / "metrics.sqlite")
    observe = first.observer_for("d")
    for _ in range(10):
        observe(_record("1"))
    first.close()
    second = Monitor(tmp_path / "metrics.sqlite")
    observe = second.observer_for("d")
    for _ in range(5):
        observe(_record("1", status=503))
    panes = second.panes("d", time.time() - 600)
    second.close()
    assert sum(p[2] for p in panes) == 15  # one minute may have split in two: summed
    assert sum(p[3] for p in panes) == 5


def test_retention_drops_old_panes_and_caps_samples(tmp_path) -> None:
    monitor = Monitor(tmp_path / "metrics.sqlite", settings=MonitorSettings(max_samples=7))
    observe = monitor.observer_for("d")
    for _ in range(20):
        observe(_record("1"))
    monitor.flush()
    old_minute = int(time.time() - 30 * 86400) // 60
    monitor._db.execute(
        "INSERT INTO panes VALUES ('d', 1, ?, 3, 0, 0, 3, 0.01, ?)",
        (old_minute, monitor.panes("d", 0)[0][7].to_bytes()),
    )
    assert len(monitor.panes("d", 0)) == 2
    removed = monitor.apply_retention()
    assert removed["panes"] == 1 and removed["samples"] == 13
    assert len(monitor.samples("d", 0)) == 7
    assert len(monitor.panes("d", 0)) == 1
    monitor.close()


def test_the_metrics_file_stays_within_its_size_budget(tmp_path) -> None:
    monitor = Monitor(tmp_path / "metrics.sqlite", settings=MonitorSettings(max_megabytes=0.5))
    observe = monitor.observer_for("d")
    big = json.dumps({"data": [{"x": i, "pad": "p" * 200} for i in range(200)]}).encode()  # ~45 KB
    for _ in range(60):  # ~2.7 MB of sampled requests
        observe(_record("1", body=big))
    monitor._drain()
    monitor.flush()
    assert monitor._live_bytes() > 2 * 2**20
    removed = monitor.apply_retention()
    assert removed["samples"] > 0
    assert monitor._live_bytes() <= 0.5 * 2**20
    kept = monitor.samples("d", 0)
    assert 0 < len(kept) < 60 and kept[-1]["id"] == 60  # the newest survive
    assert len(monitor.panes("d", 0)) == 1  # every request is still counted
    monitor.close()


def test_sampling_budget_and_rate() -> None:
    policy = SamplingPolicy(rate=1.0, budget_per_minute=3)
    assert [policy() for _ in range(5)] == [True, True, True, False, False]
    assert not any(SamplingPolicy(rate=0.0)() for _ in range(100))
    half = SamplingPolicy(rate=0.5, budget_per_minute=10**9)
    picked = sum(half() for _ in range(4000))
    assert 1700 < picked < 2300


def test_unparseable_and_unsampled_bodies_are_counted_not_stored(tmp_path) -> None:
    monitor = Monitor(tmp_path / "metrics.sqlite")
    observe = monitor.observer_for("d")
    observe(_record("2", body=b"not json"))
    observe(_record("2", response=None))  # not picked by the sampler
    observe(_record(None, status=503, response=None))  # no live version: version 0
    rows = {(p[1]): p for p in monitor.panes("d", 0)}
    assert rows[2][2] == 2 and rows[0][2] == 1 and rows[0][3] == 1
    assert monitor.samples("d", 0) == []
    stored = monitor.storage()
    assert stored["panes"] == 2 and stored["dropped"] == 0
    monitor.close()
    assert json.loads(json.dumps(stored))


def test_a_body_nested_past_the_parser_costs_no_other_request_its_record(tmp_path) -> None:
    """A 100,000-deep ``{"data": [[[...]]]}`` raised RecursionError in the capture thread and
    threw away every sample of that cycle; now it is counted as unreadable, alone."""
    monitor = Monitor(tmp_path / "metrics.sqlite")
    observe = monitor.observer_for("d")
    nested = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    observe(_record("1"))
    observe(_record("1", body=nested))
    observe(_record("1", body=b"\xff\xfe not utf-8"))
    observe(_record("1"))
    monitor._drain()
    assert len(monitor.samples("d", 0)) == 2  # both readable requests kept their samples
    totals = monitor.totals[("d", 1)]
    assert totals.by_status == {200: 4} and totals.rows == 2 and totals.unreadable == 2
    monitor.flush()
    assert sum(p[2] for p in monitor.panes("d", 0)) == 4
    monitor.close()


# -- drift, figures and the dashboard on a real deployment ------------------------------


@pytest.fixture(scope="module")
def drifting(module_home, iris, forest):
    """A deployment whose reference is X_test; traffic first like it, then shifted."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "drifty", X_test, progress=False)
    with httpx.Client(timeout=30) as client:
        for i in range(0, len(X_test), 3):
            assert _post(dep.url, X_test.iloc[i : i + 3], client).status_code == 200
    return dep


def _shifted(X):
    out = X.copy()
    out["petal_length"] = out["petal_length"] + 2.5
    out["sepal_width"] = out["sepal_width"] * 1.6
    return out


def test_unshifted_traffic_does_not_drift_and_shifted_traffic_does(drifting, iris) -> None:
    from scipy.stats import ks_2samp

    dep = drifting
    _, X_test, _, _ = iris
    calm = dep.drift(window="10m")
    assert calm.attrs["dataset_drift"] is False and calm.attrs["n_current"] == len(X_test)
    assert not calm["drifted"].any()
    assert dep.summary()["drift"]["drifted"] in (False, None)  # cached flag may predate the traffic

    with httpx.Client(timeout=30) as client:
        for i in range(0, len(X_test), 3):
            assert _post(dep.url, _shifted(X_test).iloc[i : i + 3], client).status_code == 200
    traffic = dep.traffic("10m")
    shifted_rows = traffic.iloc[len(X_test):]
    report = dep.drift(window="10m").set_index("feature")
    assert report.attrs["dataset_drift"] is True
    assert report.loc["petal_length", "drifted"] and report.loc["sepal_width", "drifted"]
    assert not report.loc["petal_width", "drifted"]
    # the agent's figures are scipy's on the same rows (traffic of the window vs reference)
    reference = dep.reference()
    for feature in ("petal_length", "sepal_length"):
        expected = ks_2samp(reference[feature], traffic[feature])
        assert report.loc[feature, "ks_stat"] == pytest.approx(expected.statistic, abs=0.01)
    # a DataFrame passed from the notebook is compared here, exactly, with the same result
    local = dep.drift(shifted_rows[list(X_test.columns)]).set_index("feature")
    assert local.loc["petal_length", "ks_stat"] == pytest.approx(
        ks_2samp(reference["petal_length"], shifted_rows["petal_length"]).statistic, rel=1e-9
    )
    with pytest.raises(InvalidArgument):
        dep.drift("not a frame")


def test_drift_needs_enough_traffic_and_says_so(module_home, iris, tree) -> None:
    _, X_test, _, _ = iris
    dep = nbserve.deploy(tree, "quiet", X_test, progress=False)
    with pytest.raises(InvalidArgument, match="drift needs at least"):
        dep.drift(window="10m")
    assert dep.summary()["drift"] == {"drifted": None, "share": None, "features": 0, "rows": 0}
    assert dep.plot_latency() is not None  # an empty window still draws a figure
    dep.stop()


def _png_has_content(fig) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    extrema = image.getextrema()
    assert image.size[0] > 300 and extrema[0] < 100, "the figure is blank"
    assert len(set(image.getdata())) > 20, "the figure has almost no detail"


def test_every_figure_renders_to_a_non_empty_png(drifting, iris, tmp_path) -> None:
    dep = drifting
    _, X_test, _, _ = iris
    figures = {
        "latency": dep.plot_latency("10m"),
        "drift_traffic": dep.plot_drift(window="10m"),
        "drift_frame": dep.plot_drift(_shifted(X_test)),
        "history": dep.plot_history(),
    }
    for name, fig in figures.items():
        _png_has_content(fig)
        fig.savefig(tmp_path / f"{name}.png")


def test_dashboard_refreshes_in_the_background_and_stops_when_closed(drifting) -> None:
    import threading

    dash = drifting.dashboard(refresh=0.5, window="10m")
    deadline = time.monotonic() + 60
    while dash.updates < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dash.updates >= 3, dash.last_error
    header = dash.header.value
    assert "p50" in header and "drifty" in header and ("DRIFT" in header or "no drift" in header)
    assert len(dash.latency_image.value) > 5_000 and len(dash.drift_image.value) > 5_000
    thread_name = f"nbserve-dashboard-{drifting.name}"
    assert any(t.name == thread_name for t in threading.enumerate())
    dash.close()
    dash._thread.join(timeout=5)
    assert not dash.running
    stopped_at = dash.updates
    time.sleep(1.2)
    assert dash.updates == stopped_at


def test_watch_magic_returns_a_live_dashboard(drifting) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "nbserve")
        dash = shell.run_line_magic("deploy", "--watch drifty --window 5m")
        assert dash.window == "5m" and dash.running
        dash.close()
        with pytest.raises(UsageError, match="no deployment named"):
            shell.run_line_magic("deploy", "--watch ghost")
    finally:
        InteractiveShell.clear_instance()
