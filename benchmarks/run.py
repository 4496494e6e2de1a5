"""Side-by-side benchmarks: our server and the reference Durable Streams server, one command.

The same client workload (``benchmarks/load.mjs``) runs against four servers, one at a time: ours
under uvicorn (the recommended configuration) and under daphne, and the reference server
(@durable-streams/server) in memory and file-backed. Then ``benchmarks/inprocess.py`` measures
our in-process API on the same database. Prints every figure with its ratio to the reference of
the same run, checks the targets (PASS/FAIL), writes ``benchmarks/results/<UTC time>.json``.

    python benchmarks/run.py            # from the repository root, virtualenv active (~5 min)
    python benchmarks/run.py --quick    # shorter durations: a smoke test
    python benchmarks/run.py --only uvicorn,ref-file,appends-distinct

``--only`` takes server names and/or benchmark names (see below); each kind given restricts that
kind. ``BENCH_DATABASE_URL`` overrides the database (default: ds_bench on the local Postgres,
created if missing). Exits non-zero only on errors (a server that does not start, a client that
crashes), never on a FAIL.
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
TIMEOUT = 240  # seconds one client run may take before it counts as an error
SERVERS = ["uvicorn", "daphne", "ref-memory", "ref-file"]
OURS = ["uvicorn", "daphne"]

# name -> (load.mjs scenario, or inprocess.py; options of the full run)
SCENARIOS: dict[str, tuple[str, dict]] = {
    "appends-distinct": ("appends", {"producers": 16, "seconds": 10, "warmup": 1}),
    "appends-same": ("appends", {"producers": 16, "seconds": 10, "warmup": 1, "sameStream": True}),
    "appends-batch": ("appends", {"producers": 16, "seconds": 10, "warmup": 1, "batch": 50}),
    "long-poll": ("long-poll", {"rounds": 200}),
    "sse": ("sse-fanout", {"subscribers": 200, "rate": 50, "seconds": 10}),
    "catch-up": ("catch-up", {"messages": 5000, "readers": 4, "seconds": 5}),
    "inprocess": ("inprocess.py", {"writers": 50, "seconds": 5}),
}
QUICK = {"seconds": 2, "warmup": 0.5, "rounds": 50}  # --quick overrides, where they apply


# The table: (label, benchmark, figure, unit, the references it is compared with)
FILE, BOTH = ("ref-file",), ("ref-memory", "ref-file")
ROWS = [
    ("appends x16, distinct streams", "appends-distinct", "requests_per_s", "req/s", FILE),
    ("appends x16, one stream", "appends-same", "requests_per_s", "req/s", FILE),
    ("appends x16, 50-message arrays", "appends-batch", "messages_per_s", "msg/s", FILE),
    ("append -> long-poll p50", "long-poll", "p50_ms", "ms", BOTH),
    ("append -> long-poll p99", "long-poll", "p99_ms", "ms", BOTH),
    ("SSE fan-out x200 p50", "sse", "p50_ms", "ms", BOTH),
    ("SSE fan-out x200 p99", "sse", "p99_ms", "ms", BOTH),
    ("SSE fan-out x200 delivered", "sse", "delivered_fraction", "frac", BOTH),
    ("catch-up, 5,000-message stream", "catch-up", "messages_per_s", "msg/s", BOTH),
]
SHORT = {"ref-memory": "mem", "ref-file": "file"}


class Interrupted(Exception):
    """Raised by the SIGTERM handler so that the running server is stopped on the way out."""


def log(text: str) -> None:
    """Progress on stderr (stdout carries the report)."""
    print(text, file=sys.stderr, flush=True)


def options_for(name: str, quick: bool) -> dict:
    """The options of benchmark ``name``, shortened by ``QUICK`` when ``quick``."""
    options = SCENARIOS[name][1]
    return options | {k: v for k, v in QUICK.items() if quick and k in options}


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
    """The environment of our server and of the in-process benchmark (no Redis, no DEBUG)."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_DEBUG"}}
    return env | {"DATABASE_URL": database_url, "DS_PUBLIC_STREAMS": "1"}


def server_command(name: str, port: int, data_dir: str) -> list[str]:
    """The command line that starts server ``name`` on ``port``."""
    bindir = Path(sys.executable).parent
    app = "project.asgi:application"
    if name == "uvicorn":
        quiet = ["--no-access-log", "--log-level", "warning"]
        return [str(bindir / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), *quiet, app]
    if name == "daphne":  # -v 0: no access log, like uvicorn above
        return [str(bindir / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), app]
    extra = [data_dir] if name == "ref-file" else []
    return ["node", str(BENCH / "reference-server.mjs"), str(port), *extra]


