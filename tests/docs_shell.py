"""The Python shell of ``tests/test_docs.py``: runs a page's Python blocks as pasted into a shell.

Started as ``python -m tests.docs_shell`` with ``DJANGO_SETTINGS_MODULE=project.settings``: like
``manage.py shell``, it sets up the host project, then keeps one namespace for all the blocks of
one page (``__name__`` is ``"__main__"``, so a script's ``if __name__ == "__main__":`` part
runs). Each block is fed to the interpreter line by line, as pasting it into ``python`` or
``manage.py shell`` would: a top-level ``await``, or a blank line inside an indented block, fails
here as it fails there.

An expression statement's value is shown, as a shell shows it. When a statement has comments
that are Python literals (``result.up_to_date  # True``), the values it shows must equal them, in
order: the docs' "this prints that" comments are checked.

It reads one request per line on stdin, ``{"page": ..., "line": ..., "code": ...}`` (``line``:
the page's line of the block's first line, so tracebacks name the page and its line), and
answers each on the file descriptor named by ``DOCS_SHELL_FD`` with ``{"error": <text or
null>}``. What the blocks print goes to stdout and stderr. A block that runs longer than the
request's ``timeout`` (seconds) ends the shell, after it printed every thread's stack.
"""

from __future__ import annotations

import ast
import builtins
import codeop
import contextlib
import faulthandler
import io
import json
import os
import sys
import tokenize
import traceback
from types import CodeType
from typing import Any


def literal_comments(source: str) -> list[tuple[str, Any]]:
    """The comments of ``source`` that are Python literals, with their values, in order."""
    found = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return found
    for token in tokens:
        if token.type == tokenize.COMMENT:
            text = token.string[1:].strip()
            with contextlib.suppress(ValueError, SyntaxError, TypeError, RecursionError):
                found.append((text, ast.literal_eval(text)))
    return found


class Shell:
    """One interactive session: a namespace, and the values its statements show."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self.shown: list[Any] = []
        sys.displayhook = self._display

    def _display(self, value: Any) -> None:
        if value is None:
            return
        self.shown.append(value)
        builtins._ = value  # type: ignore[attr-defined]
        print(repr(value))

    def run_block(self, page: str, first_line: int, code: str) -> str | None:
        """Paste ``code`` line by line; the first error, as a shell would print it, or None."""
        buffer: list[str] = []
        start = first_line
        for number, text in enumerate([*code.split("\n"), ""], start=first_line):
            if not buffer and not text.strip():
                continue  # an empty prompt
            if not buffer:
                start = number
            buffer.append(text)
            # Blank lines in front give the statement its line numbers on the page.
            source = "\n" * (start - 1) + "\n".join(buffer)
            try:
                compiled = codeop.compile_command(source, page, "single")
            except (SyntaxError, ValueError, OverflowError):
                return "".join(traceback.format_exception_only(*sys.exc_info()[:2]))
            if compiled is None:
                continue  # the statement goes on: the shell's "..." prompt
            error = self._run_statement(compiled, "\n".join(buffer), page, start)
            buffer = []
            if error:
                return error
        return None

    def _run_statement(self, compiled: CodeType, source: str, page: str, line: int) -> str | None:
        self.shown = []
        try:
            exec(compiled, self.namespace)
        except BaseException:  # whatever a block raises is its failure, SystemExit too
            kind, error, trace = sys.exc_info()
            return "".join(traceback.format_exception(kind, error, trace.tb_next))
        expected = literal_comments(source)
        if not expected:
            return None
        if len(self.shown) != len(expected):
            return (
                f"{page}:{line}: the statement showed {len(self.shown)} value(s) "
                f"({', '.join(map(repr, self.shown))}), its comments say "
                f"{len(expected)}: {', '.join(text for text, _ in expected)}"
            )
        for value, (text, wanted) in zip(self.shown, expected, strict=True):
            if value != wanted:
                return f"{page}:{line}: the shell shows {value!r}, the comment says {text}"
        return None


def main() -> None:
    """Set up the host project, then answer requests until stdin ends."""
    import django

    django.setup()
    shell = Shell()
    answers = open(int(os.environ["DOCS_SHELL_FD"]), "w", buffering=1)  # noqa: SIM115
    for request_line in sys.stdin:
        request = json.loads(request_line)
        faulthandler.dump_traceback_later(request["timeout"], exit=True)
        error = shell.run_block(request["page"], request["line"], request["code"])
        faulthandler.cancel_dump_traceback_later()
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps({"error": error}) + "\n")


if __name__ == "__main__":
    main()
