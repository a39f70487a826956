"""A real multi-node Ray cluster on this host for the Ray engine's tests: a head and worker
nodes started with ``ray start``, each its own raylet with one CPU and a resource of its own,
token authentication on, usage stats off, every port on loopback. Stopped by the processes it
started (found by the cluster's own temp dir), never by a broad ``ray stop``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

_ANSWER = "NBSERVE-ANSWER:"  # marks a query's answer among whatever Ray prints


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    temp_dir: Path  # short: Ray's socket paths must fit in 107 bytes
    address: str
    http_port: int
    env: dict[str, str]
    dashboard_port: int = 0  # the head's dashboard (Ray's state API, `serve deploy`), on loopback
    nodes: list[str] = field(default_factory=list)  # the custom resource of each node, head first

    @classmethod
    def start(cls, workers: int = 2) -> "RayCluster":
        ray = str(Path(sys.executable).with_name("ray"))
        temp_dir = Path(f"/tmp/nbray-{secrets.token_hex(3)}")
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
               "RAY_USAGE_STATS_ENABLED": "0"}
        port = _free_port()
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
        cluster = cls(temp_dir, f"127.0.0.1:{port}", _free_port(), env, _free_port())
        try:
            cluster._run(ray, "start", "--head", "--port", str(port), "--temp-dir", str(temp_dir),
                         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                         "--dashboard-port", str(cluster.dashboard_port), "--resources", json.dumps({"nbserve_head": 1}),
                         *common)
            cluster.nodes.append("nbserve_head")
            for i in range(workers):
                name = f"nbserve_node_{i}"
                cluster._run(ray, "start", "--address", cluster.address, "--resources", json.dumps({name: 1}), *common)
                cluster.nodes.append(name)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:3])} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming its temp dir, and all they started."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.temp_dir) in part for part in proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except psutil.Error:
                continue
        return list(found.values())

    def query(self, code: str) -> object:
        """What ``code`` (Python that calls ``answer(value)``) answers when run as a driver of this
        cluster, in a process of its own with the cluster's token: the tests never join it
        themselves. The answer is found by its marker, since Ray may print its own lines (a node
        just lost, a warning) to stdout; a query met while the cluster settles is tried again."""
        script = ("import json, ray\n"
                  f"def answer(value): print({_ANSWER!r} + json.dumps(value), flush=True)\n"
                  f"ray.init(address={self.address!r}, log_to_driver=False, logging_level='ERROR')\n" + code)
        failure = ""
        for attempt in range(3):
            done = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                                  timeout=120)
            lines = [line for line in done.stdout.splitlines() if line.startswith(_ANSWER)]
            if done.returncode == 0 and lines:
                return json.loads(lines[-1][len(_ANSWER):])
            failure = f"exit {done.returncode}; stdout: {done.stdout[-1500:]}; stderr: {done.stderr[-3000:]}"
            time.sleep(2)
        raise RuntimeError(f"a query of the Ray cluster failed three times: {failure}")

    def replicas(self, prefix: str) -> list[dict]:
        """The live Serve replicas of the applications named ``prefix...``: node and pid, from
        Ray's state API."""
        return self.query(
            "from ray.util.state import list_actors\n"
            "answer([{'node': a.node_id, 'pid': a.pid, 'class': a.class_name} for a in "
            f"list_actors(address={self.address!r}, filters=[('state', '=', 'ALIVE')], limit=1000) "
            f"if a.class_name.startswith('ServeReplica:{prefix}')])")

    def applications(self) -> list[str]:
        return self.query("from ray import serve\nanswer(list(serve.status().applications))")

    def raylet(self, resource: str) -> psutil.Process:
        """The raylet of the node that has ``resource``."""
        for proc in self.processes():
            try:
                if proc.name() == "raylet" and any(resource in part for part in proc.cmdline()):
                    return proc
            except psutil.Error:
                continue
        raise LookupError(resource)

    def stop(self) -> None:
        procs = self.processes()
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
