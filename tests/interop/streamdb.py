"""Run the public StreamDB client (``@durable-streams/state``) against a stream, from Python.

``streamdb.mjs`` (beside this file) reads a stream with StreamDB and a schema of ``chunk``,
``presence`` and ``agent`` collections (WIRE.md section 3) and prints what it materialized as one
JSON document; this module runs it as a subprocess. ``run_streamdb`` runs it to the end;
``start_streamdb`` returns a handle whose ``wait_ready`` returns once StreamDB's first sync is
done (it is live from then on, so a test can write and see the write arrive) and whose
``result`` collects the document. Install the package with ``npm ci`` in ``tests/interop``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

from tests.waiting import wait_until

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "streamdb.mjs"

Live = Literal["sse", "long-poll"]
Keys = dict[str, list[str]]


class StreamDBError(AssertionError):
    """The script failed: what it printed (``report``, may be None) and its stderr."""

    def __init__(self, message: str, report: dict[str, Any] | None, stderr: str) -> None:
        super().__init__(f"{message}\nreport: {json.dumps(report)}\nstderr: {stderr[-3000:]}")
        self.report = report
        self.stderr = stderr


def node() -> str:
    """The ``node`` executable, once the package is installed (AssertionError otherwise)."""
    assert (HERE / "node_modules" / "@durable-streams" / "state").is_dir(), (
        "@durable-streams/state is not installed: run `npm ci` in tests/interop"
    )
    found = shutil.which("node")
    assert found, "Node.js is needed to run StreamDB"
    return found


class StreamDBRun:
    """One running ``streamdb.mjs``; its output goes to files (a pipe nobody reads fills up)."""

    def __init__(self, args: list[str], timeout: float) -> None:
        self.timeout = timeout
        self.workdir = tempfile.TemporaryDirectory(prefix="streamdb-")
        self.ready_file = Path(self.workdir.name) / "ready.json"
        self.stdout = tempfile.TemporaryFile()  # noqa: SIM115  (closed in result)
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.outcome: tuple[int | None, dict[str, Any] | None, str] | None = None
        self.process = subprocess.Popen(
            [node(), str(SCRIPT), *args, "--ready-file", str(self.ready_file)],
            cwd=HERE,
            stdout=self.stdout,
            stderr=self.stderr,
        )

    def _read(self, stream: Any) -> str:
        stream.seek(0)
        return stream.read().decode(errors="replace")

    def wait_ready(self) -> dict[str, Any]:
        """Wait until the first sync is done: ``{"offset": ...}`` where StreamDB stands.

        StreamDBError when the script ended first (a read that failed, say a 401).
        """
        wait_until(
            lambda: self.ready_file.exists() or self.process.poll() is not None,
            timeout=self.timeout,
            what="StreamDB's first sync",
        )
        if not self.ready_file.exists():
            report = self.result(check=False)
            raise StreamDBError(
                f"StreamDB ended before its first sync: {report.get('error')}",
                report,
                self.outcome[2] if self.outcome else "",
            )
        # Written in one call by the script; an empty read means it is being written.
        wait_until(lambda: self.ready_file.stat().st_size > 0, timeout=5, what="ready file")
        return json.loads(self.ready_file.read_text())

    def result(self, *, check: bool = True) -> dict[str, Any]:
        """Wait for the script to end and return its document.

        With ``check``, StreamDBError unless it succeeded (``report["ok"]``).
        """
        if self.outcome is None:
            self.outcome = self._collect()
        code, report, err = self.outcome
        if report is None:
            raise StreamDBError(f"streamdb.mjs exited {code} without a report", None, err)
        if check and (code != 0 or not report.get("ok")):
            raise StreamDBError(f"StreamDB failed: {report.get('error')}", report, err)
        return report

    def _collect(self) -> tuple[int | None, dict[str, Any] | None, str]:
        try:
            code: int | None = self.process.wait(self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        out, err = self._read(self.stdout), self._read(self.stderr)
        self.stdout.close()
        self.stderr.close()
        self.workdir.cleanup()
        try:
            return code, json.loads(out), err
        except ValueError:
            return code, None, err

    def stop(self) -> None:
        """Kill the script if it still runs (for cleanup after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_streamdb(
    url: str,
    *,
    live: Live,
    headers: dict[str, str] | None = None,
    txid: str | None = None,
    until: Keys | None = None,
    until_absent: Keys | None = None,
    post: dict[str, Any] | None = None,
    browser: str | None = None,
    timeout: float = 20.0,
) -> StreamDBRun:
    """Start StreamDB on the stream at ``url`` (a full URL, ``.../v1/stream/<path>``).

    ``live`` is StreamDB's live mode; ``headers`` go on every request (``Cookie``,
    ``Authorization``); ``txid`` is awaited with ``awaitTxId``'s default timeout (5 s) after the
    first sync (and after ``post``: ``{"url", "body", "headers"?}``, a JSON POST sent with
    ``headers`` as the reference client sends its writes); ``browser`` is the page's origin: every
    request then carries the fetch metadata a browser adds to a same-origin fetch
    (``Sec-Fetch-Site: same-origin``...), and the POST also ``Origin`` (no CSRF header, as the
    reference client); the answer waits until every key of ``until`` is present and every key
    of ``until_absent`` absent; ``timeout`` bounds the run.
    """
    args = ["--url", url, "--live", live, "--timeout", str(timeout)]
    args += ["--headers", json.dumps(headers or {})]
    if txid is not None:
        args += ["--txid", txid]
    if until:
        args += ["--until", json.dumps(until)]
    if until_absent:
        args += ["--until-absent", json.dumps(until_absent)]
    if post is not None:
        args += ["--post", json.dumps(post)]
    if browser is not None:
        args += ["--browser", browser]
    return StreamDBRun(args, timeout)


def run_streamdb(
    url: str,
    *,
    live: Live,
    headers: dict[str, str] | None = None,
    txid: str | None = None,
    until: Keys | None = None,
    until_absent: Keys | None = None,
    post: dict[str, Any] | None = None,
    browser: str | None = None,
    timeout: float = 20.0,
    check: bool = True,
) -> dict[str, Any]:
    """Run StreamDB to the end (see ``start_streamdb``) and return its document:
    ``{"ok", "live", "offset", "collections": {"chunk": {key: row}, "presence": ...,
    "agent": ...}, "invalid": [rows that fail the schema], "txid": {"resolved", "ms", ...},
    "post": {"status", "body", "headers"}, "errors", "error"?}``. With ``check``, StreamDBError
    unless it succeeded."""
    run = start_streamdb(
        url,
        live=live,
        headers=headers,
        txid=txid,
        until=until,
        until_absent=until_absent,
        post=post,
        browser=browser,
        timeout=timeout,
    )
    try:
        return run.result(check=check)
    finally:
        run.stop()
