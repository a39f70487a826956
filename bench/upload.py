"""Uploading a large Bento archive to a TLS agent, against curl to a plain HTTPS receiver.

    .venv/bin/python bench/upload.py [--mb 200] [--rounds 2] [--keep]

What runs, each in its own process, all on loopback with one self-signed certificate:
  agent     ``nbserve agent run --tls-cert ... --tls-key ...`` (its own NBSERVE_HOME);
            ``POST /v1/uploads`` streams the body to a staging file (SHA-256 and size
            checked) and runs check_archive over it before it answers
  client    ``nbserve._api.upload_archive`` in a fresh interpreter, pinned to the
            certificate, as a remote deploy sends an archive; it reports its own time
            and peak memory
  static    the baseline receiver: http.server + ssl, reads the body 1 MiB at a time
            into a file and answers 201, nothing else (no hash, no check)
  curl      the baseline sender: ``curl -T FILE -X POST`` (streams the file), and
            ``curl --data-binary @FILE`` (the usual spelling, which reads the whole file
            into memory first), each under /usr/bin/time -v for its peak memory

The archive is a real xz tar with a ``bento.yaml`` at its root and ``--mb`` MiB of random
bytes under ``models/`` (written as xz itself writes incompressible data, in stored LZMA2
chunks, see _StoredXz); it is not importable by bentoml, and nothing imports it: only the
upload (receive, verify, check) is measured. Rounds alternate the senders; medians. The
agent's own stages (receive_upload, check_archive) are also timed in-process, without
network or TLS, to show where its time goes.

Memory: a server's peak RSS during one upload comes from /proc/PID/status VmHWM after
writing 5 to /proc/PID/clear_refs (which resets the high-water mark to the current RSS),
minus its RSS just before; where clear_refs cannot be written, from sampling RSS every 5 ms.
The client does the same to itself around the upload. curl's peak is /usr/bin/time's
"Maximum resident set size", minus that of curl sending a 1 KiB file.

Target (printed, never asserted): a 200 MB Bento uploads with bounded memory on both
sides (peak growth < 64 MiB each side); throughput is reported against curl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as c  # noqa: E402

MIB = 1024 * 1024
TARGET_GROWTH_MIB = 64
CHUNK = MIB


# -- the baseline receiver (a child process) ---------------------------------------------


def run_static(cert: str, key: str, out_dir: str, port: int) -> None:
    """A plain HTTPS receiver: read the body 1 MiB at a time into a file, answer 201."""
    import http.server

    out = Path(out_dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            remaining = int(self.headers["Content-Length"])
            path = out / f"received-{time.monotonic_ns()}.bin"
            with path.open("wb") as handle:
                while remaining:
                    block = self.rfile.read(min(CHUNK, remaining))
                    if not block:
                        break
                    handle.write(block)
                    remaining -= len(block)
            path.unlink()  # the agent keeps its uploads in staging; nothing here needs them
            body = json.dumps({"received": int(self.headers["Content-Length"]) - remaining}).encode()
            self.send_response(201 if not remaining else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as the agent's server_context
    context.load_cert_chain(cert, key)
    server = http.server.HTTPServer((c.HOST, port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


# -- the nbserve client (a child process) ------------------------------------------------


def _status_kib(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak(pid: int | str = "self") -> bool:
    """Reset /proc/PID/status VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def run_client(url: str, token_file: str, cert: str, archive: str) -> None:
    """One upload_archive, as a remote deploy does it; print time and memory as JSON."""
    import resource

    from nbserve._api import upload_archive
    from nbserve._tls import pinned_context
    from nbserve._transport import AgentClient

    token = Path(token_file).read_text().strip()
    client = AgentClient(url, token, verify=pinned_context(Path(cert).read_text()))
    timings: dict[str, float] = {}
    post = client.upload

    def timed_upload(*args: Any, **kwargs: Any) -> Any:  # the POST alone, after the digest pass
        start = time.perf_counter()
        try:
            return post(*args, **kwargs)
        finally:
            timings["post_s"] = time.perf_counter() - start

    client.upload = timed_upload  # type: ignore[method-assign]
    reset = _reset_peak()
    rss0 = _status_kib("VmRSS")
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    start = time.perf_counter()
    upload_id = upload_archive(client, archive, progress=False)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    client.close()
    print(json.dumps({
        "upload_id": upload_id, "total_s": total, "post_s": timings["post_s"], "cpu_s": cpu,
        "rss_before_kib": rss0, "hwm_kib": _status_kib("VmHWM") if reset else None,
        "maxrss_before_kib": maxrss0, "maxrss_after_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


# -- measuring -----------------------------------------------------------------------------


class PeakRss:
    """Peak RSS growth of a running process while a block runs (see the module docstring)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.pid = pid
        self.method = "clear_refs"
        self.growth_kib = 0
        self.cpu_s = 0.0

    def __enter__(self) -> PeakRss:
        self._times0 = self.proc.cpu_times()
        self.reset = _reset_peak(self.pid)
        self.rss0 = _status_kib("VmRSS", self.pid)
        self._samples = [self.rss0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if not self.reset:  # VmHWM is exact; sample only without it
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(Exception):
                self._samples.append(self.proc.memory_info().rss // 1024)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        times = self.proc.cpu_times()
        self.cpu_s = (times.user + times.system) - (self._times0.user + self._times0.system)
        if self.reset:
            peak = _status_kib("VmHWM", self.pid)
        else:
            self.method = "5 ms sampling"
            peak = max(self._samples)
        self.growth_kib = max(0, peak - self.rss0)


def time_v(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``cmd`` under /usr/bin/time -v; (result, peak RSS in KiB)."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, timeout=900)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"/usr/bin/time gave no peak RSS: {out.stderr[-600:]}")
    return out, int(match.group(1))


def curl(mode: str, url: str, archive: Path, cert: Path,
         headers: list[str]) -> tuple[float, int, dict[str, Any]]:
    """One curl POST of ``archive``; (seconds from curl's time_total, peak RSS KiB, answer)."""
    send = ["-T", str(archive), "-X", "POST"] if mode == "stream" else ["--data-binary", f"@{archive}"]
    cmd = ["curl", "-sS", "--fail-with-body", "--cacert", str(cert),
           "-H", "Content-Type: application/octet-stream", "-H", "Expect:",
           *[arg for h in headers for arg in ("-H", h)], *send,
           "-w", "\nNBSERVE_CURL %{time_total}", url]
    out, peak = time_v(cmd)
    if out.returncode != 0:
        raise RuntimeError(f"curl failed ({out.returncode}): {out.stdout[-600:]} {out.stderr[-600:]}")
    body, _, tail = out.stdout.rpartition("\nNBSERVE_CURL ")
    return float(tail), peak, json.loads(body)


class _StoredXz:
    """A writable file that is an .xz stream whose LZMA2 chunks are all stored ("uncompressed
    chunks"), which is what xz itself emits for incompressible data (a 3-byte header per
    64 KiB), at disk speed instead of xz -0's ~5 MiB/s on random bytes. One block, CRC32 check
    (export_bento's xz uses CRC64; liblzma decodes either at well over 1 GB/s); any xz decoder
    reads it (``xz -t`` is run on it)."""

    _FLAGS = b"\x00\x01"  # check type CRC32

    def __init__(self, out: Any) -> None:
        import zlib

        self._crc32 = zlib.crc32
        self.out = out
        self.crc = 0
        self.uncompressed = 0
        self.compressed = 0
        self.pending = bytearray()
        self.first = True
        out.write(b"\xfd7zXZ\x00" + self._FLAGS + self._crc32(self._FLAGS).to_bytes(4, "little"))
        # Block header: size byte ((12 / 4) - 1), flags (1 filter, no sizes), LZMA2 (0x21) with a
        # 1-byte property (dictionary 256 KiB, as xz -0), padding to 8, CRC32.
        head = b"\x02\x00\x21\x01\x0c\x00\x00\x00"
        self.block_header = head + self._crc32(head).to_bytes(4, "little")
        out.write(self.block_header)

    def write(self, data: bytes) -> int:
        self.pending += data
        while len(self.pending) >= 65536:
            self._chunk(bytes(self.pending[:65536]))
            del self.pending[:65536]
        return len(data)

    def _chunk(self, data: bytes) -> None:
        control = b"\x01" if self.first else b"\x02"  # stored, with / without dictionary reset
        self.first = False
        self.out.write(control + (len(data) - 1).to_bytes(2, "big"))
        self.out.write(data)
        self.compressed += 3 + len(data)
        self.uncompressed += len(data)
        self.crc = self._crc32(data, self.crc)

    def close(self) -> None:
        if self.pending:
            self._chunk(bytes(self.pending))
            self.pending.clear()
        self.out.write(b"\x00")  # end of LZMA2 data
        self.compressed += 1
        self.out.write(b"\x00" * (-(len(self.block_header) + self.compressed) % 4))
        self.out.write(self.crc.to_bytes(4, "little"))
        unpadded = len(self.block_header) + self.compressed + 4
        index = b"\x00" + _varint(1) + _varint(unpadded) + _varint(self.uncompressed)
        index += b"\x00" * (-len(index) % 4)
        index += self._crc32(index).to_bytes(4, "little")
        self.out.write(index)
        backward = (len(index) // 4 - 1).to_bytes(4, "little")
        footer_crc = self._crc32(backward + self._FLAGS).to_bytes(4, "little")
        self.out.write(footer_crc + backward + self._FLAGS + b"YZ")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def make_archive(root: Path, mib: int) -> tuple[Path, float]:
    """An xz tar (as bentoml.export_bento writes: members ./bento.yaml, ./models/...) holding
    ``mib`` MiB of random bytes; (path, seconds it took)."""
    import io
    import tarfile

    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"upload-bench-{mib}mib.bento"

    def add(tar: tarfile.TarFile, name: str, kind: bytes, data: Any = None, size: int = 0) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mtime = kind, size, int(time.time())
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        tar.addfile(info, data)

    class Random(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            view = memoryview(buffer).cast("B")
            view[:] = os.urandom(len(view))
            return len(view)

    with archive.open("wb") as out:
        xz = _StoredXz(out)
        with tarfile.open(fileobj=xz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            yaml = b"service: service:Bench\nname: upload-bench\nversion: v1\n"
            add(tar, ".", tarfile.DIRTYPE)
            add(tar, "./bento.yaml", tarfile.REGTYPE, io.BytesIO(yaml), len(yaml))
            for folder in ("./models", "./models/big"):
                add(tar, folder, tarfile.DIRTYPE)
            add(tar, "./models/big/weights.bin", tarfile.REGTYPE,
                io.BufferedReader(Random(), buffer_size=4 * MIB), mib * MIB)
        xz.close()
    subprocess.run(["xz", "-t", str(archive)], check=True)  # a valid .xz, whole-stream CRC included
    return archive, time.perf_counter() - start


def sha256sum_seconds(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    return time.perf_counter() - start


def agent_stages(archive: Path, staging: Path) -> dict[str, float]:
    """The agent's own work on an upload, in this process, without network or TLS: the body
    fed to receive_upload in 64 KiB pieces (as uvicorn hands it over), then check_archive."""
    import asyncio
    import hashlib

    from nbserve._agent._archive import check_archive, receive_upload

    digest = hashlib.sha256()
    with archive.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)

    async def body() -> Any:
        with archive.open("rb") as handle:
            while block := handle.read(64 * 1024):
                yield block

    start = time.perf_counter()
    path = asyncio.run(receive_upload(body(), staging, size=archive.stat().st_size,
                                      sha256=digest.hexdigest()))
    received = time.perf_counter()
    check_archive(path)
    checked = time.perf_counter()
    path.unlink()
    return {"receive_s": received - start, "check_s": checked - received}


def wait_for_file(path: Path, tree: c.ProcessTree, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not tree.alive():
            raise RuntimeError(f"the process died; see {tree.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


def wait_for_tls(port: int, tree: c.ProcessTree, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((c.HOST, port), timeout=0.5):
                return
        except OSError:
            if not tree.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the static receiver did not start; see {tree.log_path}") from None
            time.sleep(0.05)


# -- orchestration -------------------------------------------------------------------------


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


class Bench:
    """The running agent and static receiver, and one measured upload through each sender."""

    def __init__(self, root: Path, agent: c.ProcessTree, static: c.ProcessTree, static_port: int,
                 cert: Path, env: dict[str, str]) -> None:
        home = root / "nbhome"
        self.agent, self.static, self.cert, self.env = agent, static, cert, env
        self.agent_url = json.loads((home / "agent.json").read_text())["url"]
        self.token_file = home / "token"
        self.static_url = f"https://{c.HOST}:{static_port}/upload"
        self._digests: dict[Path, str] = {}

    def _measured(self, server_pid: int, send: Any) -> tuple[Any, dict[str, Any]]:
        """Run ``send()`` (which starts the client process), with the server's peak RSS growth
        and CPU, the client process's CPU, and the CPU the rest of the machine used."""
        with PeakRss(server_pid) as server:
            busy0, wall0, kids0 = c.busy_seconds(), time.monotonic(), children_cpu()
            got = send()
            client_cpu = children_cpu() - kids0
            wall = time.monotonic() - wall0
            busy = c.busy_seconds() - busy0
        return got, {"server_growth_kib": server.growth_kib, "server_cpu_s": server.cpu_s,
                     "client_cpu_s": client_cpu, "server_method": server.method,
                     "others_cores": max(0.0, busy - server.cpu_s - client_cpu) / wall}

    def nbserve(self, path: Path) -> dict[str, Any]:
        cmd = [c.PY, __file__, "client", self.agent_url, str(self.token_file), str(self.cert), str(path)]
        out, figures = self._measured(self.agent.pid, lambda: subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=900))
        if out.returncode != 0:
            raise RuntimeError(f"upload client failed: {out.stderr[-1500:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        if got["hwm_kib"] is not None:
            peak, growth = got["hwm_kib"], got["hwm_kib"] - got["rss_before_kib"]
        else:
            peak, growth = got["maxrss_after_kib"], got["maxrss_after_kib"] - got["maxrss_before_kib"]
        # The client's CPU for the upload alone, as it measured it (digest pass included);
        # the whole process (start-up, imports) counted only towards "others".
        return {**figures, "s": got["total_s"], "post_s": got["post_s"], "client_peak_kib": peak,
                "client_growth_kib": growth, "client_cpu_s": got["cpu_s"]}

    def curl(self, mode: str, target: str, path: Path) -> dict[str, Any]:
        if target == "agent":
            if path not in self._digests:
                out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
                self._digests[path] = out.stdout.split()[0]
            url, pid = self.agent_url + "/v1/uploads", self.agent.pid
            headers = [f"Authorization: Bearer {self.token_file.read_text().strip()}",
                       f"X-Nbserve-Sha256: {self._digests[path]}"]
        else:
            url, pid, headers = self.static_url, self.static.pid, []
        (seconds, peak, answer), figures = self._measured(
            pid, lambda: curl(mode, url, path, self.cert, headers))
        if answer.get("size", answer.get("received")) != path.stat().st_size:
            raise RuntimeError(f"unexpected answer {answer}")
        return {**figures, "s": seconds, "client_peak_kib": peak}


def start(root: Path) -> tuple[Bench, list[c.ProcessTree]]:
    """A TLS agent and the static receiver, both with one self-signed certificate."""
    from nbserve._tls import make_self_signed

    cert, key = root / "tls" / "cert.pem", root / "tls" / "key.pem"
    make_self_signed(cert, key, [c.HOST, "localhost"])
    home = root / "nbhome"
    env = c.child_env(NBSERVE_HOME=str(home), PYTHONUNBUFFERED="1")
    trees = [c.ProcessTree(
        [c.PY, "-m", "nbserve", "agent", "run", "--home", str(home), "--host", c.HOST, "--port", "0",
         "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env, cwd=c.ROOT, log_path=root / "logs" / "agent.log")]
    (root / "static-in").mkdir()
    static_port = c.free_port()
    trees.append(c.ProcessTree(
        [c.PY, __file__, "static", str(cert), str(key), str(root / "static-in"), str(static_port)],
        env=env, cwd=c.ROOT, log_path=root / "logs" / "static.log"))
    try:
        wait_for_file(home / "agent.json", trees[0])
        wait_for_tls(static_port, trees[1])
    except BaseException:
        for tree in trees:
            tree.stop()
        raise
    return Bench(root, trees[0], trees[1], static_port, cert, env), trees


def run(args: argparse.Namespace) -> None:
    with c.scratch("upload", keep=args.keep) as root:
        trees: list[c.ProcessTree] = []
        try:
            print(c.machine_line())
            archive, made_s = make_archive(root, args.mb)
            small, _ = make_archive(root / "small", 1)
            size = archive.stat().st_size
            print(f"archive: {archive.name}, {size / MIB:.1f} MiB ({size} bytes), tar of "
                  f"{args.mb} MiB of random bytes + bento.yaml, made in {made_s:.1f} s")
            tiny = root / "tiny.bin"
            tiny.write_bytes(os.urandom(1024))
            bench, trees = start(root)
            version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
            print(f"agent {bench.agent_url} (pid {bench.agent.pid}, TLS, self-signed), static receiver "
                  f"{bench.static_url} (pid {bench.static.pid}), curl {version}")

            senders: dict[str, tuple[str, Any]] = {
                "nbserve": ("upload_archive -> agent POST /v1/uploads", bench.nbserve),
                "curl-agent": ("curl -T -> agent POST /v1/uploads",
                               lambda p: bench.curl("stream", "agent", p)),
                "curl": ("curl -T -> static receiver", lambda p: bench.curl("stream", "static", p)),
                "curl-data": ("curl --data-binary @ -> static receiver",
                              lambda p: bench.curl("data", "static", p)),
            }
            # Warm-up (unmeasured): first requests, imports on first use, and curl's own
            # footprint sending a 1 KiB file, the base its growth is measured from.
            for _label, send in senders.values():
                send(small)
            _, curl_base_kib, _ = curl("stream", bench.static_url, tiny, bench.cert, [])
            print(f"warm-up done (1 MiB archive through every sender); curl sending 1 KiB peaks at "
                  f"{curl_base_kib / 1024:.1f} MiB RSS")

            results: dict[str, list[dict[str, Any]]] = {name: [] for name in senders}
            hashes = []
            for rnd in range(args.rounds):
                order = list(senders) if rnd % 2 == 0 else list(reversed(senders))
                for name in order:
                    out = senders[name][1](archive)
                    if name != "nbserve":
                        out["client_growth_kib"] = max(0, out["client_peak_kib"] - curl_base_kib)
                    results[name].append(out)
                    kib = {k: out[k] / 1024 for k in ("client_peak_kib", "client_growth_kib",
                                                       "server_growth_kib")}
                    print(f"  round {rnd + 1} {name:<10} {out['s']:6.2f} s {size / MIB / out['s']:7.1f} MiB/s"
                          f"  client peak {kib['client_peak_kib']:6.1f} MiB (+{kib['client_growth_kib']:.1f})"
                          f"  server +{kib['server_growth_kib']:.1f} MiB, CPU {out['server_cpu_s']:.2f} s"
                          f"  (others used {out['others_cores']:.2f} cores)", flush=True)
                hashes.append(sha256sum_seconds(archive))
            stages = [agent_stages(archive, root / "stages") for _ in range(args.rounds)]
            report(args, size, senders, results, c.median(hashes),
                   {k: c.median([s[k] for s in stages]) for k in stages[0]})
        finally:
            left = [str(pid) for tree in reversed(trees) for pid in tree.stop()]
            left += c.reap(str(root))
            print(f"processes left behind: {', '.join(left) if left else 'none'}")


def report(args: argparse.Namespace, size: int, senders: dict[str, Any],
           results: dict[str, list[dict[str, Any]]], sha_s: float, stages: dict[str, float]) -> None:
    def med(name: str, key: str) -> float:
        return c.median([r[key] for r in results[name]])

    mib = size / MIB
    print(f"\nupload of a {mib:.0f} MiB Bento archive over TLS on loopback, medians of {args.rounds} "
          f"alternating rounds; memory = peak RSS growth during the upload "
          f"(server: {results['nbserve'][0]['server_method']})")
    header = (f"| {'sender -> receiver':<42} | {'s':>5} | {'MiB/s':>6} | {'client peak MiB':>15} | "
              f"{'client +MiB':>11} | {'server +MiB':>11} | {'client CPU s':>12} | {'server CPU s':>12} | "
              f"{'others':>6} |")
    print(header)
    print("| " + " | ".join(["---"] + ["---:"] * 8) + " |")
    for name, (label, _send) in senders.items():
        print(f"| {label:<42} | {med(name, 's'):>5.2f} | {mib / med(name, 's'):>6.1f} | "
              f"{med(name, 'client_peak_kib') / 1024:>15.1f} | "
              f"{med(name, 'client_growth_kib') / 1024:>11.1f} | "
              f"{med(name, 'server_growth_kib') / 1024:>11.1f} | {med(name, 'client_cpu_s'):>12.2f} | "
              f"{med(name, 'server_cpu_s'):>12.2f} | {med(name, 'others_cores'):>6.2f} |")
    nb, base = mib / med("nbserve", "s"), mib / med("curl", "s")
    print(f"\nsha256sum of the archive alone: {sha_s:.2f} s ({mib / sha_s:.0f} MiB/s)")
    post = med("nbserve", "post_s")
    print(f"upload_archive: {med('nbserve', 's'):.2f} s = digest pass {med('nbserve', 's') - post:.2f} s "
          f"+ POST (send, agent verifies and checks) {post:.2f} s")
    print(f"the agent's own work, in-process without network or TLS: receive_upload (hash + write, "
          f"64 KiB pieces) {stages['receive_s']:.2f} s, then check_archive {stages['check_s']:.2f} s")
    print(f"throughput: nbserve {nb:.1f} MiB/s vs curl -T to the static receiver {base:.1f} MiB/s: "
          f"ratio {nb / base:.2f}x  (curl --data-binary: {mib / med('curl-data', 's'):.1f} MiB/s; "
          f"curl -T to the agent: {mib / med('curl-agent', 's'):.1f} MiB/s)")
    client_growth = max(r["client_growth_kib"] for r in results["nbserve"]) / 1024
    server_growth = max(r["server_growth_kib"] for r in results["nbserve"]) / 1024
    ok = client_growth < TARGET_GROWTH_MIB and server_growth < TARGET_GROWTH_MIB
    print(f"target: a {mib:.0f} MiB upload with peak growth < {TARGET_GROWTH_MIB} MiB on each side: "
          f"client +{client_growth:.1f} MiB, agent +{server_growth:.1f} MiB (worst round): "
          f"{'met' if ok else 'MISSED'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("static", "client"):
        role, *rest = sys.argv[1:]
        if role == "static":
            run_static(rest[0], rest[1], rest[2], int(rest[3]))
        else:
            run_client(*rest)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="MiB of random data in the archive (default 200)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
