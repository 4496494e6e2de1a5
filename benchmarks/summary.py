"""The report of ``benchmarks/run.py``: the table of figures and the targets (PASS/FAIL).

``results`` is ``{server: {benchmark: {figure: value}}}`` as run.py collects it; ``inprocess``
the figures of ``benchmarks/inprocess.py``.
"""

from __future__ import annotations

SERVERS = ["uvicorn", "daphne", "ref-memory", "ref-file", "floor", "floor-daphne"]
OURS = ["uvicorn", "daphne"]
MEM, FILE = "ref-memory", "ref-file"
FLOORS = {"uvicorn": "floor", "daphne": "floor-daphne"}  # ours -> the floor under its server
SAME_FLOOR = "the floor under the same ASGI server"  # a ROWS spec: FLOORS[ours]
SHORT = {MEM: "mem", FILE: "file", **{floor: "floor" for floor in FLOORS.values()}}

INPROCESS_TARGET = 20_000  # messages/s, target (c)
WS_FANOUT_P99_MS = 100.0  # target (h): p99 below this, every message delivered once
WS_APPENDS_RATIO = 3.0  # target (i): websocket appends/s over the file-backed ref's HTTP appends/s
WS_IDLE_KB = 50.0  # target (j): resident memory per idle websocket subscriber, below this

# What the figures of ours in a row are divided by: a reference server's figure of the same
# benchmark (its name; SAME_FLOOR: the floor under the same ASGI server as ours), another
# benchmark's figure (server, benchmark, figure, label), or a fixed target (number, label).
HTTP_APPENDS = (FILE, "appends-distinct", "requests_per_s", "file HTTP")
ROWS = [  # (label, benchmark, figure, unit, what ours are divided by)
    ("appends x16, distinct streams", "appends-distinct", "requests_per_s", "req/s", [FILE]),
    ("appends x16, one stream", "appends-same", "requests_per_s", "req/s", [FILE]),
    ("appends x16, 50-message arrays", "appends-batch", "messages_per_s", "msg/s", [FILE]),
    ("append -> long-poll p50", "long-poll", "p50_ms", "ms", [MEM, FILE]),
    ("append -> long-poll p99", "long-poll", "p99_ms", "ms", [MEM, FILE]),
    ("SSE fan-out x200 p50", "sse", "p50_ms", "ms", [MEM, FILE]),
    ("SSE fan-out x200 p99", "sse", "p99_ms", "ms", [MEM, FILE]),
    ("SSE fan-out x200 delivered", "sse", "delivered_fraction", "frac", [MEM, FILE]),
    ("catch-up, 5,000-message stream", "catch-up", "messages_per_s", "msg/s", [MEM, FILE]),
    ("WS fan-out x1000 p50", "ws-fanout", "p50_ms", "ms", [SAME_FLOOR]),
    ("WS fan-out x1000 p99", "ws-fanout", "p99_ms", "ms",
     [(WS_FANOUT_P99_MS, "target"), SAME_FLOOR]),
    ("WS fan-out x1000 delivered", "ws-fanout", "delivered_fraction", "frac", []),
    ("WS fan-out x1000 duplicates", "ws-fanout", "duplicates", "msgs", []),
    ("WS appends x16, 32 in flight", "ws-appends", "acks_per_s", "acks/s", [HTTP_APPENDS]),
    ("WS idle memory / subscriber", "ws-idle-memory", "kb_per_subscriber", "KB",
     [(WS_IDLE_KB, "target")]),
]  # fmt: skip


def figure(results: dict, server: str, bench: str, key: str) -> float | None:
    """One figure from the results, or None if it was not measured or failed."""
    value = results.get(server, {}).get(bench, {}).get(key)
    return value if isinstance(value, int | float) else None


def fmt(value: float | None, unit: str) -> str:
    """A figure for the table."""
    if value is None:
        return "-"
    return {"ms": f"{value:.2f}", "frac": f"{value:.4f}", "KB": f"{value:.1f}"}.get(
        unit, f"{value:,.0f}"
    )


