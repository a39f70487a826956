"""What a deploy looks like while it runs, and what a deployment looks like after.

In a notebook, progress is one HTML block updated in place (``display_id``), which also
renders in papermill's executed copies; elsewhere it is one line per step.
"""

from __future__ import annotations

import html
import json
import sys
import time
from typing import Any

STEPS = {
    "checking": "Checking the model on the sample",
    "runtime": "Choosing the runtime",
    "dependencies": "Finding dependencies",
    "saving": "Saving the model",
    "building": "Building the Bento",
    "uploading": "Handing the Bento to the agent",
    "environment": "Preparing the environment",
    "starting": "Starting the server",
    "health": "Health check (/readyz)",
    "parity": "Parity check (replaying the reference sample)",
    "live": "Live",
    "warning": "Warning",
}


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """Step-by-step progress of one deploy."""

    def __init__(self, title: str, *, enabled: bool = True) -> None:
        self.title = title
        self.enabled = enabled
        self.rows: list[list[Any]] = []  # [key, detail, state, started]
        self._handle: Any = None
        self._notebook = enabled and _in_notebook()

    def step(self, key: str, detail: str | None = None) -> None:
        now = time.monotonic()
        if self.rows and self.rows[-1][0] == key:
            self.rows[-1][1] = detail or self.rows[-1][1]
        else:
            self._close_running(now)
            self.rows.append([key, detail, "running", now])
            if self.enabled and not self._notebook:
                ellipsis = "" if key == "live" else " ..."
                print(f"  {STEPS.get(key, key)}" + (f": {detail}" if detail else "") + ellipsis,
                      file=sys.stderr, flush=True)
        self._render()

    def warn(self, message: str) -> None:
        """A line that needs the user's eye; the deploy carries on."""
        self._close_running(time.monotonic())
        self.rows.append(["warning", message, "warning", time.monotonic()])
        if self.enabled and not self._notebook:
            print(f"  warning: {message}", file=sys.stderr, flush=True)
        self._render()

    def _close_running(self, now: float) -> None:
        if self.rows and self.rows[-1][2] == "running":
            self.rows[-1][2] = "done"
            self.rows[-1].append(now)

    def finish(self, ok: bool, detail: str | None = None) -> None:
        now = time.monotonic()
        if self.rows and self.rows[-1][2] == "running":
            self.rows[-1][2] = "done" if ok else "failed"
            self.rows[-1].append(now)
            if detail:
                self.rows[-1][1] = detail
        if self.enabled and not self._notebook and not ok:
            print(f"  failed: {detail}", file=sys.stderr, flush=True)
        self._render()

    def _render(self) -> None:
        if not self._notebook:
            return
        from IPython.display import HTML, display

        body = HTML(self.html())
        if self._handle is None:
            self._handle = display(body, display_id=True)
        else:
            self._handle.update(body)

    def html(self) -> str:
        marks = {"running": "&#8987;", "done": "&#10004;", "failed": "&#10008;", "warning": "&#9888;"}
        items = []
        for row in self.rows:
            key, detail, state, started = row[:4]
            took = f" <span style='opacity:.6'>{row[4] - started:.1f} s</span>" if len(row) > 4 else ""
            text = html.escape(STEPS.get(key, key)) + (
                f": <code>{html.escape(str(detail))}</code>" if detail else ""
            )
            items.append(f"<li style='list-style:none'>{marks[state]} {text}{took}</li>")
        return (
            f"<div class='nbserve-progress'><b>{html.escape(self.title)}</b>"
            f"<ul style='margin:.3em 0;padding-left:.5em'>{''.join(items)}</ul></div>"
        )


def curl_example(url: str, sample_row: dict[str, Any] | None) -> str:
    body = json.dumps({"data": [sample_row or {}]})
    return f"curl -X POST {url}/predict -H 'content-type: application/json' -d '{body}'"


def python_example(url: str) -> str:
    return (
        "import bentoml\n"
        f"client = bentoml.SyncHTTPClient({url!r})\n"
        "client.predict(data=df)"
    )


_STATUS_COLORS = {
    "serving": "#2e7d32",
    "starting": "#f9a825",
    "restarting": "#f9a825",
    "failed": "#c62828",
    "stopped": "#757575",
}


def deployment_html(data: dict[str, Any]) -> str:
    url = data.get("url") or ""
    status = data.get("status", "?")
    live = data.get("live_version")
    versions = data.get("versions") or []
    live_meta = next((v["metadata"] for v in versions if v["number"] == live), {}) if live else {}
    sample_row = live_meta.get("sample_row")
    color = _STATUS_COLORS.get(status, "#555")
    esc = html.escape
    return (
        "<div class='nbserve-deployment' style='border:1px solid #ccc;border-radius:6px;"
        "padding:.6em .9em;max-width:56em'>"
        f"<div><b>{esc(data['name'])}</b> &nbsp; <span style='color:{color}'>&#9679; {esc(status)}</span>"
        f" &nbsp; version <b>{live if live is not None else '-'}</b>"
        f" <span style='opacity:.6'>of {len(versions)}</span></div>"
        f"<div>Stable URL: <a href='{esc(url)}/docs' target='_blank'><code>{esc(url)}</code></a></div>"
        "<details style='margin-top:.4em'><summary>Call it</summary>"
        f"<pre style='white-space:pre-wrap'>{esc(curl_example(url, sample_row))}</pre>"
        f"<pre>{esc(python_example(url))}</pre></details></div>"
    )


def deployment_text(data: dict[str, Any]) -> str:
    live = data.get("live_version")
    return (
        f"<Deployment {data['name']!r} {data.get('status')} v{live if live is not None else '-'} "
        f"at {data.get('url')}>"
    )
