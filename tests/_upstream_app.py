"""A real upstream for the proxy tests, run in a subprocess.

    python tests/_upstream_app.py --fd N --label A [--mode app|oneshot]

The parent binds the listening socket and passes its descriptor (no port race,
and a restarted upstream can take over the same port).

mode "app" (uvicorn + Starlette):
    /echo        any method: method, path, query, headers, body as JSON
    /sleep?ms=N  sleep N ms, then answer
    /stream?chunks=N&delay_ms=M   chunked response, one chunk every M ms
    /status/{code}[?close=1]      respond with that status [and Connection: close]
    /big?size=N                   N bytes of body
    /whoami      label and pid
    /conns       how many distinct connections carried proxied requests
    /die         exit at once, without answering
    /die-midway  send one chunk of a chunked response, then exit
mode "oneshot" (raw asyncio): answers the first request on each connection
    with keep-alive, and closes a connection that carries a second request
    without answering it, as an upstream does when it expires an idle
    keep-alive connection just as the proxy reuses it.  /stats counts those.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket

LABEL = "?"
PROXIED_PEERS: set[tuple[str, int]] = set()


def _payload(**extra: object) -> dict[str, object]:
    return {"label": LABEL, "pid": os.getpid(), **extra}


def build_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            _payload(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers=[
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw
                ],
                body=body.decode("latin-1"),
                body_len=len(body),
            )
        )

    async def sleep(request: Request) -> Response:
        ms = float(request.query_params.get("ms", "0"))
        await asyncio.sleep(ms / 1000)
        return JSONResponse(_payload(slept_ms=ms, query=request.url.query))

    async def stream(request: Request) -> Response:
        chunks = int(request.query_params.get("chunks", "5"))
        delay = float(request.query_params.get("delay_ms", "100")) / 1000

        async def gen():  # type: ignore[no-untyped-def]
            for i in range(chunks):
                if i:
                    await asyncio.sleep(delay)
                yield f"chunk-{i};".encode()

        return StreamingResponse(gen(), media_type="text/plain")

    async def status(request: Request) -> Response:
        code = int(request.path_params["code"])
        headers = {"connection": "close"} if request.query_params.get("close") else None
        if code in (204, 304) or code < 200:
            return Response(status_code=code, headers=headers)
        return JSONResponse(_payload(status=code), status_code=code, headers=headers)

    async def big(request: Request) -> Response:
        size = int(request.query_params.get("size", "1048576"))
        return Response(b"x" * size, media_type="application/octet-stream")

    async def whoami(request: Request) -> Response:
        return JSONResponse(_payload())

    async def conns(request: Request) -> Response:
        return JSONResponse(
            _payload(proxied_connections=len(PROXIED_PEERS), peers=sorted(PROXIED_PEERS))
        )

    async def die(request: Request) -> Response:
        os._exit(3)

    async def die_midway(request: Request) -> Response:
        async def gen():  # type: ignore[no-untyped-def]
            yield b"first-chunk;"
            await asyncio.sleep(0.2)
            os._exit(3)

        return StreamingResponse(gen(), media_type="text/plain")

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(
        routes=[
            Route("/echo", echo, methods=methods),
            Route("/sleep", sleep, methods=methods),
            Route("/stream", stream),
            Route("/status/{code}", status, methods=methods),
            Route("/big", big),
            Route("/whoami", whoami),
            Route("/conns", conns),
            Route("/die", die),
            Route("/die-midway", die_midway),
        ]
    )

    async def asgi(scope, receive, send):  # type: ignore[no-untyped-def]
        # Count connections that carried proxied requests (the proxy adds x-forwarded-for).
        if scope["type"] == "http" and any(k == b"x-forwarded-for" for k, _ in scope["headers"]):
            PROXIED_PEERS.add(tuple(scope["client"]))
        await app(scope, receive, send)

    return asgi


def run_app(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        build_app(),
        log_level="warning",
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # keep scope["client"] the real peer, to count connections
    )
    uvicorn.Server(config).run(sockets=[sock])


def run_oneshot(sock: socket.socket) -> None:
    import httptools

    dropped = 0

    class OneShot(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.served = 0
            self.url = b""

        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            self.transport = transport

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            nonlocal dropped
            url, self.url = self.url, b""
            if self.served:
                dropped += 1
                self.transport.close()
                return
            self.served += 1
            body = json.dumps(_payload(path=url.decode(), dropped=dropped)).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)
            )

        def data_received(self, data: bytes) -> None:
            if not self.transport.is_closing():
                self.parser.feed_data(data)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(OneShot, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    global LABEL
    ap = argparse.ArgumentParser()
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--label", default="A")
    ap.add_argument("--mode", choices=["app", "oneshot"], default="app")
    args = ap.parse_args()
    LABEL = args.label
    sock = socket.socket(fileno=args.fd)  # family and type detected from the descriptor
    if args.mode == "app":
        run_app(sock)
    else:
        run_oneshot(sock)


if __name__ == "__main__":
    main()
