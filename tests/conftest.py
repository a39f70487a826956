"""Shared fixtures: real agents in temporary homes, real models, and a leak check.

Every agent a test starts lives in its own ``NBSERVE_HOME``; when the fixture ends, the
agent is stopped and the test fails if any process that belongs to that home (the
agent, a ``bentoml serve``, a circus worker) is still alive.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports bentoml: no telemetry, no online resolution, and the
# client's own BentoML store in a temporary place rather than ~/bentoml.
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ["UV_OFFLINE"] = "1"
os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="nbserve-test-bentoml-"))

import psutil  # noqa: E402
import pytest  # noqa: E402

from nbserve._config import Home  # noqa: E402

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def home_processes(home: Home) -> list[psutil.Process]:
    """Live processes that belong to this home: its agent and every serving process."""
    found = []
    marker = str(home.root)
    for proc in psutil.process_iter(["cmdline", "environ", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = proc.info.get("environ") or {}
            cmdline = " ".join(proc.info.get("cmdline") or [])
        except psutil.Error:
            continue
        if env.get("BENTOML_HOME", "").startswith(marker) or f"--home {marker}" in cmdline:
            found.append(proc)
    return found


def assert_no_leftovers(home: Home) -> None:
    left = home_processes(home)
    details = []
    for proc in left:
        try:
            details.append(f"{proc.pid}: {' '.join(proc.cmdline())}")
        except psutil.Error:
            continue
    for proc in left:  # do not let one failure leak into the next tests
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not details, "processes left behind:\n" + "\n".join(details)


@pytest.fixture
def fresh_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A new NBSERVE_HOME (no agent yet) for one test; leftovers fail the test."""
    home = Home.resolve(tmp_path_factory.mktemp("nbhome"))
    monkeypatch.setenv("NBSERVE_HOME", str(home.root))
    _forget_clients()
    yield home
    from nbserve._local import stop_agent

    stop_agent(home)
    _forget_clients()
    assert_no_leftovers(home)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """One NBSERVE_HOME with a running agent for a whole test module."""
    from nbserve._local import start_agent, stop_agent

    home = Home.resolve(tmp_path_factory.mktemp("nbhome"))
    with nbserve_home(home.root):
        start_agent(home)
        yield home
        stop_agent(home)
    assert_no_leftovers(home)


@contextlib.contextmanager
def nbserve_home(root: Path) -> Iterator[None]:
    """NBSERVE_HOME set to ``root`` (and no cached clients) for a block, restored after."""
    previous = os.environ.get("NBSERVE_HOME")
    os.environ["NBSERVE_HOME"] = str(root)
    _forget_clients()
    try:
        yield
    finally:
        _forget_clients()
        if previous is None:
            os.environ.pop("NBSERVE_HOME", None)
        else:
            os.environ["NBSERVE_HOME"] = previous


def _forget_clients() -> None:
    from nbserve import _connection

    for client in _connection._clients.values():
        client.close()
    _connection._clients.clear()
    _connection._local_agents.clear()


@pytest.fixture(scope="session")
def iris() -> tuple:
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = IRIS_COLUMNS
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    return (
        X_train.reset_index(drop=True),
        X_test.reset_index(drop=True),
        pd.Series(y_train).reset_index(drop=True),
        pd.Series(y_test).reset_index(drop=True),
    )


@pytest.fixture(scope="session")
def forest(iris: tuple):
    from sklearn.ensemble import RandomForestClassifier

    X_train, _, y_train, _ = iris
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(X_train, y_train)


@pytest.fixture(scope="session")
def tree(iris: tuple):
    """A model that predicts differently from ``forest`` on some rows."""
    from sklearn.tree import DecisionTreeClassifier

    X_train, _, y_train, _ = iris
    return DecisionTreeClassifier(max_depth=1, random_state=0).fit(X_train, y_train)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
