"""Side-by-side benchmarks: our server and the reference Durable Streams server, one command.

The same client workload (``benchmarks/load.mjs``) runs against six servers, one at a time: ours
under uvicorn (the recommended configuration) and under daphne, the reference server
(@durable-streams/server) in memory and file-backed, and the floor (``benchmarks/floor.py``, a
bare ASGI app that only does the websocket fan-out's framing and writes) under uvicorn and under
daphne. The websocket benchmarks (``ws-*``) run against ours only (the reference has no
websocket endpoint), and ``ws-fanout`` against the floors too. Then ``benchmarks/inprocess.py``
measures our in-process API on the same database. Prints every figure with its ratio to the
reference of the same run, checks the targets (PASS/FAIL; ``benchmarks/summary.py``), writes
``benchmarks/results/<UTC time>.json``.

    python benchmarks/run.py            # from the repository root, virtualenv active (minutes)
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
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from summary import FLOORS, OURS, SERVERS, check_targets, print_table, print_targets

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ds_bench"
TIMEOUT = 240  # seconds one client run may take before it counts as an error

# name -> (load.mjs scenario, or inprocess.py; options of the full run)
SCENARIOS: dict[str, tuple[str, dict]] = {
    "appends-distinct": ("appends", {"producers": 16, "seconds": 10, "warmup": 1}),
    "appends-same": ("appends", {"producers": 16, "seconds": 10, "warmup": 1, "sameStream": True}),
    "appends-batch": ("appends", {"producers": 16, "seconds": 10, "warmup": 1, "batch": 50}),
    "long-poll": ("long-poll", {"rounds": 200}),
    "sse": ("sse-fanout", {"subscribers": 200, "rate": 50, "seconds": 10}),
    "catch-up": ("catch-up", {"messages": 5000, "readers": 4, "seconds": 5}),
    "ws-fanout": ("ws-fanout", {"subscribers": 1000, "rate": 50, "seconds": 10, "concurrency": 50}),
    "ws-appends": ("ws-appends", {"connections": 16, "inFlight": 32, "seconds": 10, "warmup": 1}),
    "ws-idle-memory": ("ws-idle", {"subscribers": 2000, "warmupSockets": 100, "concurrency": 50}),
    "inprocess": ("inprocess.py", {"writers": 50, "seconds": 5}),
}
QUICK = {"seconds": 2, "warmup": 0.5, "rounds": 50}  # --quick overrides, where they apply
OURS_ONLY = {"ws-fanout", "ws-appends", "ws-idle-memory"}  # the reference has no websockets
FLOOR_ONLY = {"ws-fanout"}  # what the floor (benchmarks/floor.py) can serve
FRESH = "ws-idle-memory"  # measured on a server process of its own, started for it
NOTES = {  # figures worth a note on stderr when they are not 0
    "failed": "appends failed",
    "lost": "appends unanswered when the server closed the socket",
    "closed_early": "sockets the server closed",
    "error_frames": "error frames",
}


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
    if name in FLOORS.values():
        app = "benchmarks.floor:app"  # both servers import from their working directory, ROOT
    if name in ("uvicorn", FLOORS["uvicorn"]):
        # As docs/deployment.md recommends (no permessage-deflate: ~64 KB per idle socket).
        flags = ["--no-access-log", "--log-level", "warning", "--ws-per-message-deflate", "false"]
        return [str(bindir / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), *flags, app]
    if name in ("daphne", FLOORS["daphne"]):  # -v 0: no access log, like uvicorn above
        return [str(bindir / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), app]
    extra = [data_dir] if name == "ref-file" else []
    return ["node", str(BENCH / "reference-server.mjs"), str(port), *extra]


@contextlib.contextmanager
def running_server(name: str, database_url: str, logs: Path):
    """Start server ``name``; once it listens, yield its base URL and its process (the one
    holding the sockets: uvicorn and daphne serve in the process started); stop it after."""
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="ds-bench-ref-") as data_dir,
        (logs / f"{name}.log").open("a") as log_file,
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
            yield f"http://127.0.0.1:{port}", proc
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
    if not (BENCH / "node_modules" / "ws").exists():
        log("npm ci in benchmarks/")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    return settings


def run_servers(args: argparse.Namespace, database_url: str, logs: Path) -> dict[str, dict]:
    """Run every selected scenario on every selected server, one server at a time; the idle
    websocket memory on a fresh process of ours, after the others."""
    results: dict[str, dict] = {}
    for server in args.servers:
        results[server] = {}
        log(f"== {server}")
        if server in FLOORS.values():
            names = [n for n in args.scenarios if n in FLOOR_ONLY]
        else:
            names = [n for n in args.scenarios if server in OURS or n not in OURS_ONLY]
        for group in ([n for n in names if n != FRESH], [n for n in names if n == FRESH]):
            if not group:
                continue
            try:
                with running_server(server, database_url, logs) as (base_url, proc):
                    for name in group:
                        results[server][name] = run_scenario(name, args.quick, base_url, proc)
            except RuntimeError as exc:  # the server did not start
                tail = (logs / f"{server}.log").read_text()[-1000:]
                results[server]["error"] = str(exc)
                log(f"   ERROR {exc}\n{tail}")
            time.sleep(1)  # let sockets and the database settle between servers
    return results


def run_scenario(name: str, quick: bool, base_url: str, proc: subprocess.Popen) -> dict:
    """One load.mjs scenario against the server at ``base_url`` (process ``proc``)."""
    options = options_for(name, quick)
    log(f"   {name} {json.dumps(options)}")
    command = ["node", "load.mjs", SCENARIOS[name][0], base_url, json.dumps(options)]
    cpu, started = cpu_seconds(proc.pid), time.monotonic()
    if name == "ws-idle-memory":
        result = attempt(idle_memory, command, proc.pid, urlsplit(base_url).port)
    else:
        result = attempt(run_json, command, BENCH)
    # The server process's CPU over the whole client run (set-up included), in cores: a hint of
    # which side was saturated. Not the whole server for ref-file's fsyncs or Postgres.
    after = cpu_seconds(proc.pid)
    if cpu is not None and after is not None:
        result["server_cpu_cores"] = (after - cpu) / (time.monotonic() - started)
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (/proc/<pid>/stat), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # the server is gone
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS in /proc/<pid>/status), in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def connections(pid: int, port: int) -> int:
    """How many established TCP connections on local ``port`` process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()  # sl local remote state ... inode (the 10th)
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                count += local_port == port and fields[3] == "01" and fields[9] in inodes
    return count


