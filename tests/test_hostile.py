"""Hostile clients against a stable URL: raw sockets (no HTTP library), a real agent, a real
``bentoml serve``.

One deployment serves the whole module.  After every test the ``afterwards`` fixture checks
what a refused or broken request must never cost: the agent is alive, the next real
``/predict`` is answered correctly, nothing was written to the registry, and the agent log
shows no exception that escaped the proxy.  The agent runs with short limits
(``NBSERVE_PROXY_HEADER_TIMEOUT``, ``NBSERVE_PROXY_MAX_BODY_BYTES``) so slow clients and big
bodies take seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest

import nbserve
from nbserve._config import Home

from .conftest import assert_no_leftovers, nbserve_home
from .test_proxy import parse_responses

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
HEADER_TIMEOUT = 2.0  # the agent's NBSERVE_PROXY_HEADER_TIMEOUT here (default 30 s)
MAX_BODY = 1 << 20  # its NBSERVE_PROXY_MAX_BODY_BYTES here (default 64 MiB)
AGENT_ENV = {"NBSERVE_PROXY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
             "NBSERVE_PROXY_MAX_BODY_BYTES": str(MAX_BODY)}


@dataclass
class Agent:
    home: Home
    pid: int
    api_port: int
    token: str
    port: int  # the deployment's stable URL
    rows: list[dict[str, Any]]  # a few iris rows
    expected: list[int]  # the model's predictions for them


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, iris, forest) -> Iterator[Agent]:
    from nbserve._local import start_agent, stop_agent

    _, X_test, _, _ = iris
    home = Home.resolve(tmp_path_factory.mktemp("nbhome"))
    with nbserve_home(home.root):
        with environ(AGENT_ENV):
            info = start_agent(home)
        try:
            dep = nbserve.deploy(forest, "hostile", X_test, progress=False)
            rows = json.loads(X_test.head(5).to_json(orient="records"))
            expected = forest.predict(X_test.head(5)).tolist()
            yield Agent(home, info.pid, _port(info.url), info.token, _port(dep.url), rows, expected)
        finally:
            stop_agent(home)
    assert_no_leftovers(home)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def decoy() -> Iterator[socket.socket]:
    """A listener on another loopback port, named in targets and Host headers: the proxy must
    never connect to it."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def assert_never_contacted(decoy: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        decoy.accept()


# -- raw HTTP over sockets ------------------------------------------------------------------


