"""End to end in a real browser: a real ``jupyter lab``, a real agent, Debian's Chromium.

Deploys v1 from this process and v2 from a kernel that JupyterLab started, checks both in
the panel, rolls back to v1 through the panel's confirmation dialog and checks that the
stable URL answers from v1. Screenshots (light and dark) go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
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
    labels = page.evaluate("""() => ['nbserve:show-deployments', 'nbserve:rollback']
        .map(id => window.jupyterapp.commands.label(id))""")
    assert labels == ["nbserve: show deployments", "nbserve: rollback deployment…"]
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
    assert "Untitled" in v2_row.inner_text() or ".ipynb" in v2_row.inner_text()
    detail.locator('section[data-section="logs"] pre').wait_for(timeout=20000)
    detail.locator(".nbserve-bar").first.wait_for(timeout=20000)  # the drift chart, drawn in SVG
    assert detail.locator(".nbserve-bar").count() >= 4
    page.screenshot(path=str(ARTIFACTS / "lab-light.png"))
    tab_visible.screenshot(path=str(ARTIFACTS / "panel-detail-light.png"))

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
    page.screenshot(path=str(ARTIFACTS / "lab-dark.png"))
    detail.locator("button.nbserve-back").click()
    page.locator(".nbserve-List").wait_for(timeout=10000)
    page.mouse.move(800, 500)  # no hover highlight in the screenshot
    page.locator(".nbserve-List").screenshot(path=str(ARTIFACTS / "panel-list-dark.png"))
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('.nbserve-Panel')).backgroundColor")
    assert background != "rgb(255, 255, 255)", background

    assert not errors, errors
    page.close()
