"""Each version runs in the environment it was built for: real uv installs, real servers.

The kernel here has scikit-learn 1.9; a version pinned (``packages=``) to scikit-learn 1.5.2 gets
an environment of its own under NBSERVE_HOME/envs, built by uv from the index the machine is set
up for (uv's own cache makes a second run cheap), and serves beside a version in the agent's own
environment. Skipped, with the reason, where no index answers.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

import nbserve
from nbserve import admin
from nbserve.errors import DeployFailed, InvalidArgument

OLD_SKLEARN = "1.5.2"
TEXTS = ["great pasta", "cold soup", "fine"]


class Reporter:
    """Answers the length of each text (the same in every environment, so parity holds) and,
    from a second method, the scikit-learn of the environment it runs in."""

    def predict(self, texts):
        return [len(t) for t in texts]

    def versions(self, texts):
        import sklearn

        return [sklearn.__version__ for _ in texts]


def _index_answers() -> str | None:
    """Why the index cannot be used (None when it can): uv resolves the pin without installing."""
    from uv import find_uv_bin

    done = subprocess.run([find_uv_bin(), "pip", "compile", "--quiet", "--no-header", "--python-version",
                           f"{sys.version_info.major}.{sys.version_info.minor}", "-"],
                          input=f"scikit-learn=={OLD_SKLEARN}\n", capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in __import__("os").environ.items() if k != "UV_OFFLINE"})
    return None if done.returncode == 0 else done.stderr.strip()[-300:]


@pytest.fixture(scope="module")
def index_or_skip():
    why = _index_answers()
    if why:
        pytest.skip(f"no package index answers uv here: {why}")


def _answers(url: str, path: str) -> list:
    response = httpx.post(f"{url}/{path}", json={"data": TEXTS}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_malformed_pin_is_refused_before_anything_is_built(module_home):
    with pytest.raises(InvalidArgument, match="exact pins"):
        nbserve.deploy(Reporter(), "pins", TEXTS, methods=["predict", "versions"], packages=["scikit-learn"],
                       progress=False)
    assert "pins" not in [d.name for d in nbserve.deployments()]


def test_versions_pinned_to_other_packages_run_side_by_side_each_in_its_own_environment(module_home,
                                                                                         index_or_skip):
    import sklearn

    v1 = nbserve.deploy(Reporter(), "side", TEXTS, methods=["predict", "versions"], progress=False)
    assert _answers(v1.url, "versions") == [sklearn.__version__] * 3
    assert v1.versions[0]["environment"] == "agent"  # the agent has exactly these pins: no cost

    dep = nbserve.deploy(Reporter(), "side", TEXTS, methods=["predict", "versions"], progress=False,
                         packages=[f"scikit-learn=={OLD_SKLEARN}"], canary=50)
    v2 = dep.versions[1]
    assert v2["number"] == 2 and v2["status"] == "canary"
    key = v2["environment"]
    assert key not in (None, "agent")
    # each version answers from its own environment, one beside the other
    assert _answers(f"{dep.url}/v/2", "versions") == [OLD_SKLEARN] * 3
    assert _answers(f"{dep.url}/v/1", "versions") == [sklearn.__version__] * 3
    assert _answers(dep.url, "predict") == [11, 9, 4]
    kinds = list(dep.events()["kind"])
    assert "environment_preparing" in kinds and "environment_ready" in kinds, kinds
    assert dep.history().loc[2, "environment"] == key

    listed = {e["environment"]: e for e in admin.environments()}
    assert listed[key]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"scikit-learn=={OLD_SKLEARN}" in listed[key]["packages"]
    assert [(v["deployment"], v["version"], v["running"]) for v in listed[key]["versions"]] == [("side", 2, True)]
    assert listed[key]["bytes"] is not None

    # the same set again: the environment is reused, not built again
    dep.promote()
    v3 = nbserve.deploy(Reporter(), "side", TEXTS, methods=["predict", "versions"], progress=False,
                        packages=[f"scikit-learn=={OLD_SKLEARN}"])
    assert v3.version == 3 and v3.versions[2]["environment"] == key
    v3_events = v3.events()
    assert "environment_preparing" not in list(v3_events[v3_events["version"] == 3]["kind"])
    assert _answers(v3.url, "versions") == [OLD_SKLEARN] * 3

    # a restart for more workers starts from the same environment, at once
    scaled = v3.scale(workers=2)
    assert scaled.versions[2]["environment"] == key and _answers(scaled.url, "versions") == [OLD_SKLEARN] * 3

    # prune keeps what a version needs (v2 and v3 could be rolled back to), and says so
    pruned = admin.prune_environments()
    assert key in [e["environment"] for e in pruned["kept"]] and pruned["removed"] == []
    top = nbserve.top()
    assert top.loc["side", "environments"] == [key]

    # rolling back to v1 serves from the agent's own environment again
    back = v3.rollback(to=1)
    assert _answers(back.url, "versions") == [sklearn.__version__] * 3


def test_shared_versions_share_a_server_per_environment_each_run_by_its_own_python(module_home, index_or_skip):
    """A shared model server holds the versions of one environment: a version pinned to other
    packages gets a shared server of its own, started with its environment's Python."""
    import sklearn

    from nbserve._agent._shared_engine import SHARED_ENV

    here = nbserve.deploy(Reporter(), "shared-here", TEXTS, methods=["predict", "versions"], engine="shared",
                          progress=False)
    here_too = nbserve.deploy(Reporter(), "shared-here-too", TEXTS, methods=["predict", "versions"],
                              engine="shared", progress=False)
    old = nbserve.deploy(Reporter(), "shared-old", TEXTS, methods=["predict", "versions"], engine="shared",
                         packages=[f"scikit-learn=={OLD_SKLEARN}"], progress=False)
    assert _answers(here.url, "versions") == _answers(here_too.url, "versions") == [sklearn.__version__] * 3
    assert _answers(old.url, "versions") == [OLD_SKLEARN] * 3
    key = old.versions[0]["environment"]
    assert key not in (None, "agent") and here.versions[0]["environment"] == "agent"
    top = nbserve.top()
    servers = {name: [m["server"] for m in top.loc[name, "models"]] for name in ("shared-here", "shared-here-too",
                                                                                   "shared-old")}
    assert servers == {"shared-here": ["agent-w1"], "shared-here-too": ["agent-w1"], "shared-old": [f"{key}-w1"]}
    import psutil

    pythons = set()
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(SHARED_ENV) == f"{key}-w1":
                pythons.add(proc.cmdline()[0])  # the venv's python (exe() would resolve its symlink)
        except psutil.Error:
            continue
    assert pythons and all(key in path for path in pythons), pythons
    for dep in (here, here_too, old):
        dep.stop()


