"""The session API's message path: posts/s, and the materialized read vs the raw catch-up.

One daphne process of the host project (``DS_BENCHMARK_VIEWS=1``) on Postgres, driven over real
HTTP by this script (16 asyncio clients, one keep-alive connection each, token-authenticated).

(a) **Posts.** 16 clients post messages (``POST /v1/sessions/<id>/messages``, ~120 characters
    and a txid each, every answer an acknowledged durable message) for ``--seconds`` after a
    warm-up, in three configurations, alternating, two rounds: ``floor``, the trivial REST
    framework POST view of ``project/benchmark_views.py`` (token authentication, a serializer,
    a JSON answer: no session, no write) on the same server; ``shared``, all 16 in one session
    (16 members); ``own``, each client in a session of its own. Target: ``shared`` and ``own``
    at least 0.5x ``floor`` in the same round.
(b) **Reads.** ``--read-sessions`` sessions of ``--messages`` messages (posted through the
    service before the server starts, so its cache has never seen them),
    then, one client: the materialized messages (``GET .../messages?limit=500``, then
    ``&before=<first id>`` until ``hasMore`` is false: 4 requests for 2,000 messages) once per
    session on the server's cold cache (the first read of that session by that process), then,
    alternating for ``--seconds`` each, two rounds, warm materialized passes and raw catch-ups
    of the same session (``GET /v1/stream/sessions/<id>?offset=-1``, then the next offset
    until ``Stream-Up-To-Date``); every pass decodes its JSON. Target: a materialized pass
    takes at most 2x a raw catch-up (ratio of passes/s >= 0.5), cold and warm.

Prints the figures, the ratios, PASS/FAIL, the client's CPU share and the machine probe
(``benchmarks/run.py``) before and after.

    python benchmarks/session_messages.py [--seconds 5] [--clients 16] [--messages 2000]

``BENCH_DATABASE_URL`` chooses the Postgres database (default: ds_bench on the local Postgres;
created if missing and migrated, as ``run.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import machine_probe  # noqa: E402
from benchmarks.subscriptions import DEFAULT_DATABASE_URL, create_database  # noqa: E402

CONTENT = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor " * 1
CONFIGURATIONS = ("floor", "shared", "own")
TARGET = 0.5


def setup(database_url: str) -> None:
    """Point this process at the benchmark database (migrated) and set Django up."""
    for name in ("REDIS_URL", "DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE", "DS_PUBLIC_STREAMS"):
        os.environ.pop(name, None)
    os.environ["DATABASE_URL"] = database_url
    create_database(database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    import django

    django.setup()


def fill(session_ids: list[str], owner: Any, messages: int) -> None:
    """Post ``messages`` messages to each session through the service, from 8 threads."""
    from concurrent.futures import ThreadPoolExecutor

    from durable_sessions.sessions import service

    def post(sid: str) -> None:
        service.message_post(user=owner, session_id=sid, content=CONTENT)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, [sid for sid in session_ids for _ in range(messages)]))


def make_world(clients: int, reads: int, messages: int) -> dict[str, Any]:
    """Users with tokens, the sessions of each configuration (made through the service)."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from durable_sessions.sessions import service

    run = uuid.uuid4().hex[:8]  # users of earlier runs stay: names of their own
    users = [User.objects.create_user(f"bench-{run}-{k}") for k in range(clients)]
    tokens = [f"Token {Token.objects.create(user=u).key}" for u in users]

    def shared_session(title: str) -> str:
        session, _ = service.session_create(owner=users[0], title=title)
        for user in users[1:]:
            service.member_add(
                user=users[0], session_id=session.pk, username=user.username, role="member"
            )
        return str(session.pk)

    own = [str(service.session_create(owner=u, title="bench own")[0].pk) for u in users]
    read = [shared_session("bench read") for _ in range(reads)]
    fill(read, users[0], messages)
    return {"tokens": tokens, "shared": shared_session("bench"), "own": own, "read": read}


async def post_for(
    clients: list[Any], urls: list[str], seconds: float, warmup: float
) -> dict[str, float]:
    """Every client posts to its URL in a loop; acknowledged posts/s over ``seconds``."""
    counting = stop = False
    done = failed = 0

    async def worker(client: Any, url: str) -> None:
        nonlocal done, failed
        while not stop:
            body = {"content": CONTENT, "txid": str(uuid.uuid4())}
            answer = await client.post(url, json=body)
            if counting:
                if answer.status_code == 200:
                    done += 1
                else:
                    failed += 1

    tasks = [asyncio.create_task(worker(c, u)) for c, u in zip(clients, urls, strict=True)]
    await asyncio.sleep(warmup)
    counting = True
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - started
    client_cpu = (time.process_time() - cpu) / elapsed
    stop = True
    await asyncio.gather(*tasks)
    return {"per_s": done / elapsed, "failed": failed, "client_cpu": client_cpu}


PAGE = 500  # messages per GET .../messages (--page)


