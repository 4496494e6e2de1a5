"""Subscription patterns: globs over stream paths, ``*`` for one segment, ``**`` for any number.

A pattern is a stream path whose segments may also be ``*`` (exactly one segment) or ``**``
(zero or more segments); a wildcard is always a whole segment (``events/a*`` is refused, as the
protocol defines no partial wildcards). ``literal_prefix`` is the part before the first
wildcard: the database narrows candidate streams with it before the pattern is matched.
"""

from __future__ import annotations

from functools import lru_cache

from durable_sessions.streams.subscriptions.errors import InvalidRequest

ONE = "*"
ANY = "**"


def parse_pattern(pattern: str, max_length: int) -> tuple[str, ...]:
    """The segments of a valid pattern; ``InvalidRequest`` otherwise."""
    if not pattern or len(pattern) > max_length:
        raise InvalidRequest(f"pattern must have 1 to {max_length} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in pattern):
        raise InvalidRequest("pattern has no control characters")
    segments = tuple(pattern.split("/"))
    for segment in segments:
        if segment in {"", ".", ".."}:
            raise InvalidRequest("pattern has no empty, '.' or '..' segments")
        if "*" in segment and segment not in {ONE, ANY}:
            raise InvalidRequest(f"a wildcard is a whole segment ('*' or '**'), not {segment!r}")
    if segments[0] == "__ds":
        raise InvalidRequest("paths under __ds/ are reserved")
    return segments


@lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("/"))


def matches(pattern: str, path: str) -> bool:
    """Whether stream ``path`` matches ``pattern`` (already validated)."""
    return _match(_segments(pattern), tuple(path.split("/")))


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    # Positions reachable in ``path`` after each pattern segment: no backtracking blow-up.
    reachable = {0}
    for segment in pattern:
        if segment == ANY:
            reachable = set(range(min(reachable), len(path) + 1)) if reachable else set()
        else:
            reachable = {
                i + 1 for i in reachable if i < len(path) and (segment == ONE or path[i] == segment)
            }
        if not reachable:
            return False
    return len(path) in reachable


def literal_prefix(pattern: str) -> str:
    """The text every matching path starts with: the segments before the first wildcard, each
    followed by ``/`` (empty when the pattern starts with one). A pattern without wildcards is
    its own prefix."""
    segments = _segments(pattern)
    literal: list[str] = []
    for segment in segments:
        if segment in {ONE, ANY}:
            return "".join(f"{s}/" for s in literal)
        literal.append(segment)
    return pattern
