"""Flow control of one client connection, both ways.

Reading from the client stops while its queue of pipelined requests is full, while the upstream
is not taking the request body as fast as it comes, and after the last request the connection
will parse (unless it is lingering to drop a refused body).  Writing to a client that reads
slower than the upstream sends pauses reading the upstream (the connection does that, with
``write_paused``), so neither side makes the proxy buffer without bound."""

from __future__ import annotations

import asyncio


class FlowControl:
    __slots__ = ("queue_full", "reading", "transport", "upstream_full", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reading = True
        self.queue_full = False  # the pipeline queue is full
        self.upstream_full = False  # the upstream connection's write buffer is full
        self.write_paused = False  # the client's write buffer is full

    def update_reading(self, stopped: bool) -> None:
        """Read from the client, or not; ``stopped``: no further request will be parsed."""
        want = not (self.queue_full or self.upstream_full or stopped)
        if want != self.reading and not self.transport.is_closing():
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()
