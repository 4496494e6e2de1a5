"""What subscriptions cost the appends: appends/s to 100 streams with and without subscribers.

Three configurations, each in a fresh process on the same database, alternating, two rounds:

- ``none``: N writers append to 100 streams, and no subscription exists (the floor);
- ``pull-wake``: the same, with 100 pull-wake subscriptions, each linked to one of the streams,
  all waking on one shared wake stream (the agent case: one subscription per session);
- ``pattern``: the same, with one pull-wake subscription whose pattern matches all 100.

The writers are asyncio tasks using the in-process API (as ``inprocess.py``: one JSON message
per append, each awaiting its durable acknowledgement); writer ``k`` appends to streams ``k``,
``k + N``, ... in turn. The process's subscriptions thread runs beside them, as in a server:
after each group commit it looks up the subscriptions of the touched streams and wakes the idle
ones (a wake in flight or a held lease needs nothing more). Nobody claims, so each subscription
is woken once and then has a wake in flight, unless ``--lease-ttl-ms`` is short enough for
unclaimed wakes to lapse (the sweep then wakes them again). Prints appends/s per round, the
ratio to ``none`` in the same round, the wake events written and the wakes made (generations),
and the machine probe before and after.

    python benchmarks/subscriptions.py [--writers 50] [--seconds 5] [--lease-ttl-ms 30000]
    python benchmarks/subscriptions.py --sqlite      # on a fresh SQLite file per run

``BENCH_DATABASE_URL`` chooses the Postgres database (default: ds_bench on the local Postgres;
created if missing, as ``run.py`` does); ``manage.py migrate`` runs on it before each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import machine_probe  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ds_bench"
CONFIGURATIONS = ("none", "pull-wake", "pattern")
STREAMS = 100


# -- the child: one configuration in a process of its own -------------------------------------


def subscribe(configuration: str, prefix: str, paths: list[str], wake: str, ttl: int) -> None:
    """Create the subscriptions of ``configuration`` on ``paths`` (none for ``none``)."""
    from durable_sessions.streams import subscriptions

    if configuration == "pull-wake":
        for n, path in enumerate(paths):
            subscriptions.ensure(
                f"{prefix}-{n}", type="pull-wake", streams=[path], wake_stream=wake,
                lease_ttl_ms=ttl,
            )  # fmt: skip
    elif configuration == "pattern":
        subscriptions.ensure(
            f"{prefix}-all", type="pull-wake", pattern=f"{prefix}/*", wake_stream=wake,
            lease_ttl_ms=ttl,
        )  # fmt: skip


async def appends(paths: list[str], writers: int, seconds: float, warmup: float) -> float:
    """Appends/s of ``writers`` tasks over ``paths`` during ``seconds`` (after ``warmup``)."""
    from durable_sessions import streams

    counting = stop = False
    done = 0
    message = {"kind": "token", "text": "lorem ipsum dolor sit amet " * 3}

    async def writer(k: int) -> None:
        nonlocal done
        mine = paths[k::writers] or [paths[k % len(paths)]]
        n = 0
        while not stop:
            await streams.aappend_json(mine[n % len(mine)], [message])
            n += 1
            if counting:
                done += 1

    tasks = [asyncio.create_task(writer(k)) for k in range(writers)]
    await asyncio.sleep(warmup)
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - started
    stop = True
    await asyncio.gather(*tasks)
    return done / elapsed


def child(configuration: str, writers: int, seconds: float, warmup: float, ttl: int) -> dict:
    """One run: streams and subscriptions made, appends measured, wakes counted, all removed."""
    import django

    django.setup()
    from durable_sessions import streams
    from durable_sessions.streams.store import reset_store
    from durable_sessions.streams.subscriptions.models import Subscription

    live = Subscription.objects.filter(deleted=False)
    assert not live.exists(), f"subscriptions left from another run: {list(live[:5])}"
    prefix = f"bench-subs-{uuid.uuid4().hex[:8]}"
    paths = [f"{prefix}/{n}" for n in range(STREAMS)]
    wake = f"{prefix}-wake"
    streams.create(wake, content_type="application/json")
    for path in paths:
        streams.create(path, content_type="application/json")
    subscribe(configuration, prefix, paths, wake, ttl)
    try:
        rate = asyncio.run(appends(paths, writers, seconds, warmup))
        reset_store()  # the writers and the subscriptions thread stop: every wake is written
        mine = Subscription.objects.filter(id__startswith=prefix)
        woken = sum(mine.values_list("generation", flat=True))
        events = streams.info(wake).tail.seq
        stored = sum(streams.info(path).tail.seq for path in paths)
    finally:
        Subscription.objects.filter(id__startswith=prefix).delete()  # rows, links and all
        for path in [wake, *paths]:
            streams.delete(path)
        reset_store()
    return {"appends_per_s": rate, "wake_events": events, "wakes": woken, "stored": stored}


# -- the parent: alternate the configurations, report ------------------------------------------


def create_database(database_url: str) -> None:
    """Create the Postgres database of ``database_url`` if it is missing."""
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    admin_url = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def run_child(configuration: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """``child`` in a fresh process; returns its figures."""
    command = [
        sys.executable, __file__, "--child", configuration, "--writers", str(args.writers),
        "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        "--lease-ttl-ms", str(args.lease_ttl_ms),
    ]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternate the configurations, two rounds, and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--lease-ttl-ms", type=int, default=30_000)
    parser.add_argument("--sqlite", action="store_true", help="a fresh SQLite file per run")
    parser.add_argument("--child", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        result = child(args.child, args.writers, args.seconds, args.warmup, args.lease_ttl_ms)
        print(json.dumps(result))
        return

    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_DEBUG"}}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    tmp = tempfile.TemporaryDirectory(prefix="ds-bench-subs-")
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    if not args.sqlite:
        create_database(database_url)
    probes = [machine_probe()]
    figures: dict[str, list[dict]] = {name: [] for name in CONFIGURATIONS}
    for _round in range(2):
        for configuration in CONFIGURATIONS:
            if args.sqlite:
                env.pop("DATABASE_URL", None)
                env["DS_SQLITE_PATH"] = str(Path(tmp.name) / f"{configuration}-{_round}.db")
            else:
                env["DATABASE_URL"] = database_url
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
            )
            figures[configuration].append(run_child(configuration, args, env))
            print(f"round {_round + 1} {configuration}: {figures[configuration][-1]}",
                  file=sys.stderr, flush=True)  # fmt: skip
    probes.append(machine_probe())
    tmp.cleanup()

    database = "SQLite" if args.sqlite else "Postgres"
    print(
        f"{database}, {args.writers} writers, {STREAMS} streams, {args.seconds:g} s per run,"
        f" lease_ttl_ms {args.lease_ttl_ms}"
    )
    header = f"{'configuration':<14} {'appends/s':>18} {'/ none':>12} {'wake events':>14}"
    print(f"{header} {'wakes':>10}")
    for configuration in CONFIGURATIONS:
        runs = figures[configuration]
        rates = [run["appends_per_s"] for run in runs]
        ratios = [r / n["appends_per_s"] for r, n in zip(rates, figures["none"], strict=True)]
        print(
            f"{configuration:<14} {' / '.join(f'{r:,.0f}' for r in rates):>18}"
            f" {' / '.join(f'{q:.2f}' for q in ratios):>12}"
            f" {' / '.join(str(run['wake_events']) for run in runs):>14}"
            f" {' / '.join(str(run['wakes']) for run in runs):>10}"
        )
    for configuration in CONFIGURATIONS[1:]:
        costs = [
            1e6 / run["appends_per_s"] - 1e6 / none["appends_per_s"]
            for run, none in zip(figures[configuration], figures["none"], strict=True)
        ]
        floor = " / ".join(f"{1e6 / run['appends_per_s']:.0f}" for run in figures["none"])
        print(
            f"{configuration}: {' / '.join(f'{c:+.0f}' for c in costs)} us per append over none"
            f" (an append with none: {floor} us)"
        )
    print(f"machine probe before / after: {probes[0]} / {probes[1]}")


if __name__ == "__main__":
    main()
