"""StableEndpoint against real upstreams (uvicorn subprocesses) over loopback HTTP.

Every test runs under uvloop (what the agent uses) and the stock asyncio loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
import pytest
import uvloop

from nbserve._agent._proxy import RequestRecord, StableEndpoint, Upstream

APP = Path(__file__).with_name("_upstream_app.py")
HOST = "127.0.0.1"
STARTED: list[
    subprocess.Popen[bytes]
] = []  # every upstream this module started, for the leak check


# -- upstream processes ----------------------------------------------------------------


class UpstreamProcess:
    """One upstream server subprocess; the test binds its socket and hands it over."""

    def __init__(self, label: str, mode: str = "app", port: int = 0) -> None:
        self.label = label
        self.mode = mode
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def upstream(self) -> Upstream:
        return Upstream(HOST, self.port, self.label)

    def start(self) -> UpstreamProcess:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(256)
        self.port = sock.getsockname()[1]
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(APP),
                    "--fd",
                    str(sock.fileno()),
                    "--label",
                    self.label,
                    "--mode",
                    self.mode,
                ],
                pass_fds=[sock.fileno()],
            )
            STARTED.append(self.proc)
        finally:
            sock.close()  # the child holds it now; once it dies the port refuses connections
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            assert self.proc is not None and self.proc.poll() is None, (
                "upstream exited during startup"
            )
            try:
                # Not /whoami: in oneshot mode any path answers once per connection.
                r = httpx.get(f"http://{HOST}:{self.port}/whoami", timeout=2, trust_env=False)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"upstream {self.label} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module", autouse=True)
def no_orphans() -> Iterator[None]:
    """After this module's fixtures stopped their upstreams, none may be left running."""
    yield
    left = [p.pid for p in STARTED if p.poll() is None]
    left += [
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and str(APP) in " ".join(p.cmdline())
    ]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"upstream processes left running: {sorted(set(left))}"


@pytest.fixture(scope="module")
def up_a() -> Iterator[UpstreamProcess]:
    proc = UpstreamProcess("A").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def up_b() -> Iterator[UpstreamProcess]:
    proc = UpstreamProcess("B").start()
    yield proc
    proc.stop()


@pytest.fixture
def spawn() -> Iterator[Callable[..., UpstreamProcess]]:
    """Start throw-away upstreams (ones a test kills, or whose counters must start at zero)."""
    procs: list[UpstreamProcess] = []

    def _spawn(label: str, mode: str = "app", port: int = 0) -> UpstreamProcess:
        proc = UpstreamProcess(label, mode, port)
        procs.append(proc)
        return proc.start()

    yield _spawn
    for proc in procs:
        proc.stop()
        assert proc.proc is not None and proc.proc.poll() is not None


# -- running tests in an event loop ----------------------------------------------------


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def _run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 60))

    return _run


class Proxy:
    """A started StableEndpoint plus an httpx client aimed at it."""

    def __init__(self, upstream: Upstream | None, **kwargs: Any) -> None:
        self.records: list[RequestRecord] = []
        kwargs.setdefault("observer", self.records.append)
        self.ep = StableEndpoint("demo", upstream, **kwargs)

    async def __aenter__(self) -> Self:
        port = await self.ep.start()
        self.url = f"http://{HOST}:{port}"
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30, trust_env=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.ep.close()


async def load(
    client: httpx.AsyncClient, n: int, concurrency: int, path: str = "/whoami"
) -> tuple[list[httpx.Response], list[BaseException]]:
    """n GET requests with `concurrency` workers; returns responses and failures."""
    responses: list[httpx.Response] = []
    failures: list[BaseException] = []
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            try:
                r = await client.get(path)
                if r.status_code != 200:
                    failures.append(AssertionError(f"{r.status_code} {r.text}"))
                responses.append(r)
            except httpx.HTTPError as exc:
                failures.append(exc)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return responses, failures


def check_labels(responses: list[httpx.Response]) -> set[str]:
    """The version header must name the upstream that actually answered."""
    labels = set()
    for r in responses:
        assert r.headers["x-nbserve-version"] == r.json()["label"]
        labels.add(r.headers["x-nbserve-version"])
    return labels


async def raw_exchange(port: int, data: bytes, read_timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(-1), read_timeout)
    writer.close()
    return out


