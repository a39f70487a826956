"""Scheduled notebook runs against a real agent: real papermill runs of a real notebook.

One agent for the module; the runs are reused across assertions to keep the file short.
"3 a.m." is fired at once through ``POST /v1/schedules/tick``. The cron expressions are
read in a time zone where it is mid-afternoon now, so the agent's own clock never fires
them while the tests run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nbformat
import psutil
import pytest

import nbserve
from nbserve import errors
from nbserve._agent._schedule_rules import latest_due, next_due
from nbserve._agent._run_process import processes_of_run
from nbserve._schedules import get_schedule, schedule, schedules

from .conftest import repo_root

pytestmark = pytest.mark.slow

NOTEBOOK = repo_root() / "notebooks" / "03-scheduled-retrain.ipynb"
CRON = "0 3 * * *"
STATE: dict = {}


def _afternoon_zone() -> str:
    """A fixed-offset zone where it is about 15:00 now: 03:00 is half a day away."""
    offset = (15 - dt.datetime.now(dt.UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return f"Etc/GMT{-offset:+d}"


TZ = _afternoon_zone()


def _client():
    return nbserve.connect()


def _tick(now: str) -> list[dict]:
    return _client().post("/v1/schedules/tick", json={"now": now})


def _run_processes(home, run_id: int) -> list[psutil.Process]:
    return [p for p in processes_of_run(home, run_id) if p.pid]


def _tool_notebook(path: Path, source: str = "print('ran for', deployment_name)") -> Path:
    """A notebook as a tool writes it (``nbformat.v4.new_notebook()``): no kernelspec metadata."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("deployment_name = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)
    assert "kernelspec" not in nbformat.read(path, as_version=4).metadata
    return path


