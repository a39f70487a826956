"""``GET /metrics``: the monitor's figures in Prometheus text format.

A custom collector reads the monitor's running totals at scrape time, so the data path
pays nothing for Prometheus. Latency buckets are cumulative counts read from the
log-bucketed histograms (each boundary exact to within the histogram's 0.5%).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from ._manager import Manager

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _MonitorCollector:
    def __init__(self, manager: "Manager") -> None:
        self.manager = manager

    def collect(self) -> Iterator[object]:
        monitor = self.manager.monitor
        with monitor._lock:  # a consistent snapshot of the running totals
            totals = {key: (dict(t.by_status), t.rows, t.histogram.counts.copy(), t.histogram.count,
                            t.histogram.total) for key, t in monitor.totals.items()}
            unreadable = {key: t.unreadable for key, t in monitor.totals.items()}
            protocols = {key: dict(t.by_protocol) for key, t in monitor.totals.items()}
            resources = dict(monitor.resources_now)
        requests = CounterMetricFamily(
            "nbserve_requests", "Requests through stable URLs, by answering version and status code",
            labels=["deployment", "version", "code"],
        )
        by_protocol = CounterMetricFamily(
            "nbserve_protocol_requests", "Requests through stable URLs, by answering version and wire format "
            "(bentoml, v2, mlflow, openai)", labels=["deployment", "version", "protocol"],
        )
        rows = CounterMetricFamily("nbserve_payload_rows", "Rows in prediction payloads",
                                   labels=["deployment", "version"])
        unread = CounterMetricFamily(
            "nbserve_unreadable_payloads", "Prediction bodies that could not be read as JSON (rows unknown)",
            labels=["deployment", "version"],
        )
        latency = HistogramMetricFamily(
            "nbserve_request_duration_seconds", "Latency seen at the stable URL (proxy included)",
            labels=["deployment", "version"],
        )
        from .._histogram import LatencyHistogram

        for (name, version), (by_status, n_rows, counts, count, total) in sorted(totals.items()):
            labels = [name, str(version)]
            for code, n in sorted(by_status.items()):
                requests.add_metric([*labels, str(code)], n)
            for protocol, n in sorted(protocols[(name, version)].items()):
                by_protocol.add_metric([*labels, protocol], n)
            rows.add_metric(labels, n_rows)
            unread.add_metric(labels, unreadable[(name, version)])
            hist = LatencyHistogram()
            hist.counts, hist.count, hist.total = counts, count, total
            cumulative = hist.cumulative_below(BUCKETS)
            buckets = [(repr(b), c) for b, c in zip(BUCKETS, cumulative)] + [("+Inf", count)]
            latency.add_metric(labels, buckets, total)
        yield requests
        yield by_protocol
        yield rows
        yield unread
        yield latency

        cpu = GaugeMetricFamily("nbserve_version_cpu_percent", "CPU of a version's process tree (100 = one core)",
                                labels=["deployment", "version"])
        rss = GaugeMetricFamily("nbserve_version_resident_memory_bytes", "RSS of a version's process tree",
                                labels=["deployment", "version"])
        procs = GaugeMetricFamily("nbserve_version_processes", "Processes in a version's tree",
                                  labels=["deployment", "version"])
        for (name, version), r in sorted(resources.items()):
            labels = [name, str(version)]
            cpu.add_metric(labels, r["cpu_percent"])
            rss.add_metric(labels, r["rss_bytes"])
            procs.add_metric(labels, r["processes"])
        yield cpu
        yield rss
        yield procs

        live = GaugeMetricFamily("nbserve_live_version", "The version the stable URL serves (0: none)",
                                 labels=["deployment"])
        for row in self.manager.registry.list_deployments():
            live.add_metric([row.name], row.live_version or 0 if row.state == "serving" else 0)
        yield live
        yield CounterMetricFamily("nbserve_capture_dropped", "Requests not recorded (capture queue full)",
                                  value=monitor.dropped)


def render(manager: "Manager") -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MonitorCollector(manager))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
