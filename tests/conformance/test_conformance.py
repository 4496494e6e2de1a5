"""The official Durable Streams conformance suite against a real daphne on the test database."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import ServerProcess

HERE = Path(__file__).resolve().parent
EXPECTED = 332


@pytest.mark.django_db(transaction=True)
def test_conformance_suite_passes_every_test():
    assert (HERE / "node_modules" / "@durable-streams").is_dir(), (
        "the conformance suite is not installed: run `npm ci` in tests/conformance"
    )
    npx = shutil.which("npx")
    assert npx, "Node.js (npx) is needed to run the conformance suite"
    server = ServerProcess(public=True).start()
    try:
        completed = subprocess.run(
            [npx, "vitest", "run", "conformance.test.mjs", "--reporter=default"],
            cwd=HERE,
            env={
                **os.environ,
                "CONFORMANCE_TEST_URL": server.url,
                "CONFORMANCE_LONG_POLL_MS": "1000",
                "NO_COLOR": "1",
                "CI": "1",
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.stop()
    output = completed.stdout + completed.stderr
    summary = re.search(r"Tests\s+(.*)\n", output)
    assert summary, output[-4000:]
    passed = re.search(r"(\d+) passed", summary.group(1))
    failed = re.search(r"(\d+) failed", summary.group(1))
    assert completed.returncode == 0 and not failed, output[-6000:]
    assert passed and int(passed.group(1)) == EXPECTED, summary.group(0)
