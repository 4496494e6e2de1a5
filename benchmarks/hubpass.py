"""The hub's pass, measured in process: microseconds per websocket delivery.

    python benchmarks/hubpass.py [--sockets 500] [--appends 100]

Opens ``--sockets`` websockets on one JSON stream through the ASGI application in this process
(Channels' ``WebsocketCommunicator``, no network, no ASGI server), appends ``--appends`` messages
one at a time, and times every ``Hub.deliver`` call: the hub's one pass over the stream's readers,
which for caught-up sockets includes advancing each follower, rendering (once) and handing both
frames to the ASGI ``send``. Prints the time per delivery (one batch to one socket). The ASGI
``send`` here is the communicator's queue, cheaper than a real server's framing and write, so
this isolates our share of the fan-out; ``run.py``'s ``ws-fanout`` measures the whole.

A diagnostic for changes to ``hub.py``, ``live.py`` and ``ws.py``, not part of ``run.py``: it has
no reference peer. Compare runs of it before and after a change, alternating, on one machine.
Uses ``DATABASE_URL`` if set, else a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def measure(sockets: int, appends: int) -> list[float]:
    from channels.testing import WebsocketCommunicator

    from durable_sessions import streams
    from durable_sessions.streams import hub
    from project.asgi import application

    passes: list[float] = []
    deliver = hub.Hub.deliver

    def timed(self, notices):
        started = time.perf_counter()
        deliver(self, notices)
        passes.append(time.perf_counter() - started)

    path = f"hubpass-{os.getpid()}-{time.time_ns()}"
    await streams.acreate(path, content_type="application/json")
    clients = []
    for _ in range(sockets):
        client = WebsocketCommunicator(
            application, f"/ws/v1/stream/{path}?offset=now", headers=[(b"host", b"localhost")]
        )
        connected, _ = await client.connect()
        assert connected
        await client.receive_from()  # the first control frame
        clients.append(client)
    hub.Hub.deliver = timed
    try:
        for i in range(appends):
            await streams.aappend_json(path, {"id": i})
            for client in clients:  # every socket has its data and control frames
                await client.receive_from(timeout=10)
                await client.receive_from(timeout=10)
    finally:
        hub.Hub.deliver = deliver
        for client in clients:
            await client.disconnect()
    return [seconds / sockets * 1e6 for seconds in passes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--appends", type=int, default=100)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="ds-hubpass-") as tmp:
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/hubpass.sqlite3")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        os.environ["DS_PUBLIC_STREAMS"] = "1"
        os.environ.pop("REDIS_URL", None)
        manage = [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"]
        subprocess.run(manage, check=True)
        import django

        django.setup()
        per_delivery = asyncio.run(measure(args.sockets, args.appends))
    print(
        f"{args.sockets} sockets, {len(per_delivery)} hub passes: "
        f"{statistics.median(per_delivery):.2f} us per delivery (median pass), "
        f"{statistics.mean(per_delivery):.2f} us (mean)"
    )


if __name__ == "__main__":
    main()