async def materialized_pass(client: Any, sid: str) -> int:
    """Read every message of ``sid`` through ``GET .../messages``; how many."""
    count, params = 0, {"limit": str(PAGE)}
    while True:
        answer = await client.get(f"/v1/sessions/{sid}/messages", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        count += len(page["messages"])
        if not page["hasMore"]:
            return count
        params = {"limit": str(PAGE), "before": page["messages"][0]["id"]}


async def raw_pass(client: Any, sid: str) -> int:
    """Catch up on the stream of ``sid`` from the start until up to date; how many events."""
    count, offset = 0, "-1"
    while True:
        answer = await client.get(f"/v1/stream/sessions/{sid}", params={"offset": offset})
        assert answer.status_code == 200, answer.text
        count += len(answer.json())
        offset = answer.headers["stream-next-offset"]
        if answer.headers.get("stream-up-to-date") == "true":
            return count


async def passes_for(read: Any, client: Any, sid: str, seconds: float) -> float:
    """Passes/s of ``read`` over ``seconds``."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        await read(client, sid)
        done += 1
    return done / (time.perf_counter() - started)


async def measure(base_url: str, world: dict[str, Any], args: argparse.Namespace) -> dict:
    """Both benchmarks against the running server."""
    import httpx

    limits = httpx.Limits(max_connections=1)
    clients = [
        httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": t}, timeout=60, limits=limits
        )
        for t in world["tokens"]
    ]
    n = len(clients)
    urls = {
        "floor": ["/bench/floor"] * n,
        "shared": [f"/v1/sessions/{world['shared']}/messages"] * n,
        "own": [f"/v1/sessions/{sid}/messages" for sid in world["own"]],
    }
    posts: dict[str, list[dict]] = {c: [] for c in CONFIGURATIONS}
    for _round in range(2):
        for configuration in CONFIGURATIONS:
            figure = await post_for(clients, urls[configuration], args.seconds, args.warmup)
            posts[configuration].append(figure)
            print(f"round {_round + 1} {configuration}: {figure}", file=sys.stderr, flush=True)

    total = args.messages
    reader = clients[0]
    cold, cold_raw = [], []
    for sid in world["read"]:
        started = time.perf_counter()
        raw_count = await raw_pass(reader, sid)
        cold_raw.append(time.perf_counter() - started)
        started = time.perf_counter()
        count = await materialized_pass(reader, sid)
        cold.append(time.perf_counter() - started)
        assert count == raw_count == total, (count, raw_count, total)
    sid = world["read"][0]
    reads: dict[str, list[float]] = {"materialized": [], "raw": []}
    for _round in range(2):
        for kind, read in (("raw", raw_pass), ("materialized", materialized_pass)):
            reads[kind].append(await passes_for(read, reader, sid, args.seconds))
        print(f"round {_round + 1} reads: {reads}", file=sys.stderr, flush=True)
    for client in clients:
        await client.aclose()
    return {
        "posts": posts,
        "cold": cold,
        "cold_raw": cold_raw,
        "reads": reads,
        "messages": total,
    }


def verdict(ratio: float) -> str:
    return "PASS" if ratio >= TARGET else "FAIL"


def report(figures: dict, args: argparse.Namespace, probes: list[dict]) -> None:
    """Print the figures, the ratios and the targets."""
    posts = figures["posts"]
    print(f"Postgres, daphne, {args.clients} clients, {args.seconds:g} s per run")
    print(f"{'(a) posts':<10} {'per s':>22} {'/ floor':>14} {'client CPU':>12} {'failed':>8}")
    for configuration in CONFIGURATIONS:
        runs = posts[configuration]
        ratios = [r["per_s"] / f["per_s"] for r, f in zip(runs, posts["floor"], strict=True)]
        rates = " / ".join(f"{r['per_s']:,.0f}" for r in runs)
        cpus = " / ".join(f"{r['client_cpu']:.2f}" for r in runs)
        line = f"{configuration:<10} {rates:>22}"
        line += f" {' / '.join(f'{q:.2f}' for q in ratios):>14} {cpus:>12}"
        line += f" {' / '.join(str(r['failed']) for r in runs):>8}"
        if configuration != "floor":
            line += f"  {verdict(min(ratios))} (>= {TARGET}x floor)"
        print(line)
    reads, n = figures["reads"], figures["messages"]
    print(
        f"(b) reads of a {n:,}-message session in pages of {PAGE}, one client"
        " (passes/s; ms per pass)"
    )
    cold = [raw / mat for raw, mat in zip(figures["cold_raw"], figures["cold"], strict=True)]
    print(
        f"cold: materialized {' / '.join(f'{t * 1000:.0f}' for t in figures['cold'])} ms,"
        f" raw first catch-up {' / '.join(f'{t * 1000:.0f}' for t in figures['cold_raw'])} ms,"
        f" ratio {' / '.join(f'{q:.2f}' for q in cold)}  {verdict(min(cold))}"
    )
    warm = [m / r for m, r in zip(reads["materialized"], reads["raw"], strict=True)]
    print(
        f"warm: materialized {' / '.join(f'{p:.1f}' for p in reads['materialized'])}/s,"
        f" raw catch-up {' / '.join(f'{p:.1f}' for p in reads['raw'])}/s,"
        f" ratio {' / '.join(f'{q:.2f}' for q in warm)}  {verdict(min(warm))}"
    )
    print(f"machine probe before / after: {probes[0]} / {probes[1]}")


def main() -> None:
    """Prepare, start the server, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--read-sessions", type=int, default=3)
    parser.add_argument(
        "--page", type=int, default=500, help="messages per materialized page (at most 1000)"
    )
    args = parser.parse_args()
    global PAGE
    PAGE = args.page
    setup(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    from tests.servers import ServerProcess

    probes = [machine_probe()]
    world = make_world(args.clients, args.read_sessions, args.messages)
    server = ServerProcess(public=False, env={"DS_BENCHMARK_VIEWS": "1"}).start()
    try:
        figures = asyncio.run(measure(server.url, world, args))
    except BaseException:
        print(f"server output:\n{server.output()[-5000:]}", file=sys.stderr)
        raise
    finally:
        server.stop()
    probes.append(machine_probe())
    report(figures, args, probes)
    print(json.dumps({"options": vars(args), **figures}), file=sys.stderr)


if __name__ == "__main__":
    main()
