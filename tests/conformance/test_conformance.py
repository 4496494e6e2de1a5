"""The official Durable Streams conformance suite against a real daphne on the test database.

With the suite's subscription tests (webhooks to a receiver on 127.0.0.1, pull-wake claims):
all 338 tests, in both passes. Without them, the 332 of the suite's core, once (the SQLite
pass), so that a change that breaks only the plain protocol is named as such.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from tests.servers import ServerProcess

HERE = Path(__file__).resolve().parent
EXPECTED = {True: 338, False: 332}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("subscriptions", [True, False], ids=["with-subscriptions", "core"])
def test_conformance_suite_passes_every_test(subscriptions):
    if not subscriptions and connection.vendor != "sqlite":
        pytest.skip("the core-only run is the SQLite pass's; this pass runs all 338")
    assert (HERE / "node_modules" / "@durable-streams").is_dir(), (
        "the conformance suite is not installed: run `npm ci` in tests/conformance"
    )
    npx = shutil.which("npx")
    assert npx, "Node.js (npx) is needed to run the conformance suite"
    server = ServerProcess(public=True, env={"DS_WEBHOOK_ALLOW_LOOPBACK": "1"}).start()
    try:
        completed = subprocess.run(
            # The suite's own 5 s per test is for an idle machine; CI runs both passes side by
            # side on two cores, where its property-based tests (hundreds of requests) take longer.
            [
                npx,
                "vitest",
                "run",
                "conformance.test.mjs",
                "--reporter=default",
                "--testTimeout=30000",
            ],
            cwd=HERE,
            env={
                **os.environ,
                "CONFORMANCE_TEST_URL": server.url,
                "CONFORMANCE_LONG_POLL_MS": "1000",
                "CONFORMANCE_SUBSCRIPTIONS": "1" if subscriptions else "0",
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
    assert passed and int(passed.group(1)) == EXPECTED[subscriptions], summary.group(0)
    assert "Traceback" not in server.output(), server.output()[-4000:]
