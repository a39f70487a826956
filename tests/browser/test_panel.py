"""End to end in a real browser: a real ``jupyter lab``, a real agent, Debian's Chromium.

Deploys v1 from this process and v2 from a kernel that JupyterLab started, checks both in
the panel, rolls back to v1 through the panel's confirmation dialog and checks that the
stable URL answers from v1 and that the Audit section shows the rollback (v2 → v1) over an
intact hash chain; real outcomes sent from here show up as the list's and the detail's
accuracy, next to an alias chip, and the model card opens from the panel; the detail's
Resources line shows the deployment's worker count and no batching (its Scale… form opens and is
cancelled).
Then a canary: its badge and Rollout section, a share change and a promotion through the
panel, a slow canary rolled back by its gates (a warning notification, and the agent's own
gate_breached in the audit), and a schedule paused, resumed and run from the Schedules section.
Screenshots (light and dark) go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import nbserve

from ..conftest import repo_root

pytestmark = pytest.mark.slow

NAME = "panel-iris"
CANARY = "panel-canary"
SCHEDULE = "panel-sched"
NOTEBOOK = repo_root() / "notebooks" / "03-scheduled-retrain.ipynb"
CHROMIUM = "/usr/bin/chromium"
# Keep Chromium off the network: nothing but the local JupyterLab is reachable here.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = repo_root() / "tests" / "artifacts"
# Earlier actions' toasts sit over the main area: hidden from the model card's screenshots.
NO_TOASTS = ".Toastify, .Toastify__toast-container { display: none !important; }"

KERNEL_DEPLOY = """
%load_ext nbserve
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier
X, y = load_iris(return_X_y=True, as_frame=True)
X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y)
%deploy model --name {name} --sample X --description from-a-kernel
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}/{path}?token={self.token}"


@pytest.fixture(scope="module")
def lab(module_home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``jupyter lab`` on 127.0.0.1 with a token, NBSERVE_HOME pointing at the test's home."""
    root = tmp_path_factory.mktemp("lab")
    settings = root / ".settings"
    # No news toast over the screenshots.
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "NBSERVE_HOME": str(module_home.root),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime"), "JUPYTER_CONFIG_DIR": str(root / ".config"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = ARTIFACTS / "jupyter-lab.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={root / '.workspaces'}",
             "--LabApp.expose_app_in_browser=True"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"jupyter lab exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"jupyter lab did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        yield Lab(url, token, process, log)
    finally:
        _stop(process)
        _assert_nothing_left(root)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (Jupyter shuts its kernels down), then SIGKILL to the whole group if needed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the server's own group: kernels included
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _assert_nothing_left(root: Path) -> None:
    """No kernel (its connection file is under the lab's runtime dir) outlives the lab."""
    import psutil

    left = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(root) in " ".join(proc.info.get("cmdline") or []):
                left.append(f"{proc.pid}: {' '.join(proc.cmdline())}")
                proc.kill()
        except psutil.Error:
            continue
    assert not left, "processes left behind by jupyter lab:\n" + "\n".join(left)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 950},
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


class Slow:
    """Wraps a model and sleeps in predict: a canary its p99 gate rolls back."""

    def __init__(self, model, ms: float) -> None:
        self.model, self.ms = model, ms

    def predict(self, X):
        time.sleep(self.ms / 1000)
        return self.model.predict(X)


Slow.__module__ = "__main__"  # as if defined in a notebook cell: saved by value


def _open_lab(lab: Lab, browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack}"))
    page.goto(lab.page_url(), wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60000)
    page.evaluate("() => window.jupyterapp.started")
    return page, errors


def _theme(page, light: bool) -> None:
    # JupyterLab shows its splash screen while a theme loads; two overlapping splashes (the
    # start-up one and a theme change's) make its own fade-out throw "removeChild" errors.
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30000)
    name = "JupyterLab Light" if light else "JupyterLab Dark"
    page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", name)
    page.wait_for_selector(f'body[data-jp-theme-light="{str(light).lower()}"]', state="attached", timeout=20000)
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30000)


def _predict_version(url: str, rows: list[dict]) -> str:
    answer = httpx.post(f"{url}/predict", json={"data": rows}, timeout=30, trust_env=False)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-nbserve-version"]


