"""Real server processes for end-to-end tests: daphne (or uvicorn) on the test database.

The test process binds and listens on the port itself and hands the listening socket to the
server (``pass_fds``), so the port is never free between choosing it and serving on it: no other
process can take it in between.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# uvicorn's own ``--fd`` takes the descriptor for a unix socket (``socket.fromfd(fd, AF_UNIX)``):
# on a TCP socket its event loop then leaves TCP_NODELAY off, unlike a port uvicorn binds
# itself. Handing the socket to ``Server.run(sockets=...)`` (what its workers are given) keeps
# the socket's real family.
UVICORN_ON_FD = (
    "import socket, sys, uvicorn; "
    "config = uvicorn.Config('project.asgi:application', log_level='warning'); "
    "uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(sys.argv[1]))])"
)


def listening_socket(port: int = 0) -> socket.socket:
    """A TCP socket on 127.0.0.1 (``port``, or one the kernel picks), bound and listening."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def database_env() -> dict[str, str]:
    """Environment that points the host project at the test database."""
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = settings["USER"] or "postgres"
        if settings["PASSWORD"]:
            auth += f":{settings['PASSWORD']}"
        host = settings["HOST"] or "127.0.0.1"
        port = settings["PORT"] or 5432
        return {"DATABASE_URL": f"postgres://{auth}@{host}:{port}/{settings['NAME']}"}
    return {"DS_SQLITE_PATH": str(settings["NAME"])}


class ServerProcess:
    """A daphne or uvicorn process serving ``project.asgi:application``.

    The port is bound when the object is made (``url`` is known before ``start``).
    """

    def __init__(
        self,
        *,
        server: str = "daphne",
        public: bool = True,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.server = server
        self.socket: socket.socket | None = listening_socket(port or 0)
        self.port = self.socket.getsockname()[1]
        self.env = {
            **os.environ,
            **database_env(),
            "DS_LONG_POLL_TIMEOUT": "1",
            # No agent runtime in a test's server unless the test asks for it (env).
            "DS_AGENTS_EMBEDDED": "0",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,  # sessions signed by the tests verify
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        if public:
            self.env["DS_PUBLIC_STREAMS"] = "1"
        self.env.update(env or {})
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self, fd: int) -> list[str]:
        if self.server == "uvicorn":
            return [sys.executable, "-c", UVICORN_ON_FD, str(fd)]
        return [sys.executable, "-m", "daphne", "--fd", str(fd), "project.asgi:application"]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and return once it answers HTTP requests."""
        if self.socket is None:  # started before: listen on the same port again
            self.socket = listening_socket(self.port)
        # A file, not a pipe: a pipe nobody reads fills up and stops the server mid-test.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed with the process)
        fd = self.socket.fileno()
        try:
            self.process = subprocess.Popen(
                self.command(fd),
                cwd=ROOT,
                env=self.env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
            )
        finally:
            # Only the server holds the socket now: when it dies, connections are refused.
            self.socket.close()
            self.socket = None
        try:
            self._wait_until_serving(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self, timeout: float) -> None:
        """Wait for the answer to one HTTP request.

        The socket listens before the server runs, so a connection succeeds at once and proves
        nothing; the request is answered once the application is loaded and serving. The wait
        wakes every quarter second only to see whether the server died.
        """
        deadline = time.monotonic() + timeout
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as probe:
            probe.sendall(
                b"HEAD /v1/stream/ready-probe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Connection: close\r\n\r\n"
            )
            probe.settimeout(0.25)
            answer = b""
            while b"\r\n" not in answer:
                try:
                    chunk = probe.recv(4096)
                except TimeoutError:
                    chunk = None
                except OSError as exc:
                    raise RuntimeError(f"{self.server} failed: {exc}; {self.output()}") from exc
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.server} exited: {self.output()}")
                if chunk == b"":
                    raise RuntimeError(f"{self.server} closed without answering: {self.output()}")
                if chunk is None and time.monotonic() > deadline:
                    raise RuntimeError(f"{self.server} did not answer in {timeout}s")
                answer += chunk or b""
        status = answer.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 ") or status[9:10] == b"5":
            raise RuntimeError(f"{self.server} answered {status!r}: {self.output()}")

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def freeze(self) -> None:
        """SIGSTOP, and return once the process is stopped: it answers nothing until killed
        (or continued), while the kernel still accepts connections and requests for it."""
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGSTOP)
        _pid, status = os.waitpid(self.process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), status

    def stop(self) -> None:
        if self.socket is not None:  # never started
            self.socket.close()
            self.socket = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
