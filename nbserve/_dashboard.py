"""``dep.dashboard()`` / ``%deploy --watch NAME``: a live ipywidgets view of one deployment.

A daemon thread polls the agent and updates the widgets, so the kernel stays free: the
user keeps running cells while it refreshes. It stops when the widget is closed, when
its stop button is pressed, when the interpreter exits, or after ``max_errors`` failed
polls in a row (the agent went away); it says so in its header.
"""

from __future__ import annotations

import atexit
import html
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .errors import NbserveError

if TYPE_CHECKING:
    from ._api import Deployment

_live: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # kernel shutdown: no thread outlives the interpreter's last act
    for dash in list(_live):
        dash.stop()


def _rollout_cell(rollout: dict[str, Any] | None) -> list[str]:
    if not rollout:
        return []
    share = f"{rollout['percent']:g}%" if rollout["mode"] == "canary" else "mirrored"
    return [f'<span style="color:#ef6c00">{rollout["mode"]} v{rollout["version"]} ({share})</span>']


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


class Dashboard(widgets.VBox):
    """Status, version, rps, p50/p99, error rate, drift flag, latency and drift plots."""

    def __init__(self, deployment: "Deployment", *, refresh: float = 3.0, window: str = "15m",
                 plot_every: int = 5, max_errors: int = 20) -> None:
        self.deployment = deployment
        self.refresh = max(0.5, float(refresh))
        self.window = window
        self.plot_every = max(1, plot_every)
        self.max_errors = max_errors
        self.updates = 0  # completed refreshes (tests and users can watch it move)
        self.last_error: str | None = None
        self.header = widgets.HTML()
        self.latency_image = widgets.Image(format="png", layout=widgets.Layout(max_width="760px"))
        self.drift_image = widgets.Image(format="png", layout=widgets.Layout(max_width="760px"))
        self.stop_button = widgets.Button(description="Stop refreshing", icon="stop",
                                          layout=widgets.Layout(width="160px"))
        self.stop_button.on_click(lambda _b: self.stop())
        super().__init__([self.header, self.stop_button, self.latency_image, self.drift_image])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nbserve-dashboard-{deployment.name}",
                                        daemon=True)
        _live.add(self)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop refreshing (the widgets keep their last values)."""
        self._stop.set()
        self.stop_button.disabled = True
        self.stop_button.description = "Stopped"

    def close(self) -> None:
        self.stop()
        super().close()

    def _run(self) -> None:
        errors = 0
        while not self._stop.is_set():
            try:
                self._update()
                errors = 0
            except NbserveError as exc:
                errors += 1
                self.last_error = exc.message
                self.header.value = self._header_error(exc.message, errors)
                if errors >= self.max_errors:
                    self.stop()
                    break
            except Exception as exc:  # noqa: BLE001 - a display thread must never die silently
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.header.value = self._header_error(self.last_error, errors)
            self._stop.wait(self.refresh)

    def _update(self) -> None:
        from ._plots import figure_png, plot_latency

        dep = self.deployment.refresh()
        summary = dep.summary(self.window)
        self.header.value = self._header(dep, summary)
        if self.updates % self.plot_every == 0:
            self.latency_image.value = figure_png(
                plot_latency(dep.latency(self.window), dep.events(limit=50), title=f"{dep.name}: latency")
            )
            if summary["drift"]["drifted"] is not None:
                try:
                    self.drift_image.value = figure_png(dep.plot_drift(window="1h"))
                except NbserveError:
                    pass  # too little sampled traffic for drift yet
        self.updates += 1

    def _header(self, dep: "Deployment", s: dict[str, Any]) -> str:
        drift = s["drift"]
        if drift["drifted"] is None:
            drift_text = '<span style="color:var(--jp-ui-font-color2,#777)">drift: not enough traffic</span>'
        elif drift["drifted"]:
            drift_text = f'<b style="color:#c62828">DRIFT</b> ({drift["share"]:.0%} of features)'
        else:
            drift_text = f'<span style="color:#2e7d32">no drift</span> ({drift["share"]:.0%} of features)'
        color = {"serving": "#2e7d32", "failed": "#c62828", "stopped": "#757575"}.get(dep.status, "#ef6c00")
        cells = [
            f'<b>{html.escape(dep.name)}</b> <span style="color:{color}">● {dep.status}</span>',
            f"v{dep.version}" if dep.version else "no live version",
            *_rollout_cell(dep._data.get("rollout")),
            f'<code>{html.escape(dep.url or "")}</code>',
            f"{_fmt(s['rps'], ' req/s', 2)}",
            f"p50 {_fmt(s['p50_ms'], ' ms', 2)} · p99 {_fmt(s['p99_ms'], ' ms', 2)}",
            f"errors {_fmt(None if s['error_rate'] is None else 100 * s['error_rate'], '%', 2)}",
            drift_text,
            _quality_cell(s.get("quality") or {}),
        ]
        stamp = time.strftime("%H:%M:%S")
        return (
            '<div style="display:flex;flex-wrap:wrap;gap:14px;align-items:baseline">'
            + "".join(f"<span>{c}</span>" for c in cells)
            + f'<span style="color:var(--jp-ui-font-color2,#777)">last {self.window} · updated {stamp}</span></div>'
        )

    def _header_error(self, message: str, errors: int) -> str:
        tail = " — stopped refreshing" if errors >= self.max_errors else f" — retrying ({errors})"
        return f'<span style="color:#c62828">nbserve: {html.escape(message)}{tail}</span>'


def quality_text(quality: dict[str, Any]) -> str:
    """"accuracy 0.87 ↓ 0.04 (120 labelled)": the live version's newest figure and its trend."""
    metric, value = quality.get("metric"), quality.get("value")
    if not metric or value is None:
        return "quality: no labels yet"
    text = f"{metric} {value:.3g}"
    previous = quality.get("previous")
    if previous is not None and abs(value - previous) > 1e-9:
        better = (value > previous) != (metric in ("mae", "rmse"))
        text += f" {'↑' if value > previous else '↓'}{abs(value - previous):.2g}" + ("" if better else " (worse)")
    return text + f" ({quality.get('labelled', 0)} labelled)"


def _quality_cell(quality: dict[str, Any]) -> str:
    text = html.escape(quality_text(quality))
    if quality.get("value") is None:
        return f'<span style="color:var(--jp-ui-font-color2,#777)">{text}</span>'
    return f'<span title="from real outcomes sent with dep.feedback">{text}</span>'
