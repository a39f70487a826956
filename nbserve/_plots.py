"""Inline figures: latency over time, drift per feature, the version timeline.

Every function takes plain DataFrames (what ``Deployment.latency()``, ``.drift()``,
``.history()`` return) and returns a matplotlib ``Figure`` that is already closed in
pyplot, so a notebook shows it once (as the cell's value) and scripts can ``savefig`` it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

_VERSION_EVENTS = ("deployed", "rollback", "started", "restarted")
_PVALUE_METHODS = ("ks", "chisquare", "z")  # drift when the score falls *below* the threshold


def _figure(*args: Any, **kwargs: Any) -> tuple["Figure", Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    plt.close(fig)  # shown by being returned, never twice
    return fig, axes


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _version_marks(ax: Any, events: "pd.DataFrame", start: Any, end: Any) -> None:
    """Dashed vertical lines where the live version changed, labelled with the version."""
    import pandas as pd

    if events is None or events.empty or "kind" not in events:
        return
    marks = events[events["kind"].isin(_VERSION_EVENTS)]
    for _, event in marks.iterrows():
        ts = pd.Timestamp(event["ts"])
        if ts < start or ts > end:
            continue
        ax.axvline(ts, color="0.35", linestyle="--", linewidth=0.9)
        label = f"v{int(event['version'])}" if pd.notna(event.get("version")) else event["kind"]
        ax.annotate(label, (ts, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -12),
                    textcoords="offset points", fontsize=8, color="0.25")


def plot_latency(latency: "pd.DataFrame", events: "pd.DataFrame | None" = None, *, title: str = "latency") -> "Figure":
    import pandas as pd

    fig, (ax, ax_rate) = _figure(2, 1, figsize=(8, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.set_title(title, loc="left", fontsize=11)
    served = latency.dropna(subset=["p50_ms"]) if not latency.empty else latency
    if served.empty:
        _empty(ax, "no requests in this window")
        _empty(ax_rate, "")
        return fig
    mid = pd.Timedelta(seconds=30)  # a pane covers a minute: draw it at its middle
    for column, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
        ax.plot(served["time"] + mid, served[column], style, marker=".", label=column.replace("_ms", ""))
    ax.set_ylabel("ms")
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    ax.grid(alpha=0.3)
    ax_rate.bar(latency["time"] + mid, latency["rps"], width=pd.Timedelta(seconds=50), color="tab:gray",
                label="requests/s")
    errors = latency["errors"] > 0
    if errors.any():
        ax_rate.bar(latency["time"][errors] + mid, latency["errors"][errors] / 60,
                    width=pd.Timedelta(seconds=50), color="tab:red", label="errors/s")
    ax_rate.set_ylabel("req/s")
    ax_rate.legend(loc="upper left", fontsize=8)
    ax_rate.grid(alpha=0.3)
    start, end = latency["time"].min() - pd.Timedelta(minutes=1), latency["time"].max() + pd.Timedelta(minutes=2)
    _version_marks(ax, events, start, end)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_quality(quality: "pd.DataFrame", events: "pd.DataFrame | None" = None, *, metric: str | None = None,
                 title: str = "quality") -> "Figure":
    """One metric per time bucket, a line per version, the labelled rows behind each point
    as bars below, and version changes marked."""
    import pandas as pd

    fig, (ax, ax_n) = _figure(2, 1, figsize=(8, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.set_title(title, loc="left", fontsize=11)
    if quality.empty:
        _empty(ax, "no labelled predictions in this window (send outcomes with dep.feedback)")
        _empty(ax_n, "")
        return fig
    task = quality.attrs.get("task")
    metric = metric or ("accuracy" if task == "classification" else "rmse")
    if metric not in quality:
        _empty(ax, f"no {metric} in these figures")
        _empty(ax_n, "")
        return fig
    for version, rows in quality.groupby("version"):
        ax.plot(rows["time"], rows[metric], marker="o", label=f"v{version}")
    ax.set_ylabel(metric)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    width = (quality["time"].diff().min() if len(quality) > 1 else pd.Timedelta(hours=1)) * 0.8
    counts = quality.groupby("time")["labelled"].sum()
    ax_n.bar(counts.index, counts.values, width=width if pd.notna(width) and width else pd.Timedelta(minutes=30),
             color="tab:gray")
    ax_n.set_ylabel("labelled")
    ax_n.grid(alpha=0.3)
    start, end = quality["time"].min() - pd.Timedelta(hours=1), quality["time"].max() + pd.Timedelta(hours=1)
    _version_marks(ax, events, start, end)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_drift(report: "pd.DataFrame", reference: "pd.DataFrame", current: "pd.DataFrame", *, top: int = 3,
               title: str = "drift") -> "Figure":
    import numpy as np

    if report.empty:
        fig, ax = _figure(figsize=(6, 2))
        _empty(ax, "no features to compare")
        return fig
    # One scale for every method: severity >= 1 means drift. Distances drift upwards
    # (score / threshold), p-values downwards (threshold / p).
    evaluated = report[report["method"] != "n/a"]
    if evaluated.empty:
        fig, ax = _figure(figsize=(6, 2))
        _empty(ax, "no feature could be evaluated")
        return fig
    pvalue = evaluated["method"].isin(_PVALUE_METHODS)
    score = evaluated["score"].astype(float)
    threshold = evaluated["threshold"].astype(float)
    severity = np.where(pvalue, threshold / score.clip(lower=1e-300), score / threshold.clip(lower=1e-300))
    ranked = evaluated.assign(_severity=np.clip(severity, 1e-3, 1e3)).sort_values("_severity", ascending=False)
    worst = ranked[ranked["kind"].isin(["numeric", "categorical"])].head(top)
    cols = 1 + len(worst)
    fig, axes = _figure(1, cols, figsize=(3.6 * cols + 1, max(2.6, 0.32 * len(report) + 1)),
                        gridspec_kw={"width_ratios": [1.4] + [1] * len(worst)})
    axes = np.atleast_1d(axes)
    ax = axes[0]
    order = ranked.iloc[::-1]
    colors = ["tab:red" if d else "tab:green" for d in order["drifted"]]
    labels = order["feature"].astype(str)
    ax.barh(labels, order["_severity"], color=colors)
    ax.axvline(1.0, color="black", linewidth=1, label="threshold")
    ax.set_xscale("log")
    for y, (_, row) in enumerate(order.iterrows()):
        ax.annotate(f"{row['method']} {row['score']:.2g}", (1.0, y), xytext=(4, -3), textcoords="offset points",
                    fontsize=7, color="0.2")
    share = report.attrs.get("drift_share")
    flag = report.attrs.get("dataset_drift")
    ax.set_title(f"{title}: {'DRIFT' if flag else 'no drift'}"
                 + (f" ({share:.0%} of features)" if share is not None else ""), loc="left", fontsize=10)
    ax.set_xlabel("severity (>= 1: drifted)")
    ax.legend(fontsize=7, loc="lower right")
    for ax, (_, row) in zip(axes[1:], worst.iterrows()):
        _compare(ax, str(row["feature"]), reference, current, row)
    fig.tight_layout()
    return fig


def _compare(ax: Any, feature: str, reference: "pd.DataFrame", current: "pd.DataFrame", row: Any) -> None:
    import numpy as np
    import pandas as pd

    ax.set_title(f"{feature}\n{row['method']} = {row['score']:.3g}", fontsize=9)
    if feature not in reference or feature not in current:
        _empty(ax, "not in both")
        return
    ref, cur = reference[feature].dropna(), current[feature].dropna()
    if row["kind"] == "numeric":
        ref, cur = pd.to_numeric(ref, errors="coerce").dropna(), pd.to_numeric(cur, errors="coerce").dropna()
        both = np.concatenate([ref.to_numpy(float), cur.to_numpy(float)])
        if both.size == 0:
            _empty(ax, "no values")
            return
        bins = np.histogram_bin_edges(both, bins=30)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label="current")
    else:
        shares = pd.DataFrame({
            "reference": ref.astype(str).value_counts(normalize=True),
            "current": cur.astype(str).value_counts(normalize=True),
        }).fillna(0.0).head(12)
        x = np.arange(len(shares))
        ax.bar(x - 0.2, shares["reference"], 0.4, label="reference")
        ax.bar(x + 0.2, shares["current"], 0.4, label="current")
        ax.set_xticks(x, shares.index, rotation=45, fontsize=7)
    ax.legend(fontsize=7)


def plot_history(history: "pd.DataFrame", events: "pd.DataFrame | None" = None, *, title: str = "versions") -> "Figure":
    import pandas as pd

    fig, ax = _figure(figsize=(8, 3.2))
    ax.set_title(title, loc="left", fontsize=11)
    if history.empty:
        _empty(ax, "no versions yet")
        return fig
    colors = {"live": "tab:green", "warm": "tab:blue", "stopped": "tab:gray", "failed": "tab:red",
              "starting": "tab:orange"}
    for number, row in history.iterrows():
        ax.scatter(row["created_at"], number, s=70, color=colors.get(row["status"], "black"), zorder=3)
        who = row.get("created_by") or "?"
        why = row.get("description") or row.get("model") or ""
        ax.annotate(f"v{number} {row['status']} · {who} · {why}"[:60], (row["created_at"], number),
                    xytext=(6, 3), textcoords="offset points", fontsize=8)
    if events is not None and not events.empty:
        moves = events[events["kind"].isin(_VERSION_EVENTS)].dropna(subset=["version"])
        if not moves.empty:
            times = list(pd.to_datetime(moves["ts"])) + [pd.Timestamp.now(tz="UTC")]
            live = list(moves["version"].astype(int))
            ax.step(times, live + live[-1:], where="post", color="tab:green", alpha=0.5, label="live version")
            ax.legend(fontsize=8, loc="lower right")
    ax.set_ylabel("version")
    ax.set_yticks(list(history.index))
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def figure_png(fig: "Figure", dpi: int = 90) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