def _printed(executed_notebook: str) -> str:
    nb = nbformat.read(executed_notebook, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


# -- no runs --------------------------------------------------------------------------------


def test_add_list_pause_resume_remove(module_home, capsys):
    from nbserve._cli_schedule import main

    sched = schedule(NOTEBOOK, cron="30 2 * * 1-5", name="crud", params={"n_estimators": 5},
                     timezone="Europe/Paris", timeout=60, missed="skip")
    assert sched.notebook == str(NOTEBOOK.resolve()) and sched.deployment == "crud"
    assert sched.parameters == {"n_estimators": 5} and not sched.paused
    next_at = dt.datetime.fromisoformat(sched.next_run_at)
    local = next_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (2, 30) and local.weekday() < 5 and next_at > dt.datetime.now(dt.UTC)
    assert "crud" in [s.name for s in schedules()]
    assert "Europe/Paris" in sched._repr_html_() and "30 2 * * 1-5" in sched._repr_html_()

    assert sched.pause().paused and get_schedule("crud").paused
    assert not sched.resume().paused
    assert sched.runs().empty

    # the CLI: values parse as JSON when they can, strings otherwise
    assert main(["schedule", "add", str(NOTEBOOK), "--cron", "@daily", "--name", "crud",
                 "--schedule-name", "crud-cli", "-p", "n_estimators=7", "-p", "note=weekly run",
                 "--timezone", TZ, "--missed", "skip"]) == 0
    assert get_schedule("crud-cli").parameters == {"n_estimators": 7, "note": "weekly run"}
    assert main(["schedule", "list"]) == 0
    out = capsys.readouterr().out
    assert "crud-cli" in out and "@daily" in out
    assert main(["schedule", "pause", "crud-cli"]) == 0 and get_schedule("crud-cli").paused
    assert main(["schedule", "remove", "crud-cli"]) == 0
    assert main(["schedule", "runs", "crud-cli"]) == 1
    assert "no schedule named 'crud-cli'" in capsys.readouterr().err

    sched.remove()
    with pytest.raises(errors.NotFound, match="no schedule named 'crud'"):
        get_schedule("crud")


def test_bad_schedules_are_refused_with_a_clear_message(module_home, tmp_path):
    with pytest.raises(errors.InvalidArgument, match=r"invalid cron expression '0 3 \* \*'") as bad:
        schedule(NOTEBOOK, cron="0 3 * *", name="bad")
    assert bad.value.status == 400 and "five fields" in bad.value.hint
    with pytest.raises(errors.InvalidArgument, match="invalid cron expression '61 3 \\* \\* \\*'"):
        schedule(NOTEBOOK, cron="61 3 * * *", name="bad")
    with pytest.raises(errors.InvalidArgument, match="unknown time zone 'Mars/Olympus'"):
        schedule(NOTEBOOK, cron=CRON, name="bad", timezone="Mars/Olympus")
    with pytest.raises(errors.InvalidArgument, match="no notebook at"):
        schedule(tmp_path / "missing.ipynb", cron=CRON, name="bad")
    text = tmp_path / "notes.ipynb"
    text.write_text("not json")
    with pytest.raises(errors.InvalidArgument, match="is not a valid notebook"):
        schedule(text, cron=CRON, name="bad")
    with pytest.raises(errors.InvalidArgument, match="not a Python identifier"):
        schedule(NOTEBOOK, cron=CRON, name="bad", params={"n-trees": 3})
    with pytest.raises(errors.InvalidArgument, match="invalid deployment name"):
        schedule(NOTEBOOK, cron=CRON, name="Bad Name")
    with pytest.raises(errors.InvalidArgument, match="missed"):
        schedule(NOTEBOOK, cron=CRON, name="bad", missed="sometimes")
    # the REST answer itself: 4xx with the error body, and a relative path is refused there
    info = _client()
    response = httpx.post(f"{info.base_url}/v1/schedules", headers=info._http.headers, trust_env=False,
                          json={"name": "bad", "notebook": "train.ipynb", "cron": CRON})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "InvalidArgument"
    assert "must be absolute" in response.json()["error"]["message"]
    assert not [s for s in schedules() if s.name == "bad"]

    schedule(NOTEBOOK, cron=CRON, name="dup", timezone=TZ)
    with pytest.raises(errors.Conflict, match="a schedule named 'dup' exists"):
        schedule(NOTEBOOK, cron=CRON, name="dup")
    get_schedule("dup").remove()
    with pytest.raises(errors.NotFound):
        _client().post("/v1/schedules/nope/run")


# -- kernels ----------------------------------------------------------------------------------


def test_a_notebook_without_a_kernelspec_runs_with_the_kernel_chosen_at_add_time(module_home, tmp_path, capsys):
    from nbserve._cli_schedule import main

    notebook = _tool_notebook(tmp_path / "generated.ipynb")
    sched = schedule(notebook, cron=CRON, name="generated", timezone=TZ, timeout=120)
    run = sched.run_now(wait=True, timeout=120)  # before the fix: "No language found in notebook"
    assert run["status"] == "succeeded", run
    assert "ran for generated" in _printed(run["executed_notebook"])
    assert sched.kernel == "python3", "the default: the kernel of the agent's own Python"
    assert _client().get("/v1/schedules/generated")["kernel"] == "python3"

    # the CLI takes --kernel, and `schedule list` shows it (the last column)
    assert main(["schedule", "add", str(notebook), "--cron", CRON, "--name", "generated",
                 "--schedule-name", "generated-cli", "--kernel", "python3", "--timezone", TZ]) == 0
    assert "kernel python3" in capsys.readouterr().out
    assert main(["schedule", "list"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "KERNEL"
    assert {line.split()[0]: line.split()[-1] for line in lines} == {"generated": "python3", "generated-cli": "python3"}
    assert {s.name: s.kernel for s in schedules()} == {"generated": "python3", "generated-cli": "python3"}
    assert "python3" in get_schedule("generated-cli")._repr_html_()
    for name in ("generated", "generated-cli"):
        get_schedule(name).remove()


def test_an_unknown_kernel_is_refused_at_add_time_naming_the_kernels_there(module_home, tmp_path, capsys):
    from jupyter_client.kernelspec import KernelSpecManager

    from nbserve._cli_schedule import main

    kernels = sorted(KernelSpecManager().find_kernel_specs())  # what the agent (same host, same env) has
    assert "python3" in kernels
    there = re.escape(f"its kernels: {', '.join(kernels)}")
    notebook = _tool_notebook(tmp_path / "generated.ipynb")
    unknown = f"no Jupyter kernel named 'nonexistent' on the agent; {there}"
    with pytest.raises(errors.InvalidArgument, match=unknown) as bad:
        schedule(notebook, cron=CRON, name="bad", kernel="nonexistent")
    assert bad.value.status == 400 and bad.value.details == {"kernel": "nonexistent", "kernels": kernels}
    assert "--kernel" in bad.value.hint
    with pytest.raises(errors.InvalidArgument, match="kernel must be a kernel name"):
        schedule(notebook, cron=CRON, name="bad", kernel="../../tmp")

    # the CLI says the same, exit 1
    assert main(["schedule", "add", str(notebook), "--cron", CRON, "--name", "bad", "--kernel", "nonexistent"]) == 1
    err = capsys.readouterr().err
    assert "error: no Jupyter kernel named 'nonexistent' on the agent" in err and "python3" in err

    # a notebook whose own kernelspec names a kernel the agent lacks: refused, unless --kernel says which
    foreign = nbformat.read(notebook, as_version=4)
    foreign.metadata["kernelspec"] = {"name": "julia-1.10", "display_name": "Julia 1.10", "language": "julia"}
    nbformat.write(foreign, tmp_path / "foreign.ipynb")
    not_there = f"the notebook's kernel 'julia-1.10' .* is not installed on the agent; {there}"
    with pytest.raises(errors.InvalidArgument, match=not_there):
        schedule(tmp_path / "foreign.ipynb", cron=CRON, name="bad")
    assert not [s for s in schedules() if s.name == "bad"]
    chosen = schedule(tmp_path / "foreign.ipynb", cron=CRON, name="bad", kernel="python3", timezone=TZ)
    assert chosen.kernel == "python3"
    chosen.remove()


def test_a_notebook_keeps_its_own_kernel_and_schedules_from_before_kernels_keep_working(tmp_path, monkeypatch):
    """In process, real papermill runs: a second kernel (marked through its env) on JUPYTER_PATH."""
    from nbserve._agent._registry import Registry
    from nbserve._agent._scheduler import Scheduler
    from nbserve._config import Home

    spec_dir = tmp_path / "jupyter" / "kernels" / "nbserve-marked"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "marked", "language": "python", "env": {"NBSERVE_TEST_KERNEL": "marked"},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    says = "import os; print('kernel:', os.environ.get('NBSERVE_TEST_KERNEL', 'default'))"
    own = _tool_notebook(tmp_path / "own.ipynb", says)
    nb = nbformat.read(own, as_version=4)
    nb.metadata["kernelspec"] = {"name": "nbserve-marked", "display_name": "marked", "language": "python"}
    nbformat.write(nb, own)
    legacy_notebook = _tool_notebook(tmp_path / "legacy.ipynb", says)

    home = Home(tmp_path / "home").ensure()
    with sqlite3.connect(home.registry) as db:  # a schedule stored by an agent from before kernels
        db.execute("CREATE TABLE schedules (name TEXT PRIMARY KEY, deployment TEXT NOT NULL, notebook TEXT NOT NULL,"
                   " cron TEXT NOT NULL, timezone TEXT NOT NULL, parameters TEXT NOT NULL DEFAULT '{}',"
                   " timeout_seconds REAL NOT NULL, missed TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0,"
                   " created_by TEXT, created_at TEXT NOT NULL, next_run_at TEXT, last_run_at TEXT)")
        db.execute("INSERT INTO schedules VALUES ('legacy', 'legacy', ?, ?, 'UTC', '{}', 120, 'run_once', 0, NULL,"
                   " '2026-01-01T00:00:00+00:00', '2099-01-01T03:00:00+00:00', NULL)", (str(legacy_notebook), CRON))
    registry = Registry(home.registry)
    sched = Scheduler(home, registry)

    async def scenario() -> dict:
        assert sched.get("legacy").kernel == "python3"
        assert (await sched.add(name="own", notebook=str(own), cron=CRON, timezone=TZ)).kernel == "nbserve-marked"
        assert (await sched.add(name="chosen", notebook=str(own), cron=CRON, timezone=TZ,
                                kernel="python3")).kernel == "python3"
        for name in ("legacy", "own", "chosen"):
            sched.run_now(name)
        while any(sched.running(name) is not None for name in ("legacy", "own", "chosen")):
            await asyncio.sleep(0.1)
        return {name: sched.runs(name)[-1] for name in ("legacy", "own", "chosen")}

    try:
        runs = asyncio.run(scenario())
    finally:
        registry.close()
    assert {name: r.status for name, r in runs.items()} == dict.fromkeys(runs, "succeeded"), runs
    assert "kernel: marked" in _printed(runs["own"].executed_notebook), "the notebook's own kernel"
    assert "kernel: default" in _printed(runs["chosen"].executed_notebook), "the kernel given at add time"
    assert "kernel: default" in _printed(runs["legacy"].executed_notebook)


# -- real runs --------------------------------------------------------------------------------


def test_3am_tick_runs_the_notebook_and_deploys_with_provenance(module_home):
    sched = schedule(NOTEBOOK, cron=CRON, name="churn", params={"n_estimators": 10}, timezone=TZ, timeout=300)
    due = sched.next_run_at
    assert _tick((dt.datetime.fromisoformat(due) - dt.timedelta(minutes=1)).isoformat()) == []

    fired = _tick(due)  # "3 a.m." at once
    assert [(r["schedule"], r["trigger"], r["status"]) for r in fired] == [("churn", "cron", "running")]
    assert _tick(due) == [], "a due time fires once"
    run = sched.wait_for_run(fired[0]["id"], timeout=240)
    assert run["status"] == "succeeded", run
    assert run["version"] == 1 and run["reason"] is None and run["error"] is None
    assert run["parameters"] == {"deployment_name": "churn", "n_estimators": 10, "nbserve_scheduled_run": True}
    assert run["duration_seconds"] > 0 and run["due_at"] == due

    dep = nbserve.get("churn")
    assert dep.status == "serving" and dep.version == 1
    version = dep.versions[0]
    prov = version["metadata"]["provenance"]
    assert prov["scheduled_run"] == {"run_id": str(run["id"]), "schedule": "churn",
                                     "executed_notebook": run["executed_notebook"]}
    assert prov["notebook"] == str(NOTEBOOK.resolve())
    assert version["metadata"]["description"] == "10 trees (scheduled run)"

    executed = nbformat.read(run["executed_notebook"], as_version=4)
    assert run["executed_notebook"] == str(module_home.root / "runs" / "churn" / f"{run['id']}.ipynb")
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n_estimators = 10" in injected[0].source
    assert "nbserve_scheduled_run = True" in injected[0].source
    outputs = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "deployed churn v1" in outputs

    sched.refresh()
    assert dt.datetime.fromisoformat(sched.next_run_at) == dt.datetime.fromisoformat(due) + dt.timedelta(days=1)
    assert sched.runs().loc[run["id"], "status"] == "succeeded"
    kinds = dep.events()["kind"].tolist()
    assert "scheduled_run" in kinds
    STATE["churn_run"] = run


def test_a_failing_notebook_changes_nothing_that_serves(module_home, iris):
    _, X_test, _, _ = iris
    dep = nbserve.get("churn")
    before = dep.predict(X_test[:5]).tolist()
    sched = schedule(NOTEBOOK, cron=CRON, name="churn", schedule_name="churn-broken",
                     params={"n_estimators": -1}, timezone=TZ, timeout=120)
    run = sched.run_now(wait=True, timeout=120)
    assert run["status"] == "failed" and run["trigger"] == "manual"
    assert run["error"].startswith("InvalidParameterError: The 'n_estimators' parameter"), run["error"]
    assert "Traceback" not in run["error"] and len(run["error"]) < 400
    assert run["version"] is None and "failed before it deployed" in run["reason"]
    nbformat.read(run["executed_notebook"], as_version=4)  # kept for a look, error cell included

    dep.refresh()
    assert dep.version == 1 and len(dep.versions) == 1 and dep.status == "serving"
    assert dep.predict(X_test[:5]).tolist() == before
    sched.remove()


def test_timeout_kills_the_whole_tree_and_an_overlap_is_skipped(module_home):
    # slow_ms makes the model's predict sleep a minute: the deploy's own check never ends in time
    sched = schedule(NOTEBOOK, cron=CRON, name="churn", schedule_name="churn-slow",
                     params={"n_estimators": 5, "slow_ms": 60_000}, timezone=TZ, timeout=20)
    run = sched.run_now()
    assert run["status"] == "running"

    # papermill, and the kernel it starts in a session of its own (a grandchild of the agent)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("ipykernel" in c for c in seen.values()):
        for proc in _run_processes(module_home, run["id"]):
            try:
                seen[proc.pid] = " ".join(proc.cmdline())
            except psutil.Error:
                continue
        time.sleep(0.2)
    assert any("papermill" in c for c in seen.values()) and any("ipykernel" in c for c in seen.values()), seen

    overlap = sched.run_now()
    assert overlap["status"] == "skipped" and overlap["trigger"] == "manual"
    assert overlap["reason"] == f"run {run['id']} of schedule churn-slow is still running"
    assert get_schedule("churn-slow").data["running_run"] == run["id"]

    done = sched.wait_for_run(run["id"], timeout=60)
    assert done["status"] == "timed_out", done
    assert "longer than its timeout (20 s)" in done["reason"] and done["version"] is None
    assert 20 <= done["duration_seconds"] < 60
    assert _gone(list(seen)), {pid: c for pid, c in seen.items() if not _gone([pid])}
    assert not _run_processes(module_home, run["id"])
    dep = nbserve.get("churn")
    assert dep.version == 1 and len(dep.versions) == 1 and dep.status == "serving"
    assert [r for r in sched.runs()["status"]] == ["timed_out", "skipped"]


def test_missed_runs_after_a_restart_follow_the_policy(module_home):
    from nbserve._local import start_agent, stop_agent

    schedule(NOTEBOOK, cron=CRON, name="churn", schedule_name="churn-skip", timezone=TZ, missed="skip",
                    params={"n_estimators": 3})
    before = {s.name: s.data for s in schedules()}
    assert set(before) == {"churn", "churn-skip", "churn-slow"}

    # a run in progress when the agent stops is stopped with it and recorded
    in_flight = get_schedule("churn-slow").run_now()
    deadline = time.monotonic() + 15
    while not _run_processes(module_home, in_flight["id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stop_agent(module_home)
    assert not _run_processes(module_home, in_flight["id"])

    # while the agent was down, two "3 a.m."s passed (the stored due time goes back two days)
    now = dt.datetime.now(dt.UTC)
    two_days_ago = latest_due(CRON, TZ, now - dt.timedelta(days=1))
    with sqlite3.connect(module_home.registry) as db:
        db.execute("UPDATE schedules SET next_run_at = ? WHERE name IN ('churn', 'churn-skip')",
                   (two_days_ago.isoformat(timespec="seconds"),))
    start_agent(module_home)

    after = {s.name: s for s in schedules()}
    assert set(after) == set(before), "schedules survive the restart"
    assert after["churn-slow"].runs()["status"].tolist()[-1] == "failed"
    stopped = after["churn-slow"].run(in_flight["id"])
    assert stopped["status"] == "failed" and stopped["reason"] == "agent stopped"

    expected_next = next_due(CRON, TZ, dt.datetime.now(dt.UTC))
    skipped = after["churn-skip"].runs()
    assert len(skipped) == 1, "missed due times collapse into one record, never a burst"
    assert skipped.iloc[0]["status"] == "skipped" and skipped.iloc[0]["trigger"] == "missed"
    assert "missed the runs due from" in skipped.iloc[0]["reason"] and "policy is skip" in skipped.iloc[0]["reason"]
    assert dt.datetime.fromisoformat(after["churn-skip"].next_run_at) == expected_next

    runs = after["churn"].runs()
    assert len(runs) == 2 and runs.iloc[-1]["trigger"] == "missed"
    assert dt.datetime.fromisoformat(after["churn"].next_run_at) == expected_next
    missed = after["churn"].wait_for_run(int(runs.index[-1]), timeout=240)
    assert missed["status"] == "succeeded" and missed["version"] == 2, missed
    dep = nbserve.get("churn")
    assert dep.version == 2 and dep.status == "serving"
    assert dep.versions[1]["metadata"]["provenance"]["scheduled_run"]["run_id"] == str(missed["id"])

    for name in ("churn", "churn-skip", "churn-slow"):
        get_schedule(name).remove()
    assert schedules() == []


# -- the clock, in process ------------------------------------------------------------------


def test_injected_clock_and_missed_policy_in_process(tmp_path):
    """The scheduler's decisions with a clock the test moves (skip policy: no process starts)."""
    from nbserve._agent._registry import Registry
    from nbserve._agent._scheduler import Scheduler
    from nbserve._config import Home

    home = Home(tmp_path).ensure()
    registry = Registry(home.registry)
    clock = [dt.datetime(2026, 3, 28, 12, 0, tzinfo=dt.UTC)]
    sched = Scheduler(home, registry, clock=lambda: clock[0])

    async def scenario() -> None:
        row = await sched.add(name="paris", notebook=str(NOTEBOOK), cron=CRON, timezone="Europe/Paris", missed="skip")
        assert row.next_run_at == "2026-03-29T01:00:00+00:00"  # 03:00 in Paris, the night summer time starts
        assert await sched.tick() == []
        clock[0] = dt.datetime(2026, 4, 2, 9, 0, tzinfo=dt.UTC)  # the agent "slept" through four 3 a.m.s
        fired = await sched.tick()
        assert [(r.status, r.trigger) for r in fired] == [("skipped", "missed")]
        assert "2026-03-29T01:00:00+00:00 to 2026-04-02T01:00:00+00:00" in fired[0].reason
        assert sched.get("paris").next_run_at == "2026-04-03T01:00:00+00:00"
        assert await sched.tick() == []
        sched.pause("paris")
        clock[0] = dt.datetime(2026, 4, 10, 9, 0, tzinfo=dt.UTC)
        assert await sched.tick() == [], "a paused schedule does not fire or catch up"
        assert sched.resume("paris").next_run_at == "2026-04-11T01:00:00+00:00"
        assert len(sched.runs("paris")) == 1

    try:
        asyncio.run(scenario())
    finally:
        registry.close()


def test_old_run_files_are_pruned_but_a_run_that_made_a_version_keeps_them(tmp_path):
    """Real papermill runs of a notebook that deploys nothing; files of the newest runs stay."""
    from nbserve._agent._registry import Registry
    from nbserve._agent._scheduler import Scheduler
    from nbserve._config import Home

    notebook = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    home = Home(tmp_path / "home").ensure()
    registry = Registry(home.registry)
    sched = Scheduler(home, registry, keep_run_files=2)

    async def scenario() -> list:
        await sched.add(name="tiny", notebook=str(notebook), cron=CRON, timezone=TZ)
        for i in range(4):
            sched.run_now("tiny")
            while sched.running("tiny") is not None:
                await asyncio.sleep(0.1)
            if i == 0:  # as if the first run had deployed a version: its files are provenance
                with registry.transaction() as db:
                    db.execute("UPDATE schedule_runs SET version = 1 WHERE schedule = 'tiny'")
        return sched.runs("tiny")

    try:
        runs = sorted(asyncio.run(scenario()), key=lambda r: r.id)
    finally:
        registry.close()
    assert [r.status for r in runs] == ["succeeded"] * 4, [(r.status, r.error) for r in runs]
    kept = [r.executed_notebook is not None for r in runs]
    assert kept == [True, False, True, True], kept  # the version's run, then the newest two
    files = sorted(p.name for p in (home.root / "runs" / "tiny").iterdir())
    assert files == sorted(f"{r.id}.{ext}" for r in (runs[0], runs[2], runs[3]) for ext in ("ipynb", "log"))


# -- through the release gates --------------------------------------------------------------


def test_a_run_that_fails_after_deploying_is_taken_back(module_home, iris):
    _, X_test, _, _ = iris
    dep = nbserve.get("churn")
    live = dep.version
    sched = schedule(NOTEBOOK, cron=CRON, name="churn", schedule_name="churn-late-failure",
                     params={"n_estimators": 7, "fail_after_deploy": True}, timezone=TZ, timeout=300)
    run = sched.run_now(wait=True, timeout=300)
    assert run["status"] == "failed" and "failing on purpose" in run["error"]
    assert run["version"] is not None and run["version"] != live
    assert f"rolled back to v{live}" in run["reason"], run["reason"]
    dep.refresh()
    assert dep.version == live and dep.status == "serving"
    r = httpx.post(f"{dep.url}/predict", json={"data": json.loads(X_test[:1].to_json(orient="records"))})
    assert r.headers["x-nbserve-version"] == str(live)
    sched.remove()


def test_a_run_on_a_full_disk_fails_saying_so_and_changes_nothing(module_home, iris, tmp_path):
    """A real full disk: a small tmpfs over the schedule's run folder, filled."""
    _, X_test, _, _ = iris
    dep = nbserve.get("churn")
    live, before = dep.version, dep.predict(X_test[:5]).tolist()
    sched = schedule(NOTEBOOK, cron=CRON, name="churn", schedule_name="churn-disk-full",
                     params={"n_estimators": 3}, timezone=TZ, timeout=120)
    out_dir = module_home.root / "runs" / "churn-disk-full"
    out_dir.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(out_dir)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        sched.remove()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        with pytest.raises(OSError) as full, open(out_dir / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC

        run = sched.run_now(wait=True, timeout=120)
        assert run["status"] == "failed" and run["version"] is None, run
        assert run["error"].startswith(f"InsufficientStorage: the disk at {out_dir} is full"), run["error"]
        assert "executed notebook and log could not be written" in run["error"] and len(run["error"]) < 300

        # the scheduler keeps running: another schedule's run, meanwhile
        other = schedule(_tool_notebook(tmp_path / "other.ipynb"), cron=CRON, name="other", timezone=TZ)
        assert other.run_now(wait=True, timeout=120)["status"] == "succeeded"
        other.remove()
    finally:
        subprocess.run(["umount", str(out_dir)], check=True)
    dep.refresh()
    assert dep.version == live and dep.status == "serving" and dep.predict(X_test[:5]).tolist() == before
    assert [e for e in dep.events()["message"] if "churn-disk-full" in e and "InsufficientStorage" in e]
    sched.remove()


def _traffic_until(url: str, X, done, timeout: float = 150.0) -> dict[str, int]:
    """Steady requests until done() is true; every answer must be a 200."""
    body = {"data": json.loads(X[:2].to_json(orient="records"))}
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as client:
        while not done():
            assert time.monotonic() < deadline, f"gates did not act in time; answers so far {seen}"
            for _ in range(10):
                r = client.post(f"{url}/predict", json=body)
                assert r.status_code == 200, r.text
                v = r.headers["x-nbserve-version"]
                seen[v] = seen.get(v, 0) + 1
    return seen


def test_scheduled_retrains_go_through_canary_gates_worse_rolled_back_better_promoted(module_home, iris):
    from sklearn.ensemble import RandomForestClassifier

    X_train, X_test, y_train, _ = iris
    name = "retrain"
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X_train, y_train)
    first = nbserve.deploy(model, name, X_test, progress=False)
    first.gates(p99_ms=80, error_rate=0.01, min_requests=20, window="8s")
    worse = schedule(NOTEBOOK, cron="30 5 * * *", name=name, schedule_name="retrain-worse",
                     params={"n_estimators": 10, "slow_ms": 200, "canary": 50, "auto_promote": True},
                     timezone=TZ, timeout=300)
    better = schedule(NOTEBOOK, cron="30 6 * * *", name=name, schedule_name="retrain-better",
                      params={"n_estimators": 20, "canary": 50, "auto_promote": True}, timezone=TZ, timeout=300)

    fired = _tick(worse.next_run_at)  # 5:30: the worse model
    assert [r["schedule"] for r in fired] == ["retrain-worse"]
    run = worse.wait_for_run(fired[0]["id"], timeout=300)
    assert run["status"] == "succeeded" and run["version"] == 2, run
    dep = nbserve.get(name)
    assert dep.rollout()["version"] == 2 and dep.version == 1
    seen = _traffic_until(dep.url, X_test, lambda: nbserve.get(name).rollout() is None)
    assert seen.get("2", 0) > 0
    dep.refresh()
    assert dep.version == 1
    breach = dep.events().set_index("kind").loc["gate_breached"]
    assert breach["version"] == 2 and "p99" in breach["message"]

    fired = _tick(better.next_run_at)  # 6:30: the better one
    assert [r["schedule"] for r in fired] == ["retrain-better"]
    run = better.wait_for_run(fired[0]["id"], timeout=300)
    assert run["status"] == "succeeded" and run["version"] == 3, run
    _traffic_until(dep.url, X_test, lambda: nbserve.get(name).version == 3)
    promoted = nbserve.get(name).events().set_index("kind").loc["promoted"]
    assert promoted["version"] == 3 and promoted["actor"] == "nbserve-gates"
    history = nbserve.get(name).history()
    assert history.loc[2, "error"].startswith("gate_breached") and history.loc[3, "status"] == "live"
    for sched in (worse, better):
        sched.remove()
    nbserve.get(name).stop()