def idle_memory(command: list[str], pid: int, port: int) -> dict:
    """Drive ``load.mjs ws-idle``: the server's RSS after the client's warm-up and with every
    idle subscriber open (the client prints a phase line and waits for a line on stdin)."""
    client = subprocess.Popen(
        command, cwd=BENCH, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(TIMEOUT, client.kill)
    watchdog.start()
    samples: dict[str, tuple[int, int]] = {}
    try:
        for phase in ("warm", "open"):
            line = client.stdout.readline()
            if not line.startswith("{") or json.loads(line).get("phase") != phase:
                break  # the client failed: its error is on stderr
            samples[phase] = rss_kb(pid), connections(pid, port)
            client.stdin.write("next\n")
            client.stdin.flush()
        out, err = client.communicate(timeout=TIMEOUT)
    finally:
        watchdog.cancel()
        if client.poll() is None:
            client.kill()
    if client.returncode != 0 or len(samples) < 2:
        raise RuntimeError(f"load.mjs ws-idle exited {client.returncode}: {err.strip()[-600:]}")
    result = json.loads(out.strip().splitlines()[-1])
    (before, sockets_before), (after, sockets_after) = samples["warm"], samples["open"]
    count = result["subscribers"]
    if sockets_after < count:  # the warm-up's sockets may still be closing at "before"
        raise RuntimeError(
            f"process {pid} holds {sockets_after} connections on port {port}, not {count}: "
            f"not the server, or it closed some ({result.get('closed_early')} closed early)"
        )
    return result | {
        "rss_before_kb": before,
        "rss_after_kb": after,
        "sockets_before": sockets_before,
        "sockets_after": sockets_after,
        "kb_per_subscriber": (after - before) / count,
    }


def run_inprocess(args: argparse.Namespace, database_url: str) -> dict:
    """Run benchmarks/inprocess.py on the benchmark database (no server is running)."""
    options = options_for("inprocess", args.quick)
    log(f"== in-process {json.dumps(options)}")
    command = [sys.executable, "benchmarks/inprocess.py"]
    command += [f"--{key}={value}" for key, value in options.items()]
    return attempt(run_json, command, ROOT, server_env(database_url))


def attempt(measure, *args) -> dict:
    """``measure(*args)``, with a crash or a timeout turned into ``{"error": ...}``."""
    try:
        return measure(*args)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as exc:
        log(f"   ERROR {exc}")
        return {"error": str(exc)}


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
            else:
                for key, what in NOTES.items():
                    if result.get(key):
                        log(f"note: {server} {bench}: {what}: {result[key]}")
    return errors + ([f"inprocess: {inprocess['error']}"] if "error" in inprocess else [])


def on_sigterm(signum, frame) -> None:
    """Turn SIGTERM into an exception so that the running server is stopped."""
    raise Interrupted


def machine_probe() -> dict[str, float]:
    """How fast this shared machine is at the moment, to compare runs by (seconds, lower is
    faster): ``cpu``, a pure-Python loop of 10 million additions; ``syscalls``, 100,000
    one-byte send/recv pairs over a local socket pair (the kernel's share of serving)."""
    started, total = time.perf_counter(), 0
    for i in range(10_000_000):
        total += i
    cpu = time.perf_counter() - started
    left, right = socket.socketpair()
    with left, right:
        started = time.perf_counter()
        for _ in range(100_000):
            left.send(b"x")
            right.recv(1)
        syscalls = time.perf_counter() - started
    return {"cpu": round(cpu, 3), "syscalls": round(syscalls, 3)}


def main(argv: list[str] | None = None) -> int:
    """Prepare, run, report, save. Returns the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    started = dt.datetime.now(dt.UTC)
    probes = [machine_probe()]
    try:
        postgres = prepare(database_url)
        with tempfile.TemporaryDirectory(prefix="ds-bench-logs-") as logs:
            results = run_servers(args, database_url, Path(logs))
        inprocess = run_inprocess(args, database_url) if args.inprocess else {}
    except (KeyboardInterrupt, Interrupted):
        log("interrupted: servers stopped")
        return 130
    probes.append(machine_probe())
    print_table(results, inprocess)
    targets = check_targets(results, inprocess)
    print_targets(targets)
    errors = collect_errors(results, inprocess)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "node": node}
    machine |= {"python": platform.python_version(), "postgres": postgres}
    machine["probe_s"] = probes  # before and after the run
    before, after = probes
    print(
        f"\nmachine probe, before / after the run: cpu {before['cpu']} / {after['cpu']} s, "
        f"syscalls {before['syscalls']} / {after['syscalls']} s"
    )
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