def test_a_pin_that_cannot_be_installed_fails_the_deploy_and_the_live_version_keeps_serving(module_home,
                                                                                             index_or_skip):
    live = nbserve.deploy(Reporter(), "nopin", TEXTS, methods=["predict", "versions"], progress=False)
    with pytest.raises(DeployFailed) as caught:
        nbserve.deploy(Reporter(), "nopin", TEXTS, methods=["predict", "versions"], progress=False,
                       packages=["scikit-learn==0.0.424242"])
    message = caught.value.message
    assert "could not be built" in message and "scikit-learn==0.0.424242" in message, message
    assert "Traceback" not in message and len(message) < 1200
    again = nbserve.get("nopin")
    assert again.version == live.version == 1
    assert _answers(again.url, "predict") == [11, 9, 4]
    # nothing half-built is left behind
    assert all(not e.get("incomplete") for e in admin.environments())


def test_offline_with_an_empty_cache_says_what_is_missing(fresh_home, tmp_path, monkeypatch):
    from nbserve._local import start_agent

    monkeypatch.setenv("NBSERVE_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))
    start_agent(fresh_home)
    with pytest.raises(DeployFailed) as caught:
        nbserve.deploy(Reporter(), "offline", TEXTS, methods=["predict", "versions"], progress=False,
                       packages=[f"scikit-learn=={OLD_SKLEARN}"])
    message = caught.value.message
    assert "could not be built" in message and "scikit-learn" in message, message
    assert "offline" in (caught.value.hint or "") + message


def test_a_versions_spec_is_its_python_and_exact_pins_and_the_agent_runs_what_it_matches():
    from nbserve._agent._envs import EnvSpec, installer_reason, own_mismatches
    from nbserve._requirements import with_packages

    spec = EnvSpec.of_version({"provenance": {"python": "3.11.7", "packages": ["Scikit_Learn==1.5.2", "numpy==2.0"]}})
    assert spec.python == "3.11" and spec.packages == ("numpy==2.0", "Scikit_Learn==1.5.2")
    assert spec.key == EnvSpec("3.11", ("numpy==2.0", "Scikit_Learn==1.5.2")).key != EnvSpec("3.11", ()).key
    assert EnvSpec.of_version({"provenance": {}}) is None  # a version from before: where the agent runs
    import numpy

    same = EnvSpec(f"{sys.version_info.major}.{sys.version_info.minor}", (f"numpy=={numpy.__version__}",))
    assert own_mismatches(same) == []
    assert own_mismatches(EnvSpec("2.7", ("no-such-dist==1",))) == ["python 2.7", "no-such-dist==1 (not installed)"]
    assert with_packages(["numpy==2.0", "scikit-learn==1.9.1"], ["scikit_learn==1.5.2", "lightgbm==4.6.0"]) == [
        "lightgbm==4.6.0", "numpy==2.0", "scikit_learn==1.5.2"]
    stderr = ("Using Python 3.11.7\n  × No solution found when resolving dependencies:\n"
              "  ╰─▶ Because there is no version of scikit-learn==0.0.1 and you require scikit-learn==0.0.1, "
              "we can conclude that your requirements are unsatisfiable.\n")
    assert installer_reason(stderr).startswith("× No solution found") and "Using Python" not in installer_reason(stderr)


def test_a_python_the_host_lacks_is_refused_by_name(tmp_path):
    import asyncio

    from nbserve._agent._envs import Environments, EnvSpec
    from nbserve._config import Home

    environments = Environments(Home.resolve(tmp_path))
    with pytest.raises(DeployFailed) as caught:  # EnvironmentFailed; no Python is ever downloaded
        asyncio.run(environments.prepare(EnvSpec("3.7", ("numpy==1.0",))))
    assert "Python 3.7" in caught.value.message and "never runs a pickle under another Python" in caught.value.hint
    assert not any((tmp_path / "envs").iterdir())  # nothing half-built kept
