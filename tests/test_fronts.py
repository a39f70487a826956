"""The thin fronts (%deploy, the nbserve CLI) and more kinds of model, on one real agent."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

import nbserve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shell(module_home):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nbserve")
    yield ip
    InteractiveShell.clear_instance()


def cli(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NBSERVE_HOME=str(home.root))
    return subprocess.run([sys.executable, "-m", "nbserve", *args], env=env, capture_output=True,
                          text=True, timeout=120)


# -- %deploy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("model", "--name is required"),
        ("model --name iris", "--sample is required"),
        ("--name iris --sample X", "name the model to deploy"),
        ("nothere --name iris --sample X", "'nothere' is not defined"),
        ("--list --history iris", "not allowed with argument"),
        ("--rollback iris --to notanumber", "invalid int value"),
        ("'unbalanced", "No closing quotation"),
        ("model --name iris --sample X --max-batch-size many", "invalid int value"),
        ("model --name iris --sample X --runtime tensorrt", "argument --runtime: invalid choice: 'tensorrt'"),
        ("model --name iris --sample X --engine k8s", "argument --engine: invalid choice: 'k8s'"),
        ("model --name iris --sample X --no-autoscaling --max-replicas 3", "contradict each other"),
    ],
)
def test_bad_magic_arguments_raise_usage_error_with_the_usage(shell, line, message):
    shell.user_ns.update(model=object(), X=None)
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("deploy", line)
    assert message in str(info.value)
    assert "%deploy MODEL --name NAME --sample SAMPLE" in str(info.value) or "hint" not in str(info.value)


def test_magic_help_prints_the_usage(shell, capsys):
    shell.run_line_magic("deploy", "--help")
    assert "%deploy --rollback NAME [--to N]" in capsys.readouterr().out


def test_nbserve_errors_become_usage_errors_not_tracebacks(shell, iris):
    _, X_test, _, _ = iris
    shell.user_ns.update(weights={"a": 1}, X=X_test)
    with pytest.raises(UsageError, match="has no predict"):
        shell.run_line_magic("deploy", "weights --name magic-iris --sample X")
    with pytest.raises(UsageError, match="no deployment named 'ghost'"):
        shell.run_line_magic("deploy", "--history ghost")
    # Ray's flags on an agent that has no Ray cluster: its words, not a traceback
    from sklearn.dummy import DummyClassifier

    shell.user_ns.update(model=DummyClassifier().fit(X_test, [0] * len(X_test)))
    with pytest.raises(UsageError, match="(?s)no 'ray' engine.*--ray-address"):
        shell.run_line_magic("deploy", "model --name magic-ray --sample X --engine ray")
    with pytest.raises(UsageError, match="autoscaling needs the Ray engine"):
        shell.run_line_magic("deploy", "model --name magic-ray --sample X --min-replicas 0 --max-replicas 3")
    assert "magic-ray" not in [d.name for d in nbserve.deployments()], "refused before anything exists"
    with pytest.raises(UsageError, match="memory or cpu caps"):  # a shared server's are not a version's own
        shell.run_line_magic("deploy", "model --name magic-shared --sample X --shared --memory 512M")
    assert "magic-shared" not in [d.name for d in nbserve.deployments()]


def test_magic_shared_runs_the_version_in_a_shared_model_server(shell, iris, tree):
    _, X_test, _, _ = iris
    shell.user_ns.update(model=tree, X=X_test)
    dep = shell.run_line_magic("deploy", "model --name magic-shared --sample X --shared")
    assert dep.history().loc[1, "engine"] == "shared"
    np.testing.assert_array_equal(dep.predict(X_test), tree.predict(X_test))
    dep.stop()


def test_magic_deploys_lists_rolls_back_and_stops(shell, iris, forest, tree):
    _, X_test, _, _ = iris
    shell.user_ns.update(model=forest, other=tree, X_test=X_test)
    dep = shell.run_line_magic("deploy", "model --name magic-iris --sample X_test --description 'first'")
    assert isinstance(dep, nbserve.Deployment) and dep.version == 1
    html = dep._repr_html_()
    assert dep.url in html and "curl -X POST" in html and "SyncHTTPClient" in html
    shell.run_line_magic("deploy", "other --name magic-iris --sample X_test[:20]")
    listing = shell.run_line_magic("deploy", "--list")
    assert isinstance(listing, pd.DataFrame)
    row = listing.set_index("name").loc["magic-iris"]
    assert row["version"] == 2 and row["status"] == "serving"
    history = shell.run_line_magic("deploy", "--history magic-iris")
    assert list(history.index) == [1, 2] and history.loc[1, "description"] == "first"
    rolled = shell.run_line_magic("deploy", "--rollback magic-iris")
    assert rolled.version == 1
    np.testing.assert_array_equal(rolled.predict(X_test), forest.predict(X_test))
    assert shell.run_line_magic("deploy", "--rollback magic-iris --to 2").version == 2
    stopped = shell.run_line_magic("deploy", "--stop magic-iris")
    assert stopped.status == "stopped"
    assert shell.run_line_magic("deploy", "--start magic-iris").status == "serving"


def test_magic_deploys_a_function_and_a_named_method(shell, iris):
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, _, _ = iris
    shell.run_cell("def twice(frame):\n    return frame['sepal_length'] * 2")  # a notebook function
    shell.user_ns.update(scaler=StandardScaler().fit(X_train), X_test=X_test)
    dep = shell.run_line_magic("deploy", "twice --name magic-fn --sample X_test")
    np.testing.assert_allclose(dep.predict(X_test), X_test["sepal_length"] * 2)
    dep = shell.run_line_magic("deploy", "scaler --name magic-scaler --sample X_test --method transform")
    np.testing.assert_allclose(dep.predict(X_test, endpoint="transform"),
                               shell.user_ns["scaler"].transform(X_test), rtol=1e-6)
    with pytest.raises(UsageError, match="has no nope"):
        shell.run_line_magic("deploy", "scaler --name magic-scaler --sample X_test --methods transform,nope")


# -- the CLI ---------------------------------------------------------------------------


def test_cli_lists_shows_history_rolls_back_and_shows_logs(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(forest, "cli-iris", X_test, progress=False)
    nbserve.deploy(tree, "cli-iris", X_test, progress=False)

    listing = cli("list", home=module_home)
    assert listing.returncode == 0
    assert "cli-iris" in listing.stdout and "serving" in listing.stdout

    history = cli("history", "cli-iris", home=module_home)
    assert history.returncode == 0 and "DecisionTreeClassifier" in history.stdout
    assert "runtime" in history.stdout and "onnx" in history.stdout  # the tree serves compiled

    rolled = cli("rollback", "cli-iris", "--to", "1", home=module_home)
    assert rolled.returncode == 0 and "v1 is live" in rolled.stdout
    assert nbserve.get("cli-iris").version == 1

    logs = cli("logs", "cli-iris", "--version", "1", home=module_home)
    assert logs.returncode == 0 and "Starting production HTTP BentoServer" in logs.stdout

    events = cli("events", "cli-iris", home=module_home)
    assert "rollback" in events.stdout

    status = cli("agent", "status", home=module_home)
    assert status.returncode == 0 and '"pid"' in status.stdout


def test_batching_from_the_magic_and_the_cli(shell, module_home, iris, forest):
    _, X_test, _, _ = iris
    shell.user_ns.update(model=forest, X_test=X_test)
    dep = shell.run_line_magic("deploy", "model --name magic-batched --sample X_test --batching --max-latency-ms 3000")
    assert nbserve.top().loc["magic-batched", "batching"] == {"max_batch_size": 100, "max_latency_ms": 3000}
    assert "x-nbserve-batch-rows" in httpx.post(f"{dep.url}/predict", json={"data": X_test[:2].to_dict("records")},
                                                 trust_env=False).headers
    top = cli("top", "--once", home=module_home)
    assert top.returncode == 0 and "100/3000ms" in top.stdout, top.stdout
    off = cli("scale", "magic-batched", "--no-batching", home=module_home)
    assert off.returncode == 0, off.stderr
    assert nbserve.top().loc["magic-batched", "batching"] is None
    bad = cli("scale", "magic-batched", "--no-batching", "--max-batch-size", "8", home=module_home)
    assert bad.returncode == 1 and "need batching on" in bad.stderr and "Traceback" not in bad.stderr


def test_agent_start_passes_run_options_to_the_agent_it_starts(tmp_path):
    import psutil

    from nbserve._config import Home

    home = Home.resolve(tmp_path / "home")
    started = cli("agent", "start", "--home", str(home.root), "--memory-budget", "2G", "--max-samples", "500",
                  home=home)
    try:
        assert started.returncode == 0, started.stderr
        pid = int(started.stdout.split("pid ")[1].split()[0])
        command = psutil.Process(pid).cmdline()
        assert command[command.index("--memory-budget") + 1] == "2G", command
        assert command[command.index("--max-samples") + 1] == "500", command
        again = cli("agent", "start", "--home", str(home.root), "--memory-budget", "4G", home=home)
        assert again.returncode == 1 and "already runs" in again.stderr, again.stderr
    finally:
        assert cli("agent", "stop", "--home", str(home.root), home=home).returncode == 0


def test_cli_errors_are_one_line_with_a_hint_and_exit_1(module_home):
    result = cli("rollback", "ghost", home=module_home)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no deployment named 'ghost'")
    assert "Traceback" not in result.stderr
    bad = cli("rollback", home=module_home)
    assert bad.returncode == 2 and "usage:" in bad.stderr


# -- more kinds of model ---------------------------------------------------------------


def test_a_pipeline_with_categorical_preprocessing(module_home):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "tenure": rng.integers(1, 72, 300),
        "charges": rng.normal(70, 20, 300).round(2),
        "contract": rng.choice(["monthly", "yearly", "two-year"], 300),
    })
    churned = ((frame["contract"] == "monthly") & (frame["tenure"] < 24)).astype(int)
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["contract"]), (StandardScaler(), ["tenure", "charges"])),
        LogisticRegression(),
    ).fit(frame, churned)
    dep = nbserve.deploy(model, "churn", frame.head(50), progress=False)
    np.testing.assert_array_equal(dep.predict(frame.tail(40)), model.predict(frame.tail(40)))
    # a number where a string belongs is a 422 that names the column
    bad = httpx.post(f"{dep.url}/predict", json={"data": [{"tenure": 3, "charges": 50.0, "contract": 7}]},
                     trust_env=False)
    assert bad.status_code == 422 and "contract" in bad.json()["type_errors"]
    # ints sent as whole floats are accepted for an int column; 2.5 is not
    ok = httpx.post(f"{dep.url}/predict", json={"data": [{"tenure": 3.0, "charges": 50, "contract": "monthly"}]},
                    trust_env=False)
    assert ok.status_code == 200
    frac = httpx.post(f"{dep.url}/predict", json={"data": [{"tenure": 2.5, "charges": 50, "contract": "monthly"}]},
                      trust_env=False)
    assert frac.status_code == 422 and "tenure" in frac.json()["type_errors"]


def test_a_notebook_defined_class_and_positional_arrays(module_home):
    class Threshold:  # a class from a notebook cell: served through bentoml.picklable_model
        def __init__(self, cut: float) -> None:
            self.cut = cut

        def predict(self, X):
            return (np.asarray(X)[:, 0] > self.cut).astype(int)

    Threshold.__module__ = "__main__"
    X = np.array([[0.1, 5.0], [0.9, 1.0], [0.5, 2.0]])
    dep = nbserve.deploy(Threshold(0.4), "threshold", X, progress=False)
    assert dep.schema["positional"] is True
    np.testing.assert_array_equal(dep.predict(X), [0, 1, 1])
    # lists of lists work for positional models; so do records with the x0.. names
    r = httpx.post(f"{dep.url}/predict", json={"data": [[0.7, 1.0]]}, trust_env=False)
    assert r.status_code == 200 and r.json() == [1]
    r = httpx.post(f"{dep.url}/predict", json={"data": [{"x0": 0.2, "x1": 1.0}]}, trust_env=False)
    assert r.status_code == 200 and r.json() == [0]


def test_lightgbm_booster_and_sklearn_api_models(module_home, iris):
    import lightgbm as lgb

    X_train, X_test, y_train, _ = iris
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X_train, y_train), num_boost_round=5)
    dep = nbserve.deploy(booster, "lgb-booster", X_test, progress=False)
    assert dep.versions[-1]["metadata"]["model"]["flavor"] == "lightgbm"
    np.testing.assert_allclose(dep.predict(X_test), booster.predict(X_test), rtol=1e-6)

    classifier = lgb.LGBMClassifier(n_estimators=5, verbose=-1, n_jobs=1).fit(X_train, y_train)
    dep = nbserve.deploy(classifier, "lgb-sklearn", X_test, progress=False)
    assert dep.versions[-1]["metadata"]["model"]["flavor"] == "sklearn"
    assert any(p.startswith("lightgbm==") for p in dep.versions[-1]["metadata"]["provenance"]["packages"])
    np.testing.assert_array_equal(dep.predict(X_test), classifier.predict(X_test))