def connect(port: int, timeout: float = 15.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server closes (its socket timeout bounds the wait)."""
    out = b""
    while True:
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the proxy closes: each case ends with ``Connection: close``
    or is refused (the proxy then closes)."""
    with connect(port) as sock:
        sock.sendall(data)
        return read_to_end(sock)


def send_until_answered(sock: socket.socket, chunks: Iterator[bytes]) -> None:
    """Send chunk after chunk, stopping once the proxy has answered (or shut us out)."""
    for chunk in chunks:
        if select.select([sock], [], [], 0)[0]:
            return
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return


def one_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    [response] = parse_responses(data)
    return response


def rst_close(sock: socket.socket) -> None:
    """Leave abruptly: a reset, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def request(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
            close: bool = True, version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def predict_body(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"data": rows}).encode()


def predict(agent: Agent, n: int = 5, close: bool = True) -> bytes:
    return request("POST", "/predict", predict_body(agent.rows[:n]),
                   {"Content-Type": "application/json"}, close=close)


def is_json_error(body: bytes, *words: str) -> bool:
    message = json.loads(body)["error"]
    return all(w in message for w in words)


# -- what every test must leave as it found it -------------------------------------------------


def registry_counts(home: Home) -> dict[str, int]:
    db = sqlite3.connect(f"file:{home.registry}?mode=ro", uri=True)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("deployments", "versions", "events", "audit")}
    finally:
        db.close()


def log_problems(text: str) -> list[str]:
    """Log records that show an exception escaping the proxy, the router or the monitor:
    asyncio's 'Fatal error on transport' / 'data_received() call failed', or any traceback
    (a deeply nested body once cost the monitor its whole capture cycle)."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text)
    return [r[:300] for r in records if "Traceback" in r or "Fatal error" in r or "call failed" in r]


@pytest.fixture(autouse=True)
def afterwards(agent: Agent) -> Iterator[None]:
    before = registry_counts(agent.home)
    log_at = agent.home.agent_log.stat().st_size
    yield
    status, headers, body = one_response(exchange(agent.port, predict(agent)))
    assert status == 200 and json.loads(body) == agent.expected, body[:300]
    assert headers["x-nbserve-version"] == "1"
    proc = psutil.Process(agent.pid)
    assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    assert registry_counts(agent.home) == before
    with agent.home.agent_log.open("rb") as f:
        f.seek(log_at)
        assert log_problems(f.read().decode("utf-8", "replace")) == []


# -- framing: smuggling forms and malformed requests ---------------------------------------------

SMUGGLED = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"  # a desync would make a 2nd request of it
POST = b"POST /predict HTTP/1.1\r\nHost: x\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n"
SMUGGLING = {
    "content-length-and-transfer-encoding":
        POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding-and-content-length": CHUNKED + b"Content-Length: 4\r\n\r\n0\r\n\r\n",
    "two-content-lengths": POST + b"Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    "two-equal-content-lengths": POST + b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length-list": POST + b"Content-Length: 4, 4\r\n\r\nabcd",
    "negative-content-length": POST + b"Content-Length: -1\r\n\r\n",
    "signed-content-length": POST + b"Content-Length: +4\r\n\r\nabcd",
    "space-before-colon": POST + b"Content-Length : 4\r\n\r\nabcd",
    "obs-fold": b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "obs-fold-transfer-encoding": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "chunk-size-not-hex": CHUNKED + b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": CHUNKED + b"\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "negative-chunk-size": CHUNKED + b"\r\n-1\r\nabc\r\n0\r\n\r\n",
    "chunk-extension-bare-lf": CHUNKED + b"\r\n3;x\nabc\r\n0\r\n\r\n",
    "unknown-transfer-coding": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "chunked-not-last": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "two-transfer-encodings": CHUNKED + b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "bare-lf-line-endings": b"GET /readyz HTTP/1.1\nHost: x\n\n",
    "nul-in-target": b"GET /rea\x00dyz HTTP/1.1\r\nHost: x\r\n\r\n",
    "control-char-in-header": b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "garbage": b"BLAH BLAH\r\n\r\n",
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_or_malformed_framing_is_refused_and_nothing_after_it_is_read(agent, data):
    status, headers, body = one_response(exchange(agent.port, data + SMUGGLED))
    assert status == 400 and headers["connection"] == "close"
    assert is_json_error(body, "malformed HTTP request")


def test_a_valid_request_then_garbage_answers_the_first_then_400(agent):
    out = exchange(agent.port, predict(agent, close=False) + b"\x00\x01garbage\r\n\r\n")
    [(first, _, body), (second, headers, _)] = parse_responses(out)
    assert (first, second) == (200, 400) and json.loads(body) == agent.expected
    assert headers["connection"] == "close"


def test_pipelined_requests_are_answered_in_order(agent):
    data = (predict(agent, 1, close=False) + request("GET", "/metadata", close=False)
            + predict(agent, 3, close=False) + request("GET", "/readyz", close=False)
            + predict(agent, 5))
    out = exchange(agent.port, data)
    statuses = [(s, len(json.loads(b)) if s == 200 and b.startswith(b"[") else None)
                for s, _, b in parse_responses(out)]
    assert statuses == [(200, 1), (200, None), (200, 3), (200, None), (200, 5)]
    responses = parse_responses(out)
    assert json.loads(responses[1][2])["version"] == 1
    assert len({h["x-request-id"] for _, h, _ in responses}) == 5


# -- sizes: request line, headers, head, body -----------------------------------------------------


@pytest.mark.parametrize("size", [100_000, 1_000_000], ids=["100KB", "1MB"])
def test_a_long_request_line_is_refused_with_414(agent, size):
    out = exchange(agent.port, request("GET", "/readyz?q=" + "a" * size))
    status, headers, body = one_response(out)
    assert status == 414 and headers["connection"] == "close"
    assert is_json_error(body, "request target exceeds 8192 bytes")


def test_a_hundred_headers_pass_and_one_more_is_refused_with_431(agent):
    extra = {f"X-H{i}": "v" for i in range(96)}  # + Host, Content-Type, Content-Length, Connection
    data = predict(agent).replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\n" + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in extra.items()))
    status, _, body = one_response(exchange(agent.port, data))
    assert status == 200 and json.loads(body) == agent.expected
    data = data.replace(b"X-H0: v\r\n", b"X-H0: v\r\nX-Hmore: v\r\n")
    status, headers, body = one_response(exchange(agent.port, data))
    assert status == 431 and headers["connection"] == "close"
    assert is_json_error(body, "more than 100 request headers")


def test_one_oversized_header_is_refused_with_431(agent):
    out = exchange(agent.port, request("GET", "/readyz", headers={"Cookie": "c" * 9000}))
    status, _, body = one_response(out)
    assert status == 431 and is_json_error(body, "'Cookie' exceeds 8192 bytes")


def _agent_rss(pid: int, peak: list[int], stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.01)


def test_huge_heads_on_many_connections_are_refused_with_431_and_memory_stays_flat(agent):
    """The issue's attack: header lines as fast as the socket takes them (there, 400 MB
    in 0.7 s grew the agent by 588 MB and the head reached BentoML)."""
    n, per_connection = 16, 4 << 20
    line = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    chunk = line * 64

    def attack(results: list[Any]) -> None:
        try:
            with connect(agent.port) as sock:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                send_until_answered(sock, (chunk for _ in range(per_connection // len(chunk))))
                results.append(read_to_end(sock))
        except OSError as exc:
            results.append(exc)

    peak, stop = [0], threading.Event()
    baseline = psutil.Process(agent.pid).memory_info().rss
    sampler = threading.Thread(target=_agent_rss, args=(agent.pid, peak, stop))
    sampler.start()
    results: list[Any] = []
    attackers = [threading.Thread(target=attack, args=(results,)) for _ in range(n)]
    for t in attackers:
        t.start()
    for t in attackers:
        t.join(60)
    stop.set()
    sampler.join()
    # n * 4 MiB were sent; a refused head costs at most the limit plus a read buffer.
    assert peak[0] - baseline < 32 << 20, f"agent RSS grew by {(peak[0] - baseline) >> 20} MiB"
    assert len(results) == n and not [r for r in results if isinstance(r, OSError)], results
    answers = [one_response(r) for r in results]
    assert {(s, h["connection"]) for s, h, _ in answers} == {(431, "close")}
    assert all(is_json_error(b, "request head exceeds 65536 bytes") for _, _, b in answers)


def test_bodies_over_the_limit_are_refused_with_413_before_they_are_read(agent):
    with connect(agent.port) as sock:  # announced: answered from the head alone
        sock.sendall(b"%sContent-Length: %d\r\n\r\n" % (POST, MAX_BODY + 1))
        status, headers, body = one_response(read_to_end(sock))
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["type"] == "PayloadTooLarge"
    with connect(agent.port) as sock:  # chunked: refused once the limit is passed
        sock.sendall(CHUNKED + b"\r\n")
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        send_until_answered(sock, (piece for _ in range(2 * MAX_BODY // (64 * 1024))))
        status, _, body = one_response(read_to_end(sock))
    assert status == 413 and is_json_error(body, f"exceeds {MAX_BODY} bytes")


# -- time: slow clients ---------------------------------------------------------------------------


def trickle(sock: socket.socket, data: bytes, every: float) -> bool:
    """Send ``data`` a byte at a time; True if the proxy closed the connection first."""
    for i in range(len(data)):
        if select.select([sock], [], [], every)[0]:
            return read_to_end(sock) == b""  # closed without an answer
        try:
            sock.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_slowloris_heads_and_stalled_bodies_are_cut_off(agent):
    # A head that never completes in time, however steadily its bytes come.
    head = request("GET", "/readyz", headers={"X-Slow": "s" * 40})
    with connect(agent.port) as sock:
        assert trickle(sock, head, every=HEADER_TIMEOUT / 8), "a slow head was let through"
    # A body that stops coming.
    with connect(agent.port) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"data\"")
        assert read_to_end(sock) == b""


# -- clients that leave ---------------------------------------------------------------------------


def test_clients_gone_mid_body_and_mid_response(agent):
    sock = connect(agent.port)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"data\": [")
    rst_close(sock)
    sock = connect(agent.port)  # gone before the answer
    sock.sendall(predict(agent))
    rst_close(sock)
    sock = connect(agent.port)  # gone after the first bytes of a longer answer (OpenAPI document)
    sock.sendall(request("GET", "/docs.json"))
    assert sock.recv(10)
    rst_close(sock)
    for _ in range(3):  # and many times in a row
        sock = connect(agent.port)
        sock.sendall(predict(agent, close=False) * 3)
        rst_close(sock)


# -- protocol versions, Expect, upgrades ----------------------------------------------------------


def test_expect_100_continue(agent):
    body = predict_body(agent.rows)
    with connect(agent.port) as sock:
        sock.sendall(POST + b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = sock.recv(64)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = one_response(read_to_end(sock))
    assert status == 200 and json.loads(answer) == agent.expected
    with connect(agent.port) as sock:  # too big: refused without asking for the body
        sock.sendall(POST + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        status, _, _ = one_response(read_to_end(sock))
    assert status == 413


def test_http_1_0_is_answered_and_closed(agent):
    out = exchange(agent.port, b"GET /readyz HTTP/1.0\r\n\r\n")  # no Connection: close needed
    assert one_response(out)[0] == 200
    body = predict_body(agent.rows)
    out = exchange(agent.port, b"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    status, _, answer = one_response(out)
    assert status == 200 and json.loads(answer) == agent.expected


def test_upgrades_are_never_tunnelled(agent, decoy):
    port = decoy.getsockname()[1]
    websocket = request("GET", "/readyz", close=False, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) + b"\x81\x85frame" + SMUGGLED
    h2c = request("GET", "/readyz", close=False, headers={
        "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
        "HTTP2-Settings": "AAMAAABkAAQAAP__"}) + SMUGGLED
    for data in (websocket, h2c):  # answered as the plain GET it also is, then closed
        status, headers, _ = one_response(exchange(agent.port, data))
        assert status == 200 and headers["x-nbserve-version"] == "1"
    connect_ = f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode() + SMUGGLED
    status, headers, body = one_response(exchange(agent.port, connect_))
    assert status == 405 and headers["connection"] == "close" and is_json_error(body, "CONNECT")
    assert_never_contacted(decoy)


def test_absolute_targets_and_odd_hosts_only_ever_reach_the_deployment(agent, decoy):
    there = f"{HOST}:{decoy.getsockname()[1]}"
    cases = [
        f"GET http://{there}/readyz HTTP/1.1\r\nHost: {there}\r\n",
        f"GET http://{there}/v/1/readyz HTTP/1.1\r\nHost: {there}\r\n",
        f"GET /readyz HTTP/1.1\r\nHost: {there}\r\n",
        f"GET /readyz HTTP/1.1\r\nHost: x@{there}\r\n",
        f"GET /readyz HTTP/1.1\r\nHost: a\r\nHost: {there}\r\n",
        f"GET /readyz HTTP/1.1\r\nHost:\r\nX-Forwarded-Host: {there}\r\n",
        f"GET /readyz HTTP/1.1\r\nHost: x\r\nForwarded: host={there}\r\n",
        "GET /readyz HTTP/1.1\r\n",
        f"OPTIONS * HTTP/1.1\r\nHost: {there}\r\n",
        f"GET //{there}/readyz HTTP/1.1\r\nHost: x\r\n",
    ]
    for case in cases:
        out = exchange(agent.port, (case + "Connection: close\r\n\r\n").encode())
        status, headers, _ = one_response(out)
        assert status < 500 and headers["x-nbserve-version"] == "1", case
    assert_never_contacted(decoy)


# -- the router: per-version URLs, its own answers -----------------------------------------------


@pytest.mark.parametrize("target", [
    "/v/1/../../readyz", "/v/1/%2e%2e/%2e%2e/metadata", "/v/1/..%2f..%2fmetadata",
    "/v/%2e%2e/metadata",
    "/v/../v/1/metadata", "/%2e%2e/v/1/metadata", "/v/1/%2E%2E/schema/../predict",
])
def test_dot_segments_are_never_resolved_into_another_route(agent, target):
    """Routing is by the raw target: ``/v/<N>/`` then the rest, verbatim, to version N."""
    status, headers, body = one_response(exchange(agent.port, request("GET", target)))
    assert status == 404, (target, status, body[:200])
    assert headers.get("x-nbserve-version", "1") == "1"


@pytest.mark.parametrize("target", [
    "/v/99999999999999999999999/readyz", "/v/99999999999999999999999/metadata",
    "/v/999999999999999999/schema", "/v/0/readyz", "/v/" + "9" * 5000 + "/predict",
])
def test_a_version_number_that_names_nothing_is_404(agent, target):
    status, headers, body = one_response(exchange(agent.port, request("GET", target)))
    assert status == 404 and is_json_error(body, "has no version or alias"), body[:200]


def test_deeply_nested_json_on_feedback_is_a_400_like_the_rest_api(agent):
    nested = b"[" * 100_000 + b"]" * 100_000
    for body in (nested, b'{"ids": ' + nested + b', "y_true": []}'):
        status, _, answer = one_response(exchange(agent.port, request(
            "POST", "/feedback", body, {"Content-Type": "application/json"})))
        assert status == 400 and is_json_error(answer, "nested too deeply")
        status, _, answer = one_response(exchange(agent.api_port, request(
            "POST", "/v1/deployments/hostile/feedback", body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {agent.token}"})))
        assert status == 400 and json.loads(answer)["error"]["type"] == "InvalidArgument"
