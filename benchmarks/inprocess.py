"""The in-process Python API (the agent path, no HTTP): durable messages/s from N writers.

Each of ``--writers`` asyncio tasks owns one stream and appends one JSON message at a time,
awaiting its durable acknowledgement before the next. Prints one JSON object.

    DATABASE_URL=postgres://... python benchmarks/inprocess.py --writers 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


async def run(writers: int, seconds: float, warmup: float) -> dict[str, float]:
    from durable_sessions import streams

    run_id = uuid.uuid4().hex[:8]
    paths = [f"bench-inproc-{run_id}-{i}" for i in range(writers)]
    for path in paths:
        await streams.acreate(path, content_type="application/json")
    counting = False
    stop = False
    done = 0
    message = {"kind": "token", "text": "lorem ipsum dolor sit amet " * 3}

    async def writer(path: str) -> None:
        nonlocal done
        while not stop:
            await streams.aappend_json(path, [message])
            if counting:
                done += 1

    tasks = [asyncio.create_task(writer(path)) for path in paths]
    await asyncio.sleep(warmup)
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - started
    stop = True
    await asyncio.gather(*tasks)
    total = sum([(await streams.ainfo(path)).tail.seq for path in paths])
    return {"messages_per_s": done / elapsed, "stored": total, "writers": writers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    import django

    django.setup()
    from durable_sessions.streams.store import reset_store

    result = asyncio.run(run(args.writers, args.seconds, args.warmup))
    reset_store()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
