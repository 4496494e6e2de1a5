"""Side-by-side benchmarks: our server and the reference Durable Streams server, one command.

Runs the same client workload (``benchmarks/load.mjs``) against four servers, one at a time:
ours under uvicorn (the recommended configuration), ours under daphne, the reference server
(@durable-streams/server) in memory and the reference server file-backed (fsync on append). Then
runs the in-process Python API benchmark (``benchmarks/inprocess.py``) on the same database.
Prints each figure with its ratio to the reference in the same run, checks the performance
targets (PASS/FAIL) and writes the raw results to ``benchmarks/results/<UTC timestamp>.json``.

Run from the repository root with the virtualenv active:

    python benchmarks/run.py                 # the full run (about five minutes)
    python benchmarks/run.py --quick         # shorter durations, a smoke test
    python benchmarks/run.py --only uvicorn,ref-file,appends-distinct

``--only`` takes server names (uvicorn, daphne, ref-memory, ref-file) and benchmark names
(appends-distinct, appends-same, appends-batch, long-poll, sse, catch-up, inprocess); each kind
given restricts that kind. ``BENCH_DATABASE_URL`` overrides the Postgres database
(default postgres://postgres@127.0.0.1:5432/ds_bench, created if missing). The exit status is
non-zero only on errors (a server that does not start, a scenario that crashes), not on a FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ds_bench"
INPROCESS_TARGET = 20_000  # messages/s, target (c)
SCENARIO_TIMEOUT = 240  # seconds one client run may take before it counts as an error

# name -> (load.mjs scenario, full-run options, --quick overrides)
SCENARIOS: dict[str, tuple[str, dict, dict]] = {
    "appends-distinct": (
        "appends",
        {"producers": 16, "seconds": 10, "warmup": 1},
        {"seconds": 2, "warmup": 0.5},
    ),
    "appends-same": (
        "appends",
        {"producers": 16, "seconds": 10, "warmup": 1, "sameStream": True},
        {"seconds": 2, "warmup": 0.5},
    ),
    "appends-batch": (
        "appends",
        {"producers": 16, "seconds": 10, "warmup": 1, "batch": 50},
        {"seconds": 2, "warmup": 0.5},
    ),
    "long-poll": ("long-poll", {"rounds": 200}, {"rounds": 50}),
    "sse": ("sse-fanout", {"subscribers": 200, "rate": 50, "seconds": 10}, {"seconds": 3}),
    "catch-up": ("catch-up", {"messages": 5000, "readers": 4, "seconds": 5}, {"seconds": 2}),
}
INPROCESS = {"writers": 50, "seconds": 5}
INPROCESS_QUICK = {"writers": 50, "seconds": 2}
SERVERS = ["uvicorn", "daphne", "ref-memory", "ref-file"]
OURS = ["uvicorn", "daphne"]

# The table: (label, benchmark, result key, unit, references to compare with)
ROWS = [
    (
        "appends, 16 producers, distinct streams",
        "appends-distinct",
        "requests_per_s",
        "req/s",
        ["ref-file"],
    ),
    ("appends, 16 producers, one stream", "appends-same", "requests_per_s", "req/s", ["ref-file"]),
    (
        "appends, 16 producers, 50-message arrays",
        "appends-batch",
        "messages_per_s",
        "msg/s",
        ["ref-file"],
    ),
    ("append -> long-poll p50", "long-poll", "p50_ms", "ms", ["ref-memory", "ref-file"]),
    ("append -> long-poll p99", "long-poll", "p99_ms", "ms", ["ref-memory", "ref-file"]),
    ("SSE fan-out x200 p50", "sse", "p50_ms", "ms", ["ref-memory", "ref-file"]),
    ("SSE fan-out x200 p99", "sse", "p99_ms", "ms", ["ref-memory", "ref-file"]),
    ("SSE fan-out x200 delivered", "sse", "delivered_fraction", "frac", ["ref-memory", "ref-file"]),
    (
        "catch-up read, 5,000 messages",
        "catch-up",
        "messages_per_s",
        "msg/s",
        ["ref-memory", "ref-file"],
    ),
]
SHORT = {"ref-memory": "mem", "ref-file": "file"}


class Interrupted(Exception):
    """Raised by the SIGTERM handler so that the servers are stopped on the way out."""


def log(text: str) -> None:
    """Progress on stderr (stdout carries the report)."""
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll a TCP connect until the server accepts; fail if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not accept connections on port {port} within {timeout:.0f} s")


def server_env(database_url: str) -> dict[str, str]:
    """The environment of our server and of the in-process benchmark."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_DEBUG"}}
    env.update(DATABASE_URL=database_url, DS_PUBLIC_STREAMS="1", PYTHONUNBUFFERED="1")
    return env


