"""The agent runtime: invoking agents and writing their token streams onto sessions. An agent is
called over HTTP (WIRE.md 4) and answers with a stream of events in one of several dialects; this
layer normalises them to the session's chunk shapes (``dialects.py``), coalesces token deltas
before they are written (``coalesce.py``), and appends them to the session stream through the
public APIs of the layers below."""
