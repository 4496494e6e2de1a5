"""Real server processes for end-to-end tests: daphne (or uvicorn) on the test database."""

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """A daphne or uvicorn process serving ``project.asgi:application``."""

    def __init__(
        self,
        *,
        server: str = "daphne",
        public: bool = True,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.server = server
        self.port = port or free_port()
        self.env = {
            **os.environ,
            **database_env(),
            "DS_LONG_POLL_TIMEOUT": "1",
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

    def command(self) -> list[str]:
        if self.server == "uvicorn":
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "project.asgi:application",
            ]
        return [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "project.asgi:application",
        ]

    def start(self, timeout: float = 30.0) -> ServerProcess:
        # A file, not a pipe: a pipe nobody reads fills up and stops the server mid-test.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed with the process)
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.server} exited: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.server} did not listen on {self.port} in {timeout}s")

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