def test_panel_shows_versions_and_rolls_back(lab: Lab, browser, module_home, iris, forest) -> None:
    _, X_test, _, _ = iris
    rows = X_test[:3].to_dict("records")
    v1 = nbserve.deploy(forest, NAME, X_test, description="forest", progress=False)
    assert v1.version == 1

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(lab.page_url(), wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60000)
    page.evaluate("() => window.jupyterapp.started")

    # The sidebar has the nbserve icon; the palette has the commands.
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="nbserve-deployments"]')
    tab.wait_for(timeout=30000)
    labels = page.evaluate("""() => ['nbserve:show-deployments', 'nbserve:rollback', 'nbserve:scale']
        .map(id => window.jupyterapp.commands.label(id))""")
    assert labels == ["nbserve: show deployments", "nbserve: rollback deployment…",
                      "nbserve: scale deployment…"]
    tab.click()
    row = page.locator(f'.nbserve-row[data-name="{NAME}"]')
    row.wait_for(timeout=20000)
    assert row.get_attribute("data-version") == "1"
    assert v1.url in row.inner_text()

    # v2 from a kernel JupyterLab started, with the panel open: it shows up by itself.
    page.evaluate("""async (code) => {
        const panel = await window.jupyterapp.commands.execute('notebook:create-new', {kernelName: 'python3'});
        window.__nbserveNotebook = panel;
        await panel.sessionContext.ready;
        const future = panel.sessionContext.session.kernel.requestExecute({code});
        window.__nbserveOutput = [];
        future.onIOPub = msg => { if (msg.content.text || msg.content.evalue) window.__nbserveOutput.push(
            msg.content.text || (msg.content.ename + ': ' + msg.content.evalue)); };
        window.__nbserveDeploy = future.done.then(reply => reply.content.status);
    }""", KERNEL_DEPLOY.format(name=NAME))
    deadline = time.monotonic() + 180
    while nbserve.get(NAME).version != 2:
        status = page.evaluate("() => window.__nbserveDeploy && Promise.race([window.__nbserveDeploy, null])")
        if status == "error" or time.monotonic() > deadline:
            pytest.fail("the kernel's deploy failed:\n" + "\n".join(page.evaluate("() => window.__nbserveOutput")))
        time.sleep(0.5)
    live_at = time.monotonic()
    page.wait_for_selector(f'.nbserve-row[data-name="{NAME}"][data-version="2"]', timeout=10000)
    assert time.monotonic() - live_at < 10, "the panel took more than 10 s to show the new version"
    assert page.evaluate("() => window.__nbserveDeploy") == "ok"
    nbserve.get(NAME).predict(X_test)  # traffic for the metrics: enough rows for a drift report
    # and one MLflow client's request: the traffic section counts requests per protocol
    mlflow = httpx.post(f"{nbserve.get(NAME).url}/invocations", json={"dataframe_records": rows},
                        timeout=30, trust_env=False)
    assert mlflow.status_code == 200, mlflow.text
    # the list's p50/p99 and request rate follow the traffic, by polling alone
    page.wait_for_function(
        "(name) => /p50 [0-9]/.test(document.querySelector(`.nbserve-row[data-name=\"${name}\"] .nbserve-metrics`)"
        "?.textContent ?? '')", arg=NAME, timeout=30000)
    page.mouse.move(800, 500)
    page.locator(".nbserve-List").screenshot(path=str(ARTIFACTS / "panel-list-light.png"))

    # The detail: both versions, v2 live and from the notebook, v1 warm.
    tab_visible = page.locator("#nbserve-deployments")
    row.click()
    detail = page.locator(f'.nbserve-Detail[data-name="{NAME}"]')
    detail.wait_for(timeout=20000)
    v1_row = detail.locator('.nbserve-version-row[data-version="1"]')
    v2_row = detail.locator('.nbserve-version-row[data-version="2"]')
    v1_row.wait_for(timeout=20000)
    assert v2_row.get_attribute("data-status") == "live"
    assert v1_row.get_attribute("data-status") == "warm"
    # the forest was compiled (runtime="auto"): the row says which runtime serves it
    assert v1_row.locator(".nbserve-runtime").inner_text() == "onnx"
    assert "Untitled" in v2_row.inner_text() or ".ipynb" in v2_row.inner_text()
    detail.locator('section[data-section="logs"] pre').wait_for(timeout=20000)
    detail.locator(".nbserve-bar").first.wait_for(timeout=20000)  # the drift chart, drawn in SVG
    assert detail.locator(".nbserve-bar").count() >= 4
    protocols = detail.locator(".nbserve-protocols")
    protocols.wait_for(timeout=20000)
    assert re.search(r"bentoml \d+ · mlflow 1", protocols.inner_text()), protocols.inner_text()
    page.screenshot(path=str(ARTIFACTS / "lab-light.png"))
    tab_visible.screenshot(path=str(ARTIFACTS / "panel-detail-light.png"))

    # Resources: warm, one worker per server, its RSS, no caps; Scale… opens its form (cancelled:
    # a scale would restart the servers).
    resources = detail.locator('.nbserve-resources[data-state="warm"][data-workers="1"]')
    resources.wait_for(timeout=10000)
    text = resources.inner_text()
    assert "1 worker × " in text and re.search(r"RSS [0-9.]+ (MiB|GiB)", text) and "no caps" in text, text
    assert resources.locator('[data-fact="batching"]').inner_text() == "no batching", text
    head = detail.locator(".nbserve-detail-head")
    page.mouse.move(800, 500)
    head.screenshot(path=str(ARTIFACTS / "panel-resources-light.png"))
    resources.locator("button.nbserve-scale").click()
    form = page.locator(".jp-Dialog", has_text=f"Scale {NAME}")
    form.wait_for(timeout=10000)
    assert form.locator('input[name="workers"]').get_attribute("placeholder") == "1"
    assert not form.locator('input[name="batching"]').is_checked()
    form.screenshot(path=str(ARTIFACTS / "scale-dialog-light.png"))
    form.locator("button.jp-mod-reject").click()
    form.wait_for(state="detached", timeout=10000)

    # "Open in notebook" inserts the %deploy cell into the notebook.
    detail.locator("button.nbserve-open").click()
    page.wait_for_function(
        "(name) => window.__nbserveNotebook.content.activeCell.model.sharedModel.getSource()"
        ".includes('%deploy --history ' + name)", arg=NAME, timeout=10000)
    tab.click() if not tab_visible.is_visible() else None
    detail.wait_for(timeout=10000)

    # Roll back to v1 through the confirmation dialog.
    v1_row.locator("button.nbserve-rollback").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10000)
    assert "version 1" in dialog.inner_text()
    page.screenshot(path=str(ARTIFACTS / "rollback-dialog-light.png"))
    dialog.locator("button.jp-mod-accept").click()
    page.wait_for_selector(f'.nbserve-Detail[data-name="{NAME}"][data-version="1"]', timeout=30000)
    assert _predict_version(v1.url, rows) == "1"
    assert nbserve.get(NAME).version == 1
    page.wait_for_selector('.nbserve-version-row[data-version="1"][data-status="live"]', timeout=10000)

    # The Audit section: the rollback just made, newest first, by this host's owner, over an intact chain.
    audit = detail.locator('section[data-section="audit"]')
    rollback = audit.locator('tr.nbserve-audit-row[data-action="rollback"]').first
    rollback.wait_for(timeout=10000)
    assert audit.locator("tr.nbserve-audit-row").first.get_attribute("data-action") == "rollback"
    assert rollback.locator("td.nbserve-audit-live").inner_text() == "v2 → v1"
    assert rollback.locator(".nbserve-audit-source").inner_text() == "127.0.0.1"
    assert "nbserve-audit-agent" not in (rollback.locator("td.nbserve-audit-who").get_attribute("class") or "")
    assert rollback.locator("time").get_attribute("title")  # the absolute time, as a tooltip
    assert audit.locator("table.nbserve-audit th").all_inner_texts() == ["when", "who / from", "action", "live"]
    chain = audit.locator(".nbserve-audit-chain")
    assert chain.get_attribute("data-ok") == "true", chain.inner_text()
    assert re.fullmatch(r"hash chain intact · \d+ records", chain.inner_text()), chain.inner_text()
    page.mouse.move(800, 500)
    audit.screenshot(path=str(ARTIFACTS / "panel-audit-light.png"))

    # An action the agent refuses: its message comes back as a JupyterLab error notification.
    page.evaluate("(name) => { window.jupyterapp.commands.execute('nbserve:rollback', {name, to: 99}); }", NAME)
    dialog.wait_for(timeout=10000)
    dialog.locator("button.jp-mod-accept").click()
    toast = page.locator(".Toastify__toast--error", has_text="v99")
    toast.wait_for(timeout=20000)
    assert "99" in toast.inner_text().split("v99", 1)[1], toast.inner_text()
    assert nbserve.get(NAME).version == 1

    # The palette's "nbserve: rollback deployment…" asks which deployment, which version, then confirms.
    page.evaluate("() => { window.jupyterapp.commands.execute('nbserve:rollback'); }")
    which = page.locator(".jp-Dialog", has_text="Roll back which deployment?")
    which.wait_for(timeout=10000)
    assert NAME in which.locator("select").inner_text()
    which.locator("button.jp-mod-accept").click()
    to = page.locator(".jp-Dialog", has_text=f"Roll back {NAME} (live: v1) to")
    to.wait_for(timeout=10000)
    assert "v2 (warm)" in to.locator("select").inner_text()
    to.locator("button.jp-mod-accept").click()
    confirm = page.locator(".jp-Dialog", has_text=f"Roll back {NAME} to version 2?")
    confirm.wait_for(timeout=10000)
    confirm.locator("button.jp-mod-reject").click()  # cancelled: nothing moves
    confirm.wait_for(state="detached", timeout=10000)
    assert nbserve.get(NAME).version == 1

    # "nbserve: show deployments" brings the panel back after the sidebar is collapsed.
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.locator("#nbserve-deployments").wait_for(state="hidden", timeout=10000)
    page.evaluate("() => window.jupyterapp.commands.execute('nbserve:show-deployments')")
    page.locator("#nbserve-deployments").wait_for(state="visible", timeout=10000)

    # Dark theme: the panel follows JupyterLab's theme variables.
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_selector('body[data-jp-theme-light="false"]', state="attached", timeout=20000)
    page.wait_for_timeout(500)
    tab_visible.screenshot(path=str(ARTIFACTS / "panel-detail-dark.png"))
    audit.screenshot(path=str(ARTIFACTS / "panel-audit-dark.png"))
    page.mouse.move(800, 500)
    head.screenshot(path=str(ARTIFACTS / "panel-resources-dark.png"))
    page.screenshot(path=str(ARTIFACTS / "lab-dark.png"))
    detail.locator("button.nbserve-back").click()
    page.locator(".nbserve-List").wait_for(timeout=10000)
    page.mouse.move(800, 500)  # no hover highlight in the screenshot
    page.locator(".nbserve-List").screenshot(path=str(ARTIFACTS / "panel-list-dark.png"))
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('.nbserve-Panel')).backgroundColor")
    assert background != "rgb(255, 255, 255)", background

    # Quality: real outcomes sent from here show up as the list's accuracy, by polling alone.
    _, X_test, _, y_test = iris
    dep = nbserve.get(NAME)
    frame = dep.predict(X_test, ids=True)  # v1 (forest) is live
    assert dep.feedback(frame["id"], y_test)["stored"] == len(X_test)
    dep.alias("staging", 2)
    expected = f"accuracy {float((forest.predict(X_test) == y_test).mean()):.3g}"
    badge = row.locator('.nbserve-quality[data-metric="accuracy"]')
    badge.wait_for(timeout=15000)
    assert re.fullmatch(r"acc [0-9.]+", badge.inner_text()), badge.inner_text()
    assert badge.get_attribute("title").startswith(f"{expected} ({len(X_test)} labelled)"), badge.get_attribute("title")
    page.mouse.move(800, 500)
    page.locator(".nbserve-List").screenshot(path=str(ARTIFACTS / "panel-quality-list-dark.png"))

    # The detail: the Quality line, the alias chip, each version's own URL; then the model card.
    row.click()
    quality = detail.locator('.nbserve-quality-line[data-metric="accuracy"]')
    quality.wait_for(timeout=10000)
    assert f"{len(X_test)} labelled" in quality.inner_text(), quality.inner_text()
    chip = detail.locator('.nbserve-alias-chip[data-alias="staging"]')
    chip.wait_for(timeout=10000)
    assert chip.inner_text().strip() == "staging → v2"
    assert v1_row.locator(".nbserve-copy-version").get_attribute("data-copy") == f"{v1.url}/v/1"
    detail.locator("button.nbserve-model-card").click()
    card = page.locator(f'.nbserve-CardView[data-name="{NAME}"][data-version="1"][data-state="loaded"]')
    card.wait_for(timeout=20000)
    card.locator("h3", has_text="Input schema").wait_for(timeout=5000)  # rendered (sanitized) HTML, not text
    assert "RandomForestClassifier" in card.locator("h2").inner_text()
    assert "sepal_length" in card.inner_text() and "accuracy" in card.inner_text()
    page.mouse.move(800, 500)
    tab_visible.screenshot(path=str(ARTIFACTS / "panel-quality-detail-dark.png"))
    page.locator(".nbserve-CardWidget").screenshot(path=str(ARTIFACTS / "model-card-dark.png"), style=NO_TOASTS)
    _theme(page, light=True)
    tab_visible.screenshot(path=str(ARTIFACTS / "panel-quality-detail-light.png"))
    page.locator(".nbserve-CardWidget").screenshot(path=str(ARTIFACTS / "model-card-light.png"), style=NO_TOASTS)
    detail.locator("button.nbserve-back").click()
    page.mouse.move(800, 500)
    page.locator(".nbserve-List").screenshot(path=str(ARTIFACTS / "panel-quality-list-light.png"))

    assert not errors, errors
    page.close()


