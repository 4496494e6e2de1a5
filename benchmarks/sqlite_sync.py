"""What SQLite's synchronous=FULL costs the log, against NORMAL and against a bare floor.

For each mode it runs, on a fresh SQLite file each time, the in-process benchmark
(``inprocess.py``: N asyncio writers, each awaiting its durable acknowledgement) and the floor:
plain ``sqlite3`` in one thread, nothing of ours, committing the same rows in the same groups
(one commit per message for one writer; N messages per commit for N writers, what a full group
commit holds). Modes alternate, twice, and the machine probe is taken before and after.

    python benchmarks/sqlite_sync.py [--writers 50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import machine_probe  # noqa: E402

MESSAGE = json.dumps({"kind": "token", "text": "lorem ipsum dolor sit amet " * 3}).encode()


def ours(mode: str, writers: int, seconds: float, path: Path) -> float:
    env = {**os.environ, "DS_SQLITE_PATH": str(path), "DS_SQLITE_SYNCHRONOUS": mode}
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [sys.executable, "benchmarks/inprocess.py", "--writers", str(writers), "--seconds",
         str(seconds)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["messages_per_s"]


def floor(mode: str, group: int, seconds: float, path: Path) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={mode}")
    conn.execute(
        "CREATE TABLE entry (stream_id INTEGER, seq INTEGER, data BLOB,"
        " PRIMARY KEY (stream_id, seq))"
    )
    done, seq = 0, 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO entry VALUES (?, ?, ?)", [(n, seq, MESSAGE) for n in range(group)]
        )
        conn.execute("COMMIT")
        seq += 1
        done += group
    conn.close()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    probes = [machine_probe()]
    figures: dict[str, dict[str, list[float]]] = {}
    for _round in range(2):
        for mode in ("FULL", "NORMAL"):
            for writers in (args.writers, 1):
                with tempfile.TemporaryDirectory() as tmp:
                    key = f"{mode} x{writers}"
                    entry = figures.setdefault(key, {"ours": [], "floor": []})
                    entry["ours"].append(ours(mode, writers, args.seconds, Path(tmp) / "o.db"))
                    entry["floor"].append(floor(mode, writers, args.seconds, Path(tmp) / "f.db"))
    probes.append(machine_probe())
    print(f"{'mode':<12} {'ours msg/s':>22} {'floor msg/s':>22} {'ours/floor':>12}")
    for key, entry in figures.items():
        ratios = [o / f for o, f in zip(entry["ours"], entry["floor"], strict=True)]
        print(
            f"{key:<12} {' / '.join(f'{v:,.0f}' for v in entry['ours']):>22}"
            f" {' / '.join(f'{v:,.0f}' for v in entry['floor']):>22}"
            f" {' / '.join(f'{r:.2f}' for r in ratios):>12}"
        )
    for writers in (args.writers, 1):
        full, normal = figures[f"FULL x{writers}"]["ours"], figures[f"NORMAL x{writers}"]["ours"]
        ratios = " / ".join(f"{f / n:.2f}" for f, n in zip(full, normal, strict=True))
        print(f"FULL / NORMAL, ours, x{writers}: {ratios}")
    print(f"machine probe before / after: {probes[0]} / {probes[1]}")


if __name__ == "__main__":
    main()