@contextlib.contextmanager
def running_server(name: str, database_url: str, logs: Path):
    """Start server ``name``, yield its base URL once it listens, stop it on the way out."""
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="ds-bench-ref-") as data_dir,
        (logs / f"{name}.log").open("w") as log_file,
    ):
        proc = subprocess.Popen(
            server_command(name, port, data_dir),
            cwd=ROOT,
            env=server_env(database_url),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C is ours to handle
        )
        try:
            wait_for_port(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL what is left of it after 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def run_json(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    """Run a benchmark client and return the JSON object on the last line of its output."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        name = Path(command[1]).name
        raise RuntimeError(f"{name} exited {done.returncode}: {done.stderr.strip()[-600:]}")
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
        keys = ("server_version", "synchronous_commit", "fsync")
        settings = {key: conn.execute(f"SHOW {key}").fetchone()[0] for key in keys}
    log("migrating")
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(migrate, cwd=ROOT, env=server_env(database_url), check=True)
    if not (BENCH / "node_modules").exists():
        log("npm ci in benchmarks/")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    return settings


def run_servers(args: argparse.Namespace, database_url: str, logs: Path) -> dict[str, dict]:
    """Run every selected scenario on every selected server, one server at a time."""
    results: dict[str, dict] = {}
    for server in args.servers:
        results[server] = {}
        log(f"== {server}")
        try:
            with running_server(server, database_url, logs) as base_url:
                for name in args.scenarios:
                    options = options_for(name, args.quick)
                    log(f"   {name} {json.dumps(options)}")
                    client = ["node", "load.mjs", SCENARIOS[name][0], base_url]
                    results[server][name] = attempt([*client, json.dumps(options)], BENCH)
        except RuntimeError as exc:  # the server did not start
            tail = (logs / f"{server}.log").read_text()[-1000:]
            results[server]["error"] = str(exc)
            log(f"   ERROR {exc}\n{tail}")
        time.sleep(1)  # let sockets and the database settle between servers
    return results


def run_inprocess(args: argparse.Namespace, database_url: str) -> dict:
    """Run benchmarks/inprocess.py on the benchmark database (no server is running)."""
    options = options_for("inprocess", args.quick)
    log(f"== in-process {json.dumps(options)}")
    command = [sys.executable, "benchmarks/inprocess.py"]
    command += [f"--{key}={value}" for key, value in options.items()]
    return attempt(command, ROOT, server_env(database_url))


def attempt(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    """``run_json``, with a crash or a timeout turned into ``{"error": ...}``."""
    try:
        return run_json(command, cwd, env)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        log(f"   ERROR {exc}")
        return {"error": str(exc)}


def figure(results: dict, server: str, bench: str, key: str) -> float | None:
    """One figure from the results, or None if it was not measured or failed."""
    value = results.get(server, {}).get(bench, {}).get(key)
    return value if isinstance(value, int | float) else None


def fmt(value: float | None, unit: str) -> str:
    """A figure for the table."""
    if value is None:
        return "-"
    return {"ms": f"{value:.2f}", "frac": f"{value:.4f}"}.get(unit, f"{value:,.0f}")


def ratio(ours: float | None, ref: float | None) -> float | None:
    """ours / reference, or None when either is missing."""
    return ours / ref if ours is not None and ref else None


def times(value: float) -> str:
    """A ratio for display: two decimals, or two significant digits when it is below 0.1."""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def print_table(results: dict, inprocess: dict) -> None:
    """The figures of every server, and each of ours over the reference(s) of its row."""
    print("\nRatios read ours / reference: above 1 is better for a throughput, below 1 is better")
    print("for a latency (mem = reference in memory, file = reference file-backed).\n")
    columns = "".join(f"{name:>11}" for name in SERVERS)
    head = f"{'benchmark':<32}{'unit':>6}{columns}   {'uvicorn / ref':<27}daphne / ref"
    print(head)
    print("-" * len(head))
    for label, bench, key, unit, refs in ROWS:
        values = [figure(results, server, bench, key) for server in SERVERS]
        if all(v is None for v in values):
            continue
        ratios = []
        for ours in OURS:
            mine = figure(results, ours, bench, key)
            pairs = [(ratio(mine, figure(results, ref, bench, key)), ref) for ref in refs]
            ratios.append(", ".join(f"{times(r)} {SHORT[ref]}" for r, ref in pairs if r) or "-")
        cells = "".join(f"{fmt(v, unit):>11}" for v in values)
        print(f"{label:<32}{unit:>6}{cells}   {ratios[0]:<26} {ratios[1]}".rstrip())
    if "messages_per_s" in inprocess:
        value = inprocess["messages_per_s"]
        print(
            f"\nin-process API, {inprocess['writers']} writers: {value:,.0f} msg/s, "
            f"{times(value / INPROCESS_TARGET)} the {INPROCESS_TARGET:,} msg/s target "
            "(the reference server has no in-process API)"
        )


def check_targets(results: dict, inprocess: dict) -> list[dict]:
    """Targets (a)-(f) as ours / reference against a threshold; SKIP when a figure is missing."""

    def get(server: str, bench: str, key: str) -> float | None:
        return figure(results, server, bench, key)

    appends_ref = get("ref-file", "appends-distinct", "requests_per_s")
    delivered = get("uvicorn", "sse", "delivered_fraction")
    checks = [  # (target, description, ours, reference, threshold, higher is better)
        ("a", "appends/s x16 distinct streams, uvicorn >= 1.5x file-backed ref",
         get("uvicorn", "appends-distinct", "requests_per_s"), appends_ref, 1.5, True),
        ("a*", "(reported) the same with daphne >= 1.5x file-backed ref",
         get("daphne", "appends-distinct", "requests_per_s"), appends_ref, 1.5, True),
        ("b", "messages/s with 50-message arrays, uvicorn >= file-backed ref",
         get("uvicorn", "appends-batch", "messages_per_s"),
         get("ref-file", "appends-batch", "messages_per_s"), 1.0, True),
        ("c", f"in-process API >= {INPROCESS_TARGET:,} messages/s",
         inprocess.get("messages_per_s"), INPROCESS_TARGET, 1.0, True),
        ("d", "catch-up messages/s, uvicorn >= in-memory ref",
         get("uvicorn", "catch-up", "messages_per_s"),
         get("ref-memory", "catch-up", "messages_per_s"), 1.0, True),
        ("e", "long-poll p50, uvicorn <= 3x in-memory ref p50",
         get("uvicorn", "long-poll", "p50_ms"), get("ref-memory", "long-poll", "p50_ms"),
         3.0, False),
        ("f", "SSE fan-out p99, uvicorn <= file-backed ref p99, all delivered",
         get("uvicorn", "sse", "p99_ms"), get("ref-file", "sse", "p99_ms"), 1.0, False),
    ]  # fmt: skip
    outcome = []
    for target, text, ours, ref, threshold, higher in checks:
        value = ratio(ours, ref)
        if value is None:
            status = "SKIP"
        else:
            ok = value >= threshold if higher else value <= threshold
            ok = ok and (target != "f" or delivered == 1)
            status = "PASS" if ok else "FAIL"
        outcome.append(
            {"target": target, "description": text, "ours": ours, "reference": ref,
             "ratio": value, "threshold": threshold, "status": status}
        )  # fmt: skip
    return outcome


def print_targets(outcome: list[dict], delivered: float | None) -> None:
    """The PASS/FAIL block."""
    print("\nTargets (ratio = ours / reference):")
    for check in outcome:
        detail = "not measured" if check["ratio"] is None else f"ratio {times(check['ratio'])}"
        if check["target"] == "f" and delivered is not None:
            detail += f", delivered fraction {delivered:.4f}"
        label = f"({check['target']})"
        print(f"  {label:<5}{check['status']:<6}{check['description']}: {detail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --only is split into servers, scenarios and the in-process run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter durations (a smoke test)")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        default="",
        help=f"some of: {', '.join([*SERVERS, *SCENARIOS])}",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in {*SERVERS, *SCENARIOS}]:
        known = ", ".join([*SERVERS, *SCENARIOS])
        parser.error(f"unknown name(s) {', '.join(unknown)}; known: {known}")
    benches = [n for n in names if n in SCENARIOS] or list(SCENARIOS)
    args.servers = [s for s in SERVERS if s in names] or SERVERS
    args.scenarios = [s for s in benches if s != "inprocess"]
    args.inprocess = "inprocess" in benches
    return args


def collect_errors(results: dict, inprocess: dict) -> list[str]:
    """Every server that did not start and every measurement that crashed, one line each."""
    errors = []
    for server, by_bench in results.items():
        for bench, result in by_bench.items():
            if bench == "error":
                errors.append(f"{server}: {result}")
            elif "error" in result:
                errors.append(f"{server} {bench}: {result['error']}")
            elif result.get("failed"):
                log(f"note: {server} {bench}: {result['failed']} appends failed")
    return errors + ([f"inprocess: {inprocess['error']}"] if "error" in inprocess else [])


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
            results = run_servers(args, database_url, Path(logs))
        inprocess = run_inprocess(args, database_url) if args.inprocess else {}
    except (KeyboardInterrupt, Interrupted):
        log("interrupted: servers stopped")
        return 130
    print_table(results, inprocess)
    targets = check_targets(results, inprocess)
    print_targets(targets, figure(results, "uvicorn", "sse", "delivered_fraction"))
    errors = collect_errors(results, inprocess)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "node": node}
    machine |= {"python": platform.python_version(), "postgres": postgres}
    report = {
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "quick": args.quick,
        "database": urlsplit(database_url).path.lstrip("/"),
        "machine": machine,
        "options": {name: options_for(name, args.quick) for name in SCENARIOS},
        "results": results,
        "inprocess": inprocess,
        "targets": targets,
        "errors": errors,
    }
    out = BENCH / "results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nraw results: {out.relative_to(ROOT)}")
    for error in errors:
        print(f"ERROR {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