def test_rollouts_and_schedules_in_the_panel(lab: Lab, browser, module_home, iris, forest, tree) -> None:
    from nbserve._schedules import get_schedule, schedule

    _, X_test, _, _ = iris
    rows = X_test[:3].to_dict("records")
    nbserve.deploy(forest, CANARY, X_test, description="forest", progress=False)
    dep = nbserve.deploy(tree, CANARY, X_test, canary=50, description="tree", progress=False)
    assert dep.version == 1 and dep._data["rollout"]["version"] == 2

    page, errors = _open_lab(lab, browser)
    _theme(page, light=True)  # the first test left the dark theme in the user settings
    labels = page.evaluate("""() => ['nbserve:promote', 'nbserve:abort-rollout', 'nbserve:run-schedule']
        .map(id => window.jupyterapp.commands.label(id))""")
    assert labels == ["nbserve: promote canary…", "nbserve: abort rollout…", "nbserve: run schedule now…"]
    page.evaluate("() => window.jupyterapp.commands.execute('nbserve:show-deployments')")
    panel = page.locator("#nbserve-deployments")

    # The list: the canary badge.
    row = page.locator(f'.nbserve-row[data-name="{CANARY}"][data-rollout="canary"]')
    row.wait_for(timeout=20000)
    assert row.locator(".nbserve-rollout-badge").inner_text() == "canary v2 · 50%"
    badge_colour = page.evaluate(
        "() => getComputedStyle(document.querySelector('.nbserve-rollout-canary')).backgroundColor")
    assert badge_colour not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), badge_colour

    # The detail: the Rollout section, the canary's version row.
    row.click()
    detail = page.locator(f'.nbserve-Detail[data-name="{CANARY}"]')
    section = detail.locator('section[data-section="rollout"]')
    section.wait_for(timeout=20000)
    text = section.inner_text()
    assert "canary v2 · 50%" in text and "50% of new requests" in text, text
    assert section.get_attribute("data-verdict") in ("waiting", "pass")
    assert section.locator('table.nbserve-gates tr[data-gate="requests"]').count() == 1
    assert detail.locator('.nbserve-version-row[data-version="2"]').get_attribute("data-status") == "canary"
    for _ in range(12):  # a little traffic for the figures
        _predict_version(dep.url, rows)
    page.wait_for_function(  # the section reloads on its own while a rollout is under way
        "() => /^[1-9]/.test(document.querySelector('table.nbserve-gates tr[data-gate=\"requests\"] td:last-child')"
        "?.textContent ?? '')", timeout=20000)
    page.mouse.move(800, 500)
    panel.screenshot(path=str(ARTIFACTS / "panel-rollout-light.png"))

    # A preset share, confirmed.
    section.locator('button.nbserve-canary-preset[data-percent="25"]').click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10000)
    assert "25%" in dialog.inner_text()
    dialog.locator("button.jp-mod-accept").click()
    page.wait_for_function(
        "() => document.querySelector('.nbserve-Detail .nbserve-rollout-badge')?.textContent === 'canary v2 · 25%'",
        timeout=20000)
    assert nbserve.get(CANARY)._data["rollout"]["percent"] == 25

    # Promote, confirmed: the stable URL answers from v2.
    section.locator("button.nbserve-promote").click()
    dialog.wait_for(timeout=10000)
    assert f"Promote {CANARY} v2?" in dialog.inner_text()
    dialog.locator("button.jp-mod-accept").click()
    page.wait_for_selector(f'.nbserve-Detail[data-name="{CANARY}"][data-version="2"][data-rollout=""]', timeout=30000)
    assert _predict_version(dep.url, rows) == "2"
    page.locator(".Toastify__toast--success", has_text=f"{CANARY}: v2 promoted").wait_for(timeout=20000)

    # A slow canary breaches its p99 gate under traffic from here: rolled back, and a warning.
    nbserve.get(CANARY).gates(p99_ms=40, min_requests=8, window="10m")
    slow = nbserve.deploy(Slow(forest, ms=120), CANARY, X_test, canary=50, description="slow", progress=False)
    assert slow._data["rollout"]["version"] == 3
    page.wait_for_selector(f'.nbserve-Detail[data-name="{CANARY}"][data-rollout="canary:3"]', timeout=20000)
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30, trust_env=False) as client:
        while nbserve.get(CANARY).rollout() is not None:
            assert time.monotonic() < deadline, "the slow canary was not rolled back"
            client.post(f"{slow.url}/predict", json={"data": rows})
    warning = page.locator(".Toastify__toast--warning", has_text=f"{CANARY}: v3 canary rolled back by its gates: p99")
    warning.wait_for(timeout=20000)
    assert "> 40 ms" in warning.inner_text(), warning.inner_text()
    page.wait_for_timeout(800)  # the toast slides in
    page.screenshot(path=str(ARTIFACTS / "gate-breach-notification-light.png"))
    page.wait_for_timeout(4500)  # two more polls: each event is notified once
    assert warning.count() == 1
    assert page.locator(".Toastify__toast", has_text="v2 promoted").count() <= 1
    assert _predict_version(slow.url, rows) == "2"
    page.wait_for_selector(f'.nbserve-Detail[data-name="{CANARY}"][data-rollout=""]', timeout=20000)
    assert detail.locator('.nbserve-version-row[data-version="3"]').get_attribute("data-status") == "stopped"
    # The audit has the gates' own breach: the agent's action, no token, muted.
    breach = detail.locator('section[data-section="audit"] tr.nbserve-audit-row[data-action="gate_breached"]')
    breach.first.wait_for(timeout=10000)
    assert "nbserve-audit-agent" in breach.first.locator("td.nbserve-audit-who").get_attribute("class")

    # Schedules: listed under the deployments; pause, resume, run now (confirmed), its runs.
    sched = schedule(NOTEBOOK, cron="0 3 * * *", name=SCHEDULE, params={"n_estimators": 5},
                     timezone="Europe/Paris", timeout=300)
    try:
        detail.locator("button.nbserve-back").click()
        srow = page.locator(f'.nbserve-sched-row[data-name="{SCHEDULE}"]')
        srow.wait_for(timeout=20000)
        text = srow.inner_text()
        assert "0 3 * * *" in text and "Europe/Paris" in text and "never ran" in text, text
        srow.locator("button.nbserve-sched-pause").click()
        page.wait_for_selector(f'.nbserve-sched-row[data-name="{SCHEDULE}"][data-paused="true"]', timeout=20000)
        assert get_schedule(SCHEDULE).paused
        srow.locator("button.nbserve-sched-resume").click()
        page.wait_for_selector(f'.nbserve-sched-row[data-name="{SCHEDULE}"][data-paused="false"]', timeout=20000)

        srow.locator("button.nbserve-sched-run").click()
        confirm = page.locator(".jp-Dialog", has_text=f"Run {SCHEDULE} now?")
        confirm.wait_for(timeout=10000)
        confirm.locator("button.jp-mod-accept").click()
        page.wait_for_selector(f'.nbserve-sched-row[data-name="{SCHEDULE}"][data-state="running"]', timeout=20000)
        assert get_schedule(SCHEDULE).data["running_run"] is not None
        page.mouse.move(800, 500)
        page.locator(".nbserve-Schedules").screenshot(path=str(ARTIFACTS / "panel-schedules-light.png"))

        run_id = get_schedule(SCHEDULE).data["running_run"]
        page.locator(f'.nbserve-sched-row[data-name="{SCHEDULE}"]').click()
        runs = page.locator(f'.nbserve-ScheduleDetail[data-name="{SCHEDULE}"] table.nbserve-runs')
        runs.wait_for(timeout=20000)
        run = runs.locator(f'tbody.nbserve-run[data-run="{run_id}"]')
        assert run.get_attribute("data-status") in ("running", "succeeded")
        # the run finishes (a deploy of its own); the detail follows it by polling alone
        done = get_schedule(SCHEDULE).wait_for_run(run_id, timeout=120)
        assert done["status"] == "succeeded", done
        page.wait_for_selector(f'tbody.nbserve-run[data-run="{run_id}"][data-status="succeeded"]', timeout=20000)
        assert "v1" in run.locator(".nbserve-run-row").inner_text()
        # the executed notebook is outside the lab's root: its path, not a link
        assert run.locator("code.nbserve-run-path").inner_text() == done["executed_notebook"]
        panel.screenshot(path=str(ARTIFACTS / "panel-schedule-detail-light.png"))
        _theme(page, light=False)
        panel.screenshot(path=str(ARTIFACTS / "panel-schedule-detail-dark.png"))
        page.locator(".nbserve-ScheduleDetail button.nbserve-back").click()
        page.locator(".nbserve-Schedules").wait_for(timeout=10000)
        page.mouse.move(800, 500)
        panel.screenshot(path=str(ARTIFACTS / "panel-schedules-dark.png"))
    finally:
        sched.remove()  # stops the run in progress
    page.locator(f'.nbserve-sched-row[data-name="{SCHEDULE}"]').wait_for(state="detached", timeout=20000)
    assert not errors, errors
    page.close()


