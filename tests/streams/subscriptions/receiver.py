"""A webhook receiver for end-to-end tests: a real HTTP server on loopback, down or up on a fixed
port.

The port is bound when the receiver is made and stays bound: while the receiver is down the
socket is bound but not listening, so the kernel refuses every connection to it (the server sees
``Connection refused``, as from a receiver that is not running) and no other program can take
the port. ``up()`` starts listening on that same socket and serving. Each request is recorded
with its raw body (what a signature covers) and headers, and answered with ``answer(delivery)``
(by default ``{"done": true}``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got: when, its path, headers (lower-case names) and raw body."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def data(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def done(delivery: Delivery) -> tuple[int, Any]:
    """The default answer: the work is finished (the server acks the wake's snapshot)."""
    return 200, {"done": True}


class Receiver:
    """A webhook endpoint at ``url``, down until ``up()`` (see the module docstring)."""

    def __init__(self, answer: Callable[[Delivery], tuple[int, Any]] = done) -> None:
        self.answer = answer
        self.deliveries: list[Delivery] = []
        self.changed = threading.Condition()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.port = self._sock.getsockname()[1]
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on the receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def up(self) -> Receiver:
        """Listen on the port and serve, one request at a time."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                delivery = Delivery(
                    time.time(),
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    self.rfile.read(length),
                )
                status, body = receiver.answer(delivery)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                with receiver.changed:  # recorded once answered: the server may act on it now
                    receiver.deliveries.append(delivery)
                    receiver.changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # (quiet: the test reports what matters)

        server = HTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = self._sock
        server.server_activate()  # listen()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """The deliveries, once there are at least ``count``; AssertionError after ``timeout``."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(
                    f"{len(self.deliveries)} webhook deliveries in {timeout} s, not {count}"
                )
            return list(self.deliveries)

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        else:
            self._sock.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