def parse_responses(
    data: bytes, head_requests: frozenset[int] = frozenset()
) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into (status, headers, body); `head_requests`: indexes answering HEAD."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = b""
        if len(out) in head_requests:
            pass
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data = data[:n], data[n:]
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size_line, _, data = data.partition(b"\r\n")
                n = int(size_line, 16)
                body += data[:n]
                data = data[n + 2 :]
                if n == 0:
                    break
        out.append((int(status_line.split()[1]), headers, body))
    return out


# -- forwarding ------------------------------------------------------------------------


def test_forwards_method_path_query_body_and_headers(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            r = await p.client.post(
                "/echo?a=1&b=x%20y",
                content=b"hello body",
                headers={
                    "x-custom": "value",
                    "connection": "keep-alive, x-hop",
                    "x-hop": "dropped because named in Connection",
                    "te": "trailers",
                    "keep-alive": "timeout=5",
                    "x-forwarded-for": "10.1.2.3",
                    "authorization": "Bearer nbs_secret",
                },
            )
            assert r.status_code == 200
            assert r.headers["x-nbserve-version"] == "A"
            echo = r.json()
            assert echo["method"] == "POST"
            assert echo["path"] == "/echo"
            assert echo["query"] == "a=1&b=x%20y"
            assert echo["body"] == "hello body"
            headers = dict(echo["headers"])
            assert headers["x-custom"] == "value"
            assert headers["content-length"] == "10"
            assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
            assert headers["x-forwarded-host"] == p.url.removeprefix("http://")
            assert headers["host"] == p.url.removeprefix("http://")
            for hop in ("connection", "keep-alive", "te", "x-hop", "transfer-encoding"):
                assert hop not in headers
            assert "authorization" not in headers  # credentials stop at the stable URL
            for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
                r = await p.client.request(
                    method, "/echo?m=1", content=b"x" if method != "GET" else None
                )
                assert r.status_code == 200 and r.json()["method"] == method
            # Statuses pass through untouched, with the version header.
            for code in (201, 404, 500):
                r = await p.client.get(f"/status/{code}")
                assert r.status_code == code and r.headers["x-nbserve-version"] == "A"
            r = await p.client.get("/status/204")
            assert r.status_code == 204 and r.content == b""
            r = await p.client.get("/whoami")  # the connection is still in step after a 204
            assert r.json()["label"] == "A"

    run(main())


def test_chunked_request_body_is_forwarded_with_content_length(run, up_a):
    async def main() -> None:
        async def body():
            for part in (b"abc", b"", b"defgh", b"i" * 10000):
                yield part

        async with Proxy(up_a.upstream) as p:
            r = await p.client.post("/echo", content=body())
            echo = r.json()
            assert echo["body"] == "abcdefgh" + "i" * 10000
            headers = dict(echo["headers"])
            assert headers["content-length"] == str(8 + 10000)
            assert "transfer-encoding" not in headers

    run(main())


def test_expect_100_continue(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            reader, writer = await asyncio.open_connection(HOST, p.ep.port)
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                b"Connection: close\r\n\r\n"
            )
            line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert line == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            [(status, _, body)] = parse_responses(await asyncio.wait_for(reader.read(-1), 5))
            writer.close()
            assert status == 200 and json.loads(body)["body"] == "hello"
            assert "expect" not in dict(json.loads(body)["headers"])

    run(main())


def test_head_requests_keep_the_connection_in_step(run, spawn):
    up = spawn("H")

    async def main() -> None:
        async with Proxy(up.upstream) as p:
            for _ in range(3):
                r = await p.client.head("/echo")
                assert r.status_code == 200
                assert r.content == b""
                assert int(r.headers["content-length"]) > 0
                assert r.headers["x-nbserve-version"] == "H"
                r = await p.client.get("/whoami")
                assert r.json()["label"] == "H"
            r = await p.client.get("/conns")
            assert r.json()["proxied_connections"] == 1  # HEAD did not cost a pooled connection

    run(main())


def test_streams_chunked_responses_as_they_arrive(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            start = time.monotonic()
            arrivals: list[float] = []
            data = b""
            async with p.client.stream("GET", "/stream?chunks=5&delay_ms=400") as r:
                assert r.headers["x-nbserve-version"] == "A"
                assert r.headers["transfer-encoding"] == "chunked"
                async for chunk in r.aiter_raw():
                    arrivals.append(time.monotonic() - start)
                    data += chunk
            assert data == b"".join(f"chunk-{i};".encode() for i in range(5))
            assert arrivals[0] < 1.0, "first chunk was held back"
            assert arrivals[-1] >= 1.5
            assert len(arrivals) >= 3

    run(main())


def test_pipelined_requests_are_answered_in_order(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            data = (
                b"GET /sleep?ms=150&i=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /echo?i=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"HEAD /echo?i=3 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /echo?i=4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nde\r\n0\r\n\r\n"
                b"GET /sleep?ms=1&i=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n"  # after Connection: close: ignored
            )
            responses = parse_responses(
                await raw_exchange(p.ep.port, data), head_requests=frozenset({2})
            )
            assert [r[0] for r in responses] == [200] * 5
            assert all(r[1]["x-nbserve-version"] == "A" for r in responses)
            assert json.loads(responses[0][2])["query"] == "ms=150&i=1"
            assert json.loads(responses[1][2])["query"] == "i=2"
            assert json.loads(responses[1][2])["body"] == "abc"
            assert responses[2][2] == b"" and int(responses[2][1]["content-length"]) > 0
            assert json.loads(responses[3][2])["body"] == "de"
            assert json.loads(responses[4][2])["query"] == "ms=1&i=5"

    run(main())


def test_keepalive_connections_to_the_upstream_are_pooled(run, spawn):
    up = spawn("P")

    async def main() -> None:
        async with Proxy(up.upstream) as p:
            for _ in range(50):
                assert (await p.client.get("/whoami")).status_code == 200
            assert (await p.client.get("/conns")).json()["proxied_connections"] == 1
            # Several clients, one proxy: at most one upstream connection per concurrent request.
            clients = [httpx.AsyncClient(base_url=p.url, trust_env=False) for _ in range(8)]
            try:
                for _ in range(20):
                    rs = await asyncio.gather(*(c.get("/sleep?ms=5") for c in clients))
                    assert all(r.status_code == 200 for r in rs)
            finally:
                for c in clients:
                    await c.aclose()
            assert (await p.client.get("/conns")).json()["proxied_connections"] <= 8

    run(main())


def test_pooled_connections_are_renewed_so_a_late_worker_gets_traffic(run, spawn):
    up = spawn("R")

    async def main() -> None:
        async with Proxy(up.upstream, pool_max_age=0.2) as p:
            for _ in range(20):  # steady traffic: never idle long enough to expire
                assert (await p.client.get("/whoami")).status_code == 200
                await asyncio.sleep(0.05)
            # ~1 s of traffic, connections renewed every 0.2 s: each renewal is a new accept,
            # which is where a worker that started late gets its share.
            assert (await p.client.get("/conns")).json()["proxied_connections"] >= 4

    run(main())


def test_upstream_connection_close_is_not_pooled(run, spawn):
    up = spawn("C")

    async def main() -> None:
        async with Proxy(up.upstream) as p:
            for _ in range(3):
                r = await p.client.get("/status/200?close=1")
                assert r.status_code == 200 and r.headers["connection"] == "close"
            assert not p.ep._pools.get(up.upstream).idle
            r = await p.client.get("/conns")
            assert r.json()["proxied_connections"] == 4

    run(main())


# -- switching upstreams ---------------------------------------------------------------


def test_set_upstream_switches_and_labels_responses(run, up_a, up_b):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            assert p.ep.upstream == up_a.upstream
            r = await p.client.get("/whoami")
            assert r.headers["x-nbserve-version"] == r.json()["label"] == "A"
            p.ep.set_upstream(up_b.upstream)
            assert p.ep.upstream == up_b.upstream
            r = await p.client.get("/whoami")  # same client connection, new upstream
            assert r.headers["x-nbserve-version"] == r.json()["label"] == "B"
            assert r.json()["pid"] == up_b.proc.pid

    run(main())


def test_switching_under_concurrent_load_drops_nothing(run, up_a, up_b):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            done = asyncio.Event()

            async def flipper() -> int:
                flips = 0
                while not done.is_set():
                    await asyncio.sleep(0.01)
                    p.ep.set_upstream(up_b.upstream if flips % 2 == 0 else up_a.upstream)
                    flips += 1
                return flips

            flips = asyncio.create_task(flipper())
            responses, failures = await load(p.client, 500, 16, "/sleep?ms=5")
            done.set()
            assert await flips >= 4
            assert failures == []
            assert len(responses) == 500
            assert check_labels(responses) == {"A", "B"}
            assert p.ep.inflight() == 0

    run(main())


def test_switch_drain_stop_sequence_under_load_drops_nothing(run, spawn, up_b):
    """The agent's recipe: set_upstream(new); drain(old); close_idle(old); stop old."""
    old = spawn("OLD")

    async def main() -> None:
        async with Proxy(old.upstream) as p:
            running = asyncio.create_task(load(p.client, 600, 8, "/sleep?ms=3"))
            while len(p.records) < 150:
                await asyncio.sleep(0.005)
            p.ep.set_upstream(up_b.upstream)
            assert await p.ep.drain(old.upstream, timeout=10)
            p.ep.close_idle(old.upstream)
            old.kill()
            responses, failures = await running
            assert failures == []
            assert check_labels(responses) == {"OLD", "B"}

    run(main())


def test_killed_upstream_with_idle_pool_then_switch_drops_nothing(run, spawn, up_b):
    doomed = spawn("DOOMED")

    async def main() -> None:
        async with Proxy(doomed.upstream) as p:
            _, failures = await load(p.client, 100, 8)
            assert failures == []
            assert p.ep._pools.get(doomed.upstream).idle  # it holds idle pooled connections
            doomed.kill()
            p.ep.set_upstream(up_b.upstream)
            responses, failures = await load(p.client, 200, 8)
            assert failures == []
            assert check_labels(responses) == {"B"}

    run(main())


def test_upstream_restarted_in_place_drops_nothing(run, spawn):
    first = spawn("R")

    async def main() -> None:
        async with Proxy(first.upstream) as p:
            _, failures = await load(p.client, 100, 8)
            assert failures == []
            first.kill()
            second = await asyncio.to_thread(
                spawn, "R", "app", first.port
            )  # same port, same Upstream
            responses, failures = await load(p.client, 200, 8)
            assert failures == []
            assert {r.json()["pid"] for r in responses} == {second.proc.pid}

    run(main())


def test_stale_pooled_connection_is_retried_on_a_fresh_one(run, spawn):
    up = spawn("S", mode="oneshot")  # closes every reused connection without answering

    async def main() -> None:
        async with Proxy(up.upstream) as p:
            for i in range(20):
                r = await p.client.post(f"/req{i}", content=b"payload")
                assert r.status_code == 200, r.text
                assert r.json()["path"] == f"/req{i}"
            assert r.json()["dropped"] >= 15  # those were retried
            assert [rec.status for rec in p.records] == [200] * 20

    run(main())


def test_drain_waits_for_a_slow_inflight_request(run, up_a, up_b):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            slow = asyncio.create_task(p.client.get("/sleep?ms=1000"))
            while p.ep.inflight(up_a.upstream) == 0:
                await asyncio.sleep(0.01)
            p.ep.set_upstream(up_b.upstream)
            async with httpx.AsyncClient(base_url=p.url, trust_env=False) as other:
                r = await other.get("/whoami")
                assert r.json()["label"] == "B"
            assert p.ep.inflight(up_a.upstream) == 1
            assert p.ep.inflight() == 1
            assert await p.ep.drain(up_a.upstream, timeout=0.1) is False
            assert await p.ep.drain(up_a.upstream, timeout=10) is True
            assert p.ep.inflight(up_a.upstream) == 0
            r = await slow
            assert r.status_code == 200 and r.json()["label"] == "A"
            assert await p.ep.drain(up_b.upstream, timeout=0.1) is True
            # close_idle drops the pooled connections to the old upstream.
            assert p.ep._pools.get(up_a.upstream).idle
            p.ep.close_idle(up_a.upstream)
            assert not p.ep._pools.get(up_a.upstream).idle

    run(main())


# -- errors ------------------------------------------------------------------------------


def test_503_when_there_is_no_upstream(run, up_a):
    async def main() -> None:
        async with Proxy(None) as p:
            for _ in range(2):  # the connection stays usable
                r = await p.client.get("/predict")
                assert r.status_code == 503
                body = r.json()
                assert "no serving version" in body["error"]
                assert "roll back" in body["hint"] and "Deploy" in body["hint"]
            r = await p.client.head("/predict")
            assert r.status_code == 503 and r.content == b""
            p.ep.set_upstream(up_a.upstream)
            assert (await p.client.get("/whoami")).status_code == 200
            p.ep.set_upstream(None)
            assert (await p.client.get("/whoami")).status_code == 503
            assert [rec.label for rec in p.records][-2:] == ["A", None]

    run(main())


def test_502_when_the_upstream_port_is_dead(run):
    with socket.socket() as s:
        s.bind((HOST, 0))
        dead_port = s.getsockname()[1]

    async def main() -> None:
        async with Proxy(Upstream(HOST, dead_port, "7")) as p:
            r = await p.client.post("/predict", content=b"{}")
            assert r.status_code == 502
            assert "refused" in r.json()["error"] and "version 7" in r.json()["error"]
            assert r.json()["hint"]
            assert (await p.client.get("/predict")).status_code == 502  # keep-alive survives
            assert p.records[-1].status == 502 and p.records[-1].label is None

    run(main())


def test_502_when_the_upstream_dies_before_answering(run, spawn):
    up = spawn("D")

    async def main() -> None:
        async with Proxy(up.upstream) as p:
            assert (await p.client.get("/whoami")).status_code == 200
            r = await p.client.get("/die")
            assert r.status_code == 502
            assert "error" in r.json()
            assert p.ep.inflight() == 0

    run(main())


def test_upstream_dying_mid_response_closes_the_client_connection(run, spawn):
    up = spawn("M")

    async def main() -> None:
        async with Proxy(up.upstream) as p:
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                async with p.client.stream("GET", "/die-midway") as r:
                    assert r.status_code == 200
                    async for chunk in r.aiter_raw():
                        received += chunk
            assert received.startswith(b"first-chunk;")
            assert p.records[-1].status == 200 and p.records[-1].label == "M"
            assert p.ep.inflight() == 0

    run(main())


def test_504_on_upstream_timeout(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream, upstream_timeout=0.4) as p:
            start = time.monotonic()
            r = await p.client.get("/sleep?ms=5000")
            assert r.status_code == 504
            assert time.monotonic() - start < 4
            assert "did not respond" in r.json()["error"]
            assert (await p.client.get("/whoami")).status_code == 200

    run(main())


def test_upstream_stalling_mid_response_closes_the_client_connection(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream, upstream_timeout=0.4) as p:
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                async with p.client.stream("GET", "/stream?chunks=3&delay_ms=3000") as r:
                    assert r.status_code == 200
                    async for chunk in r.aiter_raw():
                        received += chunk
            assert received == b"chunk-0;"
            assert p.ep.inflight() == 0

    run(main())


def test_client_leaving_mid_request_is_recorded_and_frees_the_slot(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            _, writer = await asyncio.open_connection(HOST, p.ep.port)
            writer.write(b"GET /sleep?ms=500 HTTP/1.1\r\nHost: x\r\n\r\n")
            while p.ep.inflight(up_a.upstream) == 0:
                await asyncio.sleep(0.01)
            writer.close()
            assert await p.ep.drain(up_a.upstream, timeout=5)
            assert p.records[-1].status == 499 and p.records[-1].label is None
            assert (await p.client.get("/whoami")).status_code == 200

    run(main())


def test_413_on_oversized_bodies(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream, max_body_bytes=1000) as p:
            r = await p.client.post("/echo", content=b"x" * 1000)
            assert r.status_code == 200 and r.json()["body_len"] == 1000
            r = await p.client.post("/echo", content=b"x" * 200_000)
            assert r.status_code == 413
            assert "1000 bytes" in r.json()["error"]

            async def chunked():
                for _ in range(20):
                    yield b"y" * 100

            r = await p.client.post("/echo", content=chunked())
            assert r.status_code == 413
            assert [rec.status for rec in p.records] == [200, 413, 413]

    run(main())


# Malformed and ambiguous requests (400): tests/test_hostile.py, against the real agent.


HEAD_LIMITS = {"max_request_line": 1000, "max_header_bytes": 500, "max_headers": 10, "max_head_bytes": 4000}


def _head(target: bytes = b"/whoami", headers: list[bytes] = ()) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "named"),
    [
        (_head(b"/whoami?" + b"q" * 2000), 414, "target exceeds 1000 bytes"),
        (_head(headers=[b"x-big: " + b"v" * 600]), 431, "'x-big' exceeds 500 bytes"),
        (_head(headers=[b"x-h%d: v" % i for i in range(11)]), 431, "more than 10 request headers"),
        (_head(b"/whoami?" + b"q" * 900, [b"x-h%d: " % i + b"v" * 400 for i in range(9)]), 431,
         "head exceeds 4000 bytes"),
    ],
    ids=["request-line", "one-header", "header-count", "whole-head"],
)
def test_heads_over_a_limit_are_refused_and_never_forwarded(run, up_a, request_bytes, status, named):
    async def main() -> None:
        async with Proxy(up_a.upstream, **HEAD_LIMITS) as p:
            # Just within every limit: forwarded.
            ok = _head(b"/whoami?" + b"q" * 900, [b"x-h%d: " % i + b"v" * 300 for i in range(9)])
            assert [r[0] for r in parse_responses(await raw_exchange(p.ep.port, ok + _head(
                headers=[b"connection: close"])))] == [200, 200]
            # A good request, then the oversized one pipelined behind it: answered in order, then closed.
            out = await raw_exchange(p.ep.port, _head() + request_bytes)
            [(first, _, _), (refused, headers, body)] = parse_responses(out)
            assert (first, refused) == (200, status) and headers["connection"] == "close"
            assert named in json.loads(body)["error"]
            assert [(r.status, r.label) for r in p.records[-2:]] == [(200, "A"), (status, None)]

    run(main())


def test_a_header_that_never_ends_is_cut_off_at_the_head_limit(run, up_a):
    """httptools hands a header over only when its line ends: what it buffers counts too."""

    async def main() -> None:
        async with Proxy(up_a.upstream, **HEAD_LIMITS) as p:
            reader, writer = await asyncio.open_connection(HOST, p.ep.port)
            writer.write(b"GET /whoami HTTP/1.1\r\nHost: x\r\nx-pad: ")
            await writer.drain()
            await asyncio.sleep(0.1)  # the head is now in progress
            for _ in range(16):  # 16 MiB of one header value, in writes the proxy reads as they come
                writer.write(b"v" * (1 << 20))
                try:
                    await writer.drain()
                except ConnectionError:
                    break
            out = await asyncio.wait_for(reader.read(-1), 10)
            writer.close()
            [(status, headers, body)] = parse_responses(out)
            assert status == 431 and "head exceeds 4000 bytes" in json.loads(body)["error"]
            assert (await p.client.get("/whoami")).status_code == 200

    run(main())


def test_a_failing_router_answers_500_and_the_connection_stays_in_step(run, up_a, caplog):
    def router(method: bytes, url: bytes, body: bytes):
        if url.startswith(b"/v/async"):
            async def fail():
                raise RuntimeError("boom in a coroutine")
            return fail()
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            p.ep.set_router(router)
            out = await raw_exchange(p.ep.port, _head(b"/v/99999999999999999999999/readyz") + _head(
                b"/v/async/x") + _head(headers=[b"connection: close"]))
            [(s1, h1, b1), (s2, _, b2), (s3, _, _)] = parse_responses(out)
            assert (s1, s2, s3) == (500, 500, 200) and "connection" not in h1
            assert "OverflowError" in json.loads(b1)["error"] and "RuntimeError" in json.loads(b2)["error"]
            assert (await p.client.get("/whoami")).status_code == 200

    with caplog.at_level("ERROR", logger="nbserve._agent._proxy"):
        run(main())
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None  # one short line a minute, no traceback
    assert "OverflowError" in failures[0].getMessage()


# -- slow clients and flow control -------------------------------------------------------


def test_idle_and_slow_clients_are_closed(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream, idle_timeout=0.3, header_timeout=0.3) as p:
            start = time.monotonic()
            assert await raw_exchange(p.ep.port, b"") == b""  # sends nothing
            assert (
                await raw_exchange(p.ep.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\n") == b""
            )  # partial head
            # Keep-alive: answered, then closed when idle.
            out = await raw_exchange(p.ep.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            assert [r[0] for r in parse_responses(out)] == [200]
            assert time.monotonic() - start < 5

    run(main())


def test_slow_client_does_not_make_the_proxy_buffer_the_response(run, up_a):
    size = 32 * 1024 * 1024

    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (HOST, p.ep.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(
                f"GET /big?size={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            await asyncio.sleep(1.0)  # not reading
            [client] = p.ep._state.clients
            assert client.transport.get_write_buffer_size() < 2 * 1024 * 1024
            received = len(await asyncio.wait_for(reader.read(-1), 30))
            writer.close()
            assert received > size

    run(main())


# -- observer ------------------------------------------------------------------------------


def test_observer_records_each_request(run, up_a):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            before = time.perf_counter_ns()
            await p.client.get("/sleep?ms=50")
            await p.client.post("/echo?q=1", content=b"12345")
            p.ep.set_upstream(None)
            await p.client.get("/x")
            [slow, post, unavailable] = p.records
            assert (slow.label, slow.method, slow.path, slow.status) == ("A", "GET", "/sleep", 200)
            assert slow.started_ns >= before
            assert 50e6 <= slow.elapsed_ns < 5e9
            assert (post.method, post.path, post.status, post.request_bytes) == (
                "POST",
                "/echo",
                200,
                5,
            )
            assert (unavailable.label, unavailable.status) == (None, 503)

    run(main())


def test_a_failing_observer_never_breaks_the_proxy(run, up_a, caplog):
    def broken(record: RequestRecord) -> None:
        raise RuntimeError("observer bug")

    async def main() -> None:
        async with Proxy(up_a.upstream, observer=broken) as p:
            for _ in range(3):
                assert (await p.client.get("/whoami")).status_code == 200

    run(main())
    assert "observer" in caplog.text and "observer bug" in caplog.text


# -- canary, sticky routing, shadow, sampling ------------------------------------------------


def test_canary_gets_its_share_of_requests(run, up_a, up_b):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            p.ep.set_canary(up_b.upstream, 25)
            responses, failures = await load(p.client, 2000, 8)
            assert failures == []
            labels = [r.headers["x-nbserve-version"] for r in responses]
            check_labels(responses)
            share = labels.count("B") / len(labels)
            assert 0.20 < share < 0.30, share  # 25% +- 5 sigma-ish of a binomial(2000, 0.25)
            p.ep.set_canary(None)
            responses, _ = await load(p.client, 50, 4)
            assert {r.headers["x-nbserve-version"] for r in responses} == {"A"}

    run(main())


def test_a_sticky_header_keeps_each_client_on_one_side(run, up_a, up_b):
    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            p.ep.set_canary(up_b.upstream, 50, sticky_header="X-Client")
            seen: dict[str, set[str]] = {}
            for client_id in range(40):
                for _ in range(5):
                    r = await p.client.get("/whoami", headers={"x-client": f"user-{client_id}"})
                    seen.setdefault(f"user-{client_id}", set()).add(r.headers["x-nbserve-version"])
            assert all(len(sides) == 1 for sides in seen.values())  # never split
            sides = [next(iter(s)) for s in seen.values()]
            assert 5 < sides.count("B") < 35  # the keys spread over both sides
            # no header: random routing again
            labels = {(await p.client.get("/whoami")).headers["x-nbserve-version"] for _ in range(60)}
            assert labels == {"A", "B"}

    run(main())


def test_shadow_gets_a_copy_and_never_answers(run, up_a, up_b):
    from nbserve._agent._proxy import ShadowResult

    async def main() -> None:
        results: list[ShadowResult] = []
        async with Proxy(up_a.upstream) as p:
            p.ep.set_shadow(up_b.upstream, results.append)
            for i in range(20):
                r = await p.client.post("/echo", content=json.dumps({"i": i}).encode())
                assert r.headers["x-nbserve-version"] == "A" and r.json()["label"] == "A"
            deadline = time.monotonic() + 10
            while len(results) < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(results) == 20
            for res in results:
                assert res.label == "B" and res.status == 200 and res.live_status == 200
                live, shadow = json.loads(res.live_body), json.loads(res.body)
                assert live["label"] == "A" and shadow["label"] == "B" and live["body"] == shadow["body"]
            assert (await p.client.get("/whoami")).status_code == 200  # GETs are not mirrored
            await asyncio.sleep(0.2)
            assert len(results) == 20
            p.ep.set_shadow(None)
            await p.client.post("/echo", content=b"{}")
            await asyncio.sleep(0.2)
            assert len(results) == 20

    run(main())


def test_a_dead_shadow_is_a_finding_not_a_failure(run, up_a):
    from nbserve._agent._proxy import ShadowResult

    async def main() -> None:
        results: list[ShadowResult] = []
        dead = Upstream(HOST, _free_port(), "ghost")
        async with Proxy(up_a.upstream) as p:
            p.ep.set_shadow(dead, results.append)
            r = await p.client.post("/echo", content=b"{}")
            assert r.status_code == 200
            deadline = time.monotonic() + 10
            while not results and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert results[0].status == 0 and "Connect" in results[0].error or "refused" in results[0].error.lower()

    run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def test_only_sampled_requests_hand_their_response_to_the_observer(run, up_a):
    async def main() -> None:
        picks = iter([True, False, True])
        async with Proxy(up_a.upstream, sampler=lambda: next(picks)) as p:
            for i in range(3):
                await p.client.post("/echo", content=json.dumps({"n": i}).encode())
            first, second, third = p.records
            assert json.loads(first.response)["body"] == '{"n": 0}' and first.body == b'{"n": 0}'
            assert second.response is None and second.body == b'{"n": 1}'
            assert json.loads(third.response)["body"] == '{"n": 2}'

    run(main())


def test_a_refused_token_is_answered_before_the_body_and_never_reaches_the_upstream(run, up_a):
    seen: list[bytes | None] = []

    def check(header: bytes | None) -> tuple[int, str, str] | None:
        seen.append(header)
        if header == b"Bearer good":
            return None
        return (401, "the access token is wrong", "send a predict token") if header else (
            401, "no access token was sent", "send one")

    async def main() -> None:
        async with Proxy(up_a.upstream) as p:
            p.ep.set_auth(check)
            r = await p.client.post("/echo", content=b"x" * 1000)
            assert r.status_code == 401
            assert r.json() == {"error": "no access token was sent", "hint": "send one",
                                "type": "AuthenticationFailed"}
            # A refused 10 MB upload is answered from its head; the body is dropped unread.
            reader, writer = await asyncio.open_connection(HOST, p.ep.port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n"
                         b"Content-Length: 10000000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            head = await asyncio.wait_for(reader.read(65536), 5)
            assert head.startswith(b"HTTP/1.1 401 Unauthorized") and b"the access token is wrong" in head
            writer.close()
            r = await p.client.post("/echo", content=b"ok", headers={"authorization": "Bearer good"})
            assert r.status_code == 200 and "authorization" not in dict(r.json()["headers"])
            labels = [rec.label for rec in p.records]
            assert labels.count("A") == 1  # only the authorized request reached the upstream
            p.ep.set_auth(None)
            assert (await p.client.post("/echo", content=b"open")).status_code == 200

    run(main())
    assert seen[:1] == [None]


def test_a_scaled_to_zero_endpoint_holds_requests_until_woken_and_answers_503_if_waking_fails(run, up_a):
    async def main() -> None:
        async with Proxy(None) as p:
            woken: list[float] = []

            def waker() -> None:
                woken.append(time.monotonic())
                asyncio.get_running_loop().call_later(0.3, p.ep.set_upstream, up_a.upstream)

            p.ep.set_waker(waker)
            started = time.monotonic()
            results = await asyncio.gather(*(p.client.get("/whoami") for _ in range(5)))
            assert [r.status_code for r in results] == [200] * 5  # held, not refused
            assert time.monotonic() - started >= 0.3 and len(woken) == 1  # one wake for all of them
            # scaled to zero again; this time starting fails: the held request gets a 503 with the reason
            p.ep.set_upstream(None)

            def failing() -> None:
                asyncio.get_running_loop().call_later(
                    0.1, lambda: p.ep.wake_failed("v1 did not start: boom", "see its log"))

            p.ep.set_waker(failing)
            r = await p.client.get("/whoami")
            assert r.status_code == 503 and r.json()["error"] == "v1 did not start: boom"
            r = await p.client.get("/whoami")  # within the back-off: at once, no new start
            assert r.status_code == 503
            p.ep.set_waker(None)
            assert (await p.client.get("/whoami")).status_code == 503
            # a held request that waits past the wake timeout is answered, not dropped
            p.ep.set_waker(lambda: None, timeout=0.3)
            p.ep._routing.no_wake_until = 0.0
            r = await p.client.get("/whoami")
            assert r.status_code == 503 and "did not start within" in r.json()["error"]
            assert p.ep.held() == 0

    run(main())