def test_a_shared_deployment_shows_its_model_in_the_panel(lab: Lab, browser, module_home, iris, tree) -> None:
    """The Resources line of a version in a shared model server: the engine, how many of its
    models are loaded, and per version (tooltip) its memory and requests."""
    _, X_test, _, _ = iris
    name = "panel-shared"
    dep = nbserve.deploy(tree, name, X_test, engine="shared", progress=False)
    dep.predict(X_test.head(2))
    page, errors = _open_lab(lab, browser)
    page.evaluate("() => window.jupyterapp.commands.execute('nbserve:show-deployments')")
    row = page.locator(f'.nbserve-row[data-name="{name}"]')
    row.wait_for(timeout=20000)
    row.click()
    detail = page.locator(f'.nbserve-Detail[data-name="{name}"]')
    fact = detail.locator('.nbserve-resources [data-fact="engine"]')
    fact.wait_for(timeout=20000)
    page.wait_for_function(
        "(name) => /shared · 1 of 1 loaded/.test(document.querySelector("
        "`.nbserve-Detail[data-name=\"${name}\"] .nbserve-resources [data-fact=\"engine\"]`)?.textContent || '')",
        arg=name, timeout=20000)
    title = fact.get_attribute("title")
    assert re.search(r"v1 in agent-w1: loaded, [0-9.]+ (KiB|MiB), \d+ requests? since its load", title), title
    dep.stop()
    assert not errors, errors
    page.close()