def ratio(ours: float | None, ref: float | None) -> float | None:
    """ours / reference, or None when either is missing."""
    return ours / ref if ours is not None and ref else None


def times(value: float) -> str:
    """A ratio for display: two decimals, or two significant digits when it is below 0.1."""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def baseline(
    results: dict, spec: str | tuple, bench: str, key: str, ours: str
) -> tuple[float | None, str]:
    """The figure a row's figure of ``ours`` is divided by, and its short label (see ROWS)."""
    if spec == SAME_FLOOR:
        spec = FLOORS[ours]
    if isinstance(spec, str):
        return figure(results, spec, bench, key), SHORT[spec]
    if len(spec) == 2:
        return spec
    server, other, other_key, label = spec
    return figure(results, server, other, other_key), label


def print_table(results: dict, inprocess: dict) -> None:
    """The figures of every server, and each of ours over the reference(s) of its row."""
    print("\nRatios read ours / reference: above 1 is better for a throughput, below 1 is better")
    print("for a latency or memory (mem = reference in memory, file = reference file-backed,")
    print("file HTTP = file-backed reference's appends x16 distinct streams, target = the row's")
    targets = f"{WS_FANOUT_P99_MS:.0f} ms, {WS_IDLE_KB:.0f} KB"
    print(f"fixed target: {targets}; floor = a bare ASGI app that only frames and writes the")
    print("fan-out, benchmarks/floor.py, under the same server as ours: floor under uvicorn,")
    print("floor-daphne under daphne). WS rows: ours and the floors.\n")
    columns = "".join(f"{name:>13}" for name in SERVERS)
    head = f"{'benchmark':<32}{'unit':>7}{columns}   {'uvicorn / ref':<27}daphne / ref"
    print(head)
    print("-" * len(head))
    for label, bench, key, unit, refs in ROWS:
        values = [figure(results, server, bench, key) for server in SERVERS]
        if all(v is None for v in values):
            continue
        ratios = []
        for ours in OURS:
            mine = figure(results, ours, bench, key)
            pairs = [baseline(results, spec, bench, key, ours) for spec in refs]
            cells = [(ratio(mine, ref), name) for ref, name in pairs]
            ratios.append(", ".join(f"{times(r)} {name}" for r, name in cells if r) or "-")
        cells = "".join(f"{fmt(v, unit):>13}" for v in values)
        print(f"{label:<32}{unit:>7}{cells}   {ratios[0]:<26} {ratios[1]}".rstrip())
    if "messages_per_s" in inprocess:
        value = inprocess["messages_per_s"]
        print(
            f"\nin-process API, {inprocess['writers']} writers: {value:,.0f} msg/s, "
            f"{times(value / INPROCESS_TARGET)} the {INPROCESS_TARGET:,} msg/s target "
            "(the reference server has no in-process API)"
        )


def check(target, text, ours, reference, op, threshold, delivered=None, note="") -> dict:
    """One target: ours / reference compared (``op``) with ``threshold``; SKIP when a figure
    is missing. ``delivered`` False (not every message delivered exactly once) makes it FAIL."""
    value = ratio(ours, reference)
    if value is None:
        status = "SKIP"
    else:
        ok = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
        status = "PASS" if ok and delivered is not False else "FAIL"
    return {"target": target, "description": text, "ours": ours, "reference": reference,
            "ratio": value, "threshold": threshold, "status": status, "note": note}  # fmt: skip


