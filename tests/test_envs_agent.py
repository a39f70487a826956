"""An agent whose own environment lacks a framework the kernel has: real uv, a real second
environment, a real agent started from it.

The kernel (this test process) has LightGBM. A second environment is built for the AGENT with
uv, once per test session: nbserve's runtime dependencies (from pyproject.toml, at the kernel's
versions) and this checkout on its path, as an editable install would put it, but no LightGBM.
The agent is started from that environment's Python (``python -m nbserve agent start``, as a
user of that environment would), and a LightGBM Booster trained here is deployed to it: the
version gets an environment of its own (NBSERVE_HOME/envs/<key>) and answers what the notebook
answers. Skipped, with the reason, where no index answers uv. ``fresh_home`` stops the agent
at the end and fails the test if any process of that home is left.

Wall time on the project's 2-core VM (busy): 35-46 s with uv's cache warm (the agent's
environment ~5 s, mostly linking 162 packages; most of the rest is the agent's and the server's
imports compiling from source, as uv writes no bytecode and the VM sets PYTHONDONTWRITEBYTECODE,
see bench/README.md "Per-version environments"), ~66 s with an empty ``UV_CACHE_DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

import nbserve
from nbserve import admin
from nbserve._config import Home

from .conftest import home_processes, repo_root

MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
NOT_IN_AGENT = {"lightgbm", "nbserve"}  # the framework under test; nbserve comes from the checkout


def _uv_env() -> dict[str, str]:
    # conftest sets UV_OFFLINE=1 for Bento builds; this environment needs the index (or the
    # cache, asked for explicitly with --offline). Never a downloaded Python, never our venv.
    env = {k: v for k, v in os.environ.items() if k not in ("UV_OFFLINE", "VIRTUAL_ENV")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def _uv(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    from uv import find_uv_bin

    return subprocess.run([find_uv_bin(), *args], input=stdin, capture_output=True, text=True, timeout=600,
                          env=_uv_env(), stdin=None if stdin is not None else subprocess.DEVNULL)


def _index_answers() -> str | None:
    """Why the index cannot be used (None when it can): uv resolves LightGBM without installing."""
    done = _uv("pip", "compile", "--quiet", "--no-header", "--python-version", MINOR, "-",
               stdin=f"lightgbm=={metadata.version('lightgbm')}\n")
    return None if done.returncode == 0 else done.stderr.strip()[-300:]


def _kernel_constraints() -> str:
    """Every distribution of the kernel at its version, so the agent's environment matches the
    kernel's in all it shares (bentoml above all) and uv's cache already holds the wheels."""
    pins = {d.metadata["Name"].lower(): f"{d.metadata['Name']}=={d.version}"
            for d in metadata.distributions() if d.metadata["Name"]}
    return "\n".join(pin for name, pin in sorted(pins.items()) if name not in NOT_IN_AGENT) + "\n"


@pytest.fixture(scope="session")
def agent_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of an environment with nbserve and its dependencies but no LightGBM, built once
    per session. Runtime dependencies only: the checkout goes on its path through a .pth file,
    which is what hatchling's editable install writes, without building the editable wheel
    (about 3 s: an isolated hatchling + jupyter-builder build, and the panel if it is not built)."""
    why = _index_answers()
    if why:
        pytest.skip(f"no package index answers uv here: {why}")
    root = tmp_path_factory.mktemp("agent-env")
    venv = root / "venv"
    done = _uv("venv", "--quiet", "--python", sys.executable, "--python-preference", "system", str(venv))
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    requirements = root / "requirements.txt"
    requirements.write_text("\n".join(tomllib.loads((repo_root() / "pyproject.toml").read_text())
                                      ["project"]["dependencies"]) + "\n")
    constraints = root / "constraints.txt"
    constraints.write_text(_kernel_constraints())
    install = ["pip", "install", "--quiet", "--python", str(python), "-r", str(requirements), "-c", str(constraints)]
    # uv's cache first (no index round trips: a second session takes ~3 s), the index if it lacks a wheel
    done = _uv(*install, "--offline")
    if done.returncode != 0:
        done = _uv(*install)
    assert done.returncode == 0, f"the agent's environment could not be built:\n{done.stderr[-3000:]}"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_nbserve_checkout.pth").write_text(f"{repo_root()}\n")
    return python


def _agent_environ(python: Path) -> dict[str, str]:
    """What a shell with that environment activated passes to ``nbserve agent start``."""
    venv = python.parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def test_an_agent_without_lightgbm_serves_a_booster_from_a_kernel_that_has_it(fresh_home: Home,
                                                                              agent_python: Path, iris):
    import lightgbm as lgb

    environ = _agent_environ(agent_python)
    probe = subprocess.run(
        [str(agent_python), "-c", "import importlib.util as u, json, nbserve; "
         "print(json.dumps([u.find_spec('lightgbm') is not None, nbserve.__file__]))"],
        capture_output=True, text=True, env=environ, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == f'[false, "{repo_root() / "nbserve" / "__init__.py"}"]', probe.stdout

    started = subprocess.run([str(agent_python), "-m", "nbserve", "agent", "start", "--home", str(fresh_home.root)],
                             capture_output=True, text=True, env=environ, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    from nbserve._local import find_agent

    agent = find_agent(fresh_home)
    assert agent is not None
    assert psutil.Process(agent.pid).cmdline()[0] == str(agent_python)  # the agent runs from that Python

    X_train, X_test, y_train, _ = iris
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(X_train, y_train), num_boost_round=5)
    # native: the Booster itself, loaded by LightGBM in the version's own environment (compiled, it
    # would not need LightGBM to serve; tests/test_runtimes.py covers that)
    dep = nbserve.deploy(booster, "lgbm", X_test, progress=False, runtime="native")
    assert find_agent(fresh_home).pid == agent.pid  # deployed to that agent, not one the kernel started

    events = dep.events()
    # the agent's own verdict: LightGBM and what only it needs (narwhals) are missing where it runs;
    # the set is the version's pins with their requirements at the kernel's versions
    prepared = [data for kind, data in zip(events["kind"], events["data"]) if kind == "environment_preparing"]
    assert len(prepared) == 1, prepared
    resolved = dep.metadata(1)["provenance"]["resolved"]
    assert prepared[0]["packages"] == sorted(resolved, key=str.lower)
    assert f"lightgbm=={lgb.__version__} (not installed)" in prepared[0]["differs"], prepared
    assert {d.split(" ")[0] for d in prepared[0]["differs"]} <= set(resolved), prepared
    assert f"scipy=={metadata.version('scipy')}" in resolved  # LightGBM's requirement, as the kernel had it
    version = dep.versions[-1]
    key = version["environment"]
    assert key not in (None, "agent"), version
    listed = {e["environment"]: e for e in admin.environments()}
    assert f"lightgbm=={lgb.__version__}" in listed[key]["packages"]
    assert [(v["deployment"], v["version"], v["running"]) for v in listed[key]["versions"]] == [("lgbm", 1, True)]
    # every serving process (bentoml serve and its workers) runs from the version's environment
    servers = [p.cmdline() for p in home_processes(fresh_home) if p.pid != agent.pid]
    assert servers and {c[0] for c in servers} == {str(Path(listed[key]["path"]) / "bin" / "python")}, servers

    expected = booster.predict(X_test)
    np.testing.assert_array_equal(dep.predict(X_test), expected)
    response = httpx.post(f"{dep.url}/predict", json={"data": X_test.to_dict(orient="records")}, timeout=30,
                          trust_env=False)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.asarray(response.json()), expected)