def server_command(name: str, port: int, data_dir: str) -> list[str]:
    """The command line that starts server ``name`` on ``port``."""
    bindir = Path(sys.executable).parent
    if name == "uvicorn":
        return [
            str(bindir / "uvicorn"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "project.asgi:application",
        ]
    if name == "daphne":  # -v 0: no access log, like uvicorn above
        return [
            str(bindir / "daphne"),
            "-v",
            "0",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "project.asgi:application",
        ]
    extra = [data_dir] if name == "ref-file" else []
    return ["node", str(BENCH / "reference-server.mjs"), str(port), *extra]


@contextlib.contextmanager
def running_server(name: str, database_url: str, logs: Path):
    """Start server ``name``, yield its base URL once it listens, stop it (and its group)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ds-bench-ref-") as data_dir:
        log_file = (logs / f"{name}.log").open("w")
        proc = subprocess.Popen(
            server_command(name, port, data_dir),
            cwd=ROOT,
            env=server_env(database_url),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process_group(proc)
            log_file.close()


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL whatever is left after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_client(scenario: str, base_url: str, options: dict) -> dict:
    """Run one load.mjs scenario and return its JSON figures."""
    done = subprocess.run(
        ["node", str(BENCH / "load.mjs"), scenario, base_url, json.dumps(options)],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"load.mjs {scenario} exited {done.returncode}: {done.stderr.strip()[-600:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(database_url: str) -> dict[str, str]:
    """Create and migrate the database, install the reference server; return Postgres settings."""
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    admin_url = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            log(f"creating database {name}")
            conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(database_url) as conn:
        settings = {
            key: conn.execute(f"SHOW {key}").fetchone()[0]
            for key in ("server_version", "synchronous_commit", "fsync")
        }
    log("migrating")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=server_env(database_url),
        check=True,
    )
    if not (BENCH / "node_modules").exists():
        log("npm ci in benchmarks/")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    return settings


def run_inprocess(database_url: str, options: dict) -> dict:
    """Run benchmarks/inprocess.py on the benchmark database."""
    args = [f"--{key}={value}" for key, value in options.items()]
    done = subprocess.run(
        [sys.executable, str(BENCH / "inprocess.py"), *args],
        cwd=ROOT,
        env=server_env(database_url),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"inprocess.py exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_all(
    servers: list[str], scenarios: list[str], quick: bool, database_url: str, logs: Path
) -> tuple[dict, list[str]]:
    """Run every selected scenario on every selected server; return results and errors."""
    results: dict[str, dict] = {}
    errors: list[str] = []
    for server in servers:
        results[server] = {}
        log(f"== {server}")
        try:
            with running_server(server, database_url, logs) as base_url:
                for name in scenarios:
                    scenario, options, overrides = SCENARIOS[name]
                    options = {**options, **(overrides if quick else {})}
                    log(f"   {name} {json.dumps(options)}")
                    try:
                        results[server][name] = run_client(scenario, base_url, options)
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                        errors.append(f"{server} {name}: {exc}")
                        results[server][name] = {"error": str(exc)}
                        log(f"   ERROR {exc}")
        except RuntimeError as exc:
            tail = (logs / f"{server}.log").read_text()[-1000:]
            errors.append(f"{server}: {exc}")
            log(f"   ERROR {exc}\n{tail}")
        time.sleep(1)  # let the sockets and the database settle between servers
    return results, errors


def figure(results: dict, server: str, bench: str, key: str) -> float | None:
    """One figure from the results, or None if it was not measured or failed."""
    value = results.get(server, {}).get(bench, {}).get(key)
    return value if isinstance(value, int | float) else None


def fmt(value: float | None, unit: str) -> str:
    """A figure for the table."""
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "frac":
        return f"{value:.4f}"
    return f"{value:,.0f}"


def ratio(ours: float | None, ref: float | None) -> float | None:
    """ours / reference, or None."""
    return ours / ref if ours is not None and ref else None


def print_table(results: dict, inprocess: dict | None) -> None:
    """The figures of every server and each of ours over the reference(s)."""
    head = (
        f"{'benchmark':<42}{'unit':>6}{'uvicorn':>10}{'daphne':>10}{'ref-mem':>10}"
        f"{'ref-file':>10}   {'uvicorn / ref':<24}{'daphne / ref':<24}"
    )
    print("\nRatios read ours / reference (>1 is better for throughput, <1 better for latency).")
    print(head)
    print("-" * len(head.rstrip()))
    for label, bench, key, unit, refs in ROWS:
        values = [figure(results, server, bench, key) for server in SERVERS]
        if all(v is None for v in values):
            continue
        cells = "".join(f"{fmt(v, unit):>10}" for v in values)
        ratios = []
        for ours in OURS:
            parts = [
                f"{r:.2f}x {SHORT[ref]}"
                for ref in refs
                if (r := ratio(figure(results, ours, bench, key), figure(results, ref, bench, key)))
                is not None
            ]
            ratios.append(", ".join(parts) or "-")
        print(f"{label:<42}{unit:>6}{cells}   {ratios[0]:<24}{ratios[1]:<24}".rstrip())
    if inprocess and "messages_per_s" in inprocess:
        value = inprocess["messages_per_s"]
        print(
            f"in-process API, {inprocess['writers']} writers: {value:,.0f} msg/s "
            f"({value / INPROCESS_TARGET:.2f}x the {INPROCESS_TARGET:,} msg/s target; "
            f"the reference has no in-process API)"
        )


def check_targets(results: dict, inprocess: dict | None) -> list[dict]:
    """Evaluate targets (a)-(f); a target whose figures are missing is SKIP."""

    def get(server: str, bench: str, key: str) -> float | None:
        return figure(results, server, bench, key)

    sse_ours = get("uvicorn", "sse", "p99_ms")
    sse_ref = get("ref-file", "sse", "p99_ms")
    delivered = get("uvicorn", "sse", "delivered_fraction")
    checks = [
        (
            "a",
            "appends/s, 16 producers, distinct streams: uvicorn >= 1.5x file-backed reference",
            get("uvicorn", "appends-distinct", "requests_per_s"),
            get("ref-file", "appends-distinct", "requests_per_s"),
            1.5,
            True,
        ),
        (
            "a'",
            "(report) the same for daphne >= 1.5x file-backed reference",
            get("daphne", "appends-distinct", "requests_per_s"),
            get("ref-file", "appends-distinct", "requests_per_s"),
            1.5,
            True,
        ),
        (
            "b",
            "messages/s with 50-message arrays: uvicorn >= file-backed reference",
            get("uvicorn", "appends-batch", "messages_per_s"),
            get("ref-file", "appends-batch", "messages_per_s"),
            1.0,
            True,
        ),
        (
            "c",
            f"in-process API >= {INPROCESS_TARGET:,} messages/s",
            (inprocess or {}).get("messages_per_s"),
            INPROCESS_TARGET,
            1.0,
            True,
        ),
        (
            "d",
            "catch-up messages/s: uvicorn >= in-memory reference",
            get("uvicorn", "catch-up", "messages_per_s"),
            get("ref-memory", "catch-up", "messages_per_s"),
            1.0,
            True,
        ),
        (
            "e",
            "long-poll p50: uvicorn <= 3x in-memory reference p50",
            get("uvicorn", "long-poll", "p50_ms"),
            get("ref-memory", "long-poll", "p50_ms"),
            3.0,
            False,
        ),
        (
            "f",
            "SSE fan-out p99: uvicorn <= file-backed reference p99, all messages delivered",
            sse_ours,
            sse_ref,
            1.0,
            False,
        ),
    ]
    outcome = []
    for key, text, ours, ref, factor, higher in checks:
        if ours is None or not ref:
            status, value = "SKIP", None
        else:
            value = ours / ref
            status = "PASS" if (value >= factor if higher else value <= factor) else "FAIL"
            if key == "f" and delivered != 1:
                status = "FAIL"
        outcome.append(
            {
                "target": key,
                "description": text,
                "ours": ours,
                "reference": ref,
                "ratio": value,
                "threshold": factor,
                "status": status,
            }
        )
    return outcome


def print_targets(outcome: list[dict]) -> None:
    """The PASS/FAIL block."""
    print("\nTargets (ratio = ours / reference):")
    for check in outcome:
        detail = "not measured" if check["ratio"] is None else f"{check['ratio']:.2f}x"
        if check["target"] == "f" and check["ratio"] is not None:
            detail += " (delivered fraction checked too)"
        print(f"  ({check['target']}) {check['status']:<4}  {check['description']}: {detail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter durations (a smoke test)")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        default="",
        help="run a subset: server and/or benchmark names, comma-separated",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    known = {*SERVERS, *SCENARIOS, "inprocess"}
    if unknown := [n for n in names if n not in known]:
        parser.error(f"unknown name(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    benches = [n for n in names if n not in SERVERS]
    args.servers = [s for s in SERVERS if s in names] or SERVERS
    args.scenarios = [s for s in SCENARIOS if s in benches] or ([] if benches else list(SCENARIOS))
    args.inprocess = "inprocess" in benches or not benches
    return args


def database_label(url: str) -> str:
    """host:port/name of the database, without credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def on_sigterm(signum, frame) -> None:
    """Turn SIGTERM into an exception so that the running server is stopped."""
    raise Interrupted


def main(argv: list[str] | None = None) -> int:
    """Prepare, run, report, save. Returns the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    started = dt.datetime.now(dt.UTC)
    try:
        postgres = prepare(database_url)
        with tempfile.TemporaryDirectory(prefix="ds-bench-logs-") as logs:
            results, errors = run_all(
                args.servers, args.scenarios, args.quick, database_url, Path(logs)
            )
            inprocess = None
            if args.inprocess:
                options = INPROCESS_QUICK if args.quick else INPROCESS
                log(f"== in-process {json.dumps(options)}")
                try:
                    inprocess = run_inprocess(database_url, options)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                    errors.append(f"inprocess: {exc}")
                    inprocess = {"error": str(exc)}
    except (KeyboardInterrupt, Interrupted):
        log("interrupted: servers stopped")
        return 130
    print_table(results, inprocess)
    targets = check_targets(results, inprocess)
    print_targets(targets)
    out = BENCH / "results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "finished": dt.datetime.now(dt.UTC).isoformat(),
                "quick": args.quick,
                "database": database_label(database_url),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "postgres": postgres,
                    "node": subprocess.run(
                        ["node", "--version"], capture_output=True, text=True
                    ).stdout.strip(),
                },
                "options": {
                    name: {**opts, **(quick if args.quick else {})}
                    for name, (_, opts, quick) in SCENARIOS.items()
                }
                | {"inprocess": INPROCESS_QUICK if args.quick else INPROCESS},
                "results": results,
                "inprocess": inprocess,
                "targets": targets,
                "errors": errors,
            },
            indent=2,
        )
    )
    print(f"\nraw results: {out.relative_to(ROOT)}")
    for error in errors:
        print(f"ERROR {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