def check_targets(results: dict, inprocess: dict) -> list[dict]:
    """Targets (a)-(j); a starred one reports daphne against uvicorn's target."""

    def get(server: str, bench: str, key: str) -> float | None:
        return figure(results, server, bench, key)

    def delivery(server: str, bench: str) -> tuple[bool | None, str]:
        """Whether every message reached every subscriber exactly once, and a note saying so."""
        fraction = get(server, bench, "delivered_fraction")
        duplicates = get(server, bench, "duplicates")
        if fraction is None:
            return None, ""
        note = f"delivered fraction {fraction:.4f}"
        if duplicates is not None:
            note += f", {duplicates:.0f} duplicates"
        return fraction == 1 and not duplicates, note

    appends_ref = get(FILE, "appends-distinct", "requests_per_s")
    sse_delivered, sse_note = delivery("uvicorn", "sse")
    sse_p99 = get("uvicorn", "sse", "p99_ms")
    checks = [
        check("a", "appends/s x16 distinct streams, uvicorn >= 1.5x file-backed ref",
              get("uvicorn", "appends-distinct", "requests_per_s"), appends_ref, ">=", 1.5),
        check("a*", "(reported) the same with daphne >= 1.5x file-backed ref",
              get("daphne", "appends-distinct", "requests_per_s"), appends_ref, ">=", 1.5),
        check("b", "messages/s with 50-message arrays, uvicorn >= file-backed ref",
              get("uvicorn", "appends-batch", "messages_per_s"),
              get(FILE, "appends-batch", "messages_per_s"), ">=", 1.0),
        check("c", f"in-process API >= {INPROCESS_TARGET:,} messages/s",
              inprocess.get("messages_per_s"), INPROCESS_TARGET, ">=", 1.0),
        check("d", "catch-up messages/s, uvicorn >= in-memory ref",
              get("uvicorn", "catch-up", "messages_per_s"),
              get(MEM, "catch-up", "messages_per_s"), ">=", 1.0),
        check("e", "long-poll p50, uvicorn <= 3x in-memory ref p50",
              get("uvicorn", "long-poll", "p50_ms"), get(MEM, "long-poll", "p50_ms"), "<=", 3.0),
        check("f", "SSE fan-out p99, uvicorn <= file-backed ref p99, all delivered",
              sse_p99, get(FILE, "sse", "p99_ms"), "<=", 1.0, sse_delivered, sse_note),
        check("g", "SSE fan-out p99, uvicorn <= in-memory ref p99, all delivered",
              sse_p99, get(MEM, "sse", "p99_ms"), "<=", 1.0, sse_delivered, sse_note),
    ]  # fmt: skip
    for server, star in (("uvicorn", ""), ("daphne", "*")):
        said = f"(reported) {server}: " if star else f"{server}: "
        p99 = get(server, "ws-fanout", "p99_ms")
        delivered, note = delivery(server, "ws-fanout")
        acks = get(server, "ws-appends", "acks_per_s")
        kb = get(server, "ws-idle-memory", "kb_per_subscriber")
        checks += [
            check(f"h{star}", f"{said}WS fan-out x1000 p99 < {WS_FANOUT_P99_MS:.0f} ms, "
                  "every message delivered exactly once", p99, WS_FANOUT_P99_MS, "<", 1.0,
                  delivered, f"p99 {p99:.2f} ms, {note}" if p99 is not None else note),
            check(f"i{star}", f"{said}WS appends/s >= {WS_APPENDS_RATIO:.0f}x file-backed ref "
                  "HTTP appends/s", acks, appends_ref, ">=", WS_APPENDS_RATIO),
            check(f"j{star}", f"{said}resident memory per idle WS subscriber < "
                  f"{WS_IDLE_KB:.0f} KB", kb, WS_IDLE_KB, "<", 1.0, None,
                  f"{kb:.1f} KB" if kb is not None else ""),
        ]  # fmt: skip
    order = "abcdefghij"  # uvicorn's targets first, each followed by daphne's report
    return sorted(checks, key=lambda c: (order.index(c["target"][0]), c["target"]))


def print_targets(outcome: list[dict]) -> None:
    """The PASS/FAIL block."""
    print("\nTargets (ratio = ours / reference, or ours / the fixed target):")
    for item in outcome:
        detail = "not measured" if item["ratio"] is None else f"ratio {times(item['ratio'])}"
        if item["note"] and item["ratio"] is not None:
            detail += f", {item['note']}"
        label = f"({item['target']})"
        print(f"  {label:<5}{item['status']:<6}{item['description']}: {detail}")
