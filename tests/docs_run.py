"""Reading the fenced blocks of README.md and docs/*.md, and running them (``test_docs.py``).

``parse()`` finds the blocks and their markers; ``PageRun`` runs the blocks of one page in order
against a test server, each kind its own way (see ``tests/test_docs.py``), and describes a
failure with the page and the line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ROOT, ServerProcess, database_env

PAGES = ["README.md", *sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md"))]
RUN = {"python", "sh", "console", "js"}
SHOWN = {"text", "json", "nginx"}
NOT_RUN = re.compile(r"^<!-- not run: (?P<why>.*\S.*) -->$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
DEMO = "127.0.0.1:8000"
BLOCK_TIMEOUT = 60.0
# Parts of a response that differ between runs, and what the comparison puts in their place.
VARYING = [
    (re.compile(r"(?i)(Stream-Cursor: )\d+"), r"\1<cursor>"),
    (re.compile(r'("streamCursor":\s*")\d+'), r"\1<cursor>"),
    (re.compile(r'(?i)(ETag: "(?:W/)?)\d+:'), r"\1<id>:"),
]


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    line: int  # the line of the opening fence, counted from 1
    language: str
    code: str
    not_run: str | None  # the reason of a <!-- not run: ... --> marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN and self.not_run is None


def blocks_of(page: str) -> list[Block]:
    """The fenced blocks of ``page`` (a path relative to the repository root)."""
    return parse(page, (ROOT / page).read_text())


def parse(page: str, text: str) -> list[Block]:
    """The fenced blocks of ``text``, the Markdown of ``page``."""
    lines = text.split("\n")
    blocks = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])  # indented: in a list item
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and not lines[end].strip().strip(fence[0])
        ):
            end += 1
        before = next((text for text in reversed(lines[:index]) if text.strip()), "")
        marker = NOT_RUN.match(before.strip())
        words = opening["info"].split()
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                language=words[0] if words else "",
                code="\n".join(text[indent:] for text in lines[index + 1 : end]),
                not_run=marker["why"] if marker else None,
            )
        )
        index = end + 1
    return blocks


class PageRun:
    """Runs the blocks of one page in order, sharing one Python session between them."""

    def __init__(self, page: str, server: ServerProcess, workdir: Path, env: dict[str, str]):
        self.page = page
        self.address = f"127.0.0.1:{server.port}"
        self.workdir = workdir
        self.env = env
        self.shell: subprocess.Popen | None = None

    def close(self) -> None:
        """End the Python session: it commits what it queued, as a shell does when it exits."""
        if self.shell is None:
            return
        with contextlib.suppress(BrokenPipeError):
            self.shell.stdin.close()
        try:
            self.shell.wait(BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.shell.kill()
            self.shell.wait()
        self.answers.close()

    def run(self, block: Block) -> str | None:
        """Run ``block``; a description of its failure, or None."""
        code = block.code.replace(DEMO, self.address)
        runner = {
            "python": self.python,
            "sh": self.sh,
            "console": self.console,
            "js": self.js,
        }[block.language]
        return runner(block, code)

    def padded(self, block: Block, code: str, suffix: str, first: str = "") -> Path:
        """``code`` in a file whose line numbers are the page's (for error messages), after
        ``first`` (one line)."""
        path = self.workdir / f"{Path(self.page).name}{suffix}"
        path.write_text(first + "\n" * block.line + code + "\n")
        return path

    def sh(self, block: Block, code: str) -> str | None:
        trap = f"trap 'echo \"{self.page}:$LINENO: $BASH_COMMAND failed\" >&2' ERR"
        script = self.padded(block, code, ".sh", first=trap)
        env = {**self.env, "CURL_HOME": str(self.workdir / "curl-fail")}
        return failure(block, run_process(["bash", "-e", str(script)], env))

    def js(self, block: Block, code: str) -> str | None:
        script = self.padded(block, code, ".mjs")
        return failure(block, run_process(["node", *node_flags(), str(script)], self.env))

    def console(self, block: Block, code: str) -> str | None:
        commands = transcript(block.line + 1, code)
        script = "".join(
            f"printf '\\n@@docs-command-{i}@@\\n'\n{command}\n"
            for i, (_, command, _) in enumerate(commands)
        )
        done = run_process(["bash", "-c", script], self.env)
        if done.status is None:
            return failure(block, done)
        outputs = re.split(r"\n@@docs-command-\d+@@\n", "\n" + done.stdout)[1:]
        for (line, command, expected), output in zip(commands, outputs, strict=True):
            printed = {normalized(text) for text in output.replace("\r", "").split("\n")}
            printed.discard("")
            shown = [(number, text) for number, text in expected if text.strip() != "..."]
            if not expected and printed:
                return (
                    f"{self.page}:{line}: `{command}` printed, and the page shows no output:\n"
                    f"{output}{done.stderr}"
                )
            for number, text in shown:
                if normalized(text) not in printed:
                    return (
                        f"{self.page}:{number}: `{command}` did not print {text!r}; it printed:\n"
                        f"{output}{done.stderr}"
                    )
        return None

    def python(self, block: Block, code: str) -> str | None:
        if self.shell is None:
            self.start_shell()
        start = self.log.stat().st_size
        request = {"page": self.page, "line": block.line + 1, "code": code}
        self.shell.stdin.write(json.dumps({**request, "timeout": BLOCK_TIMEOUT}) + "\n")
        self.shell.stdin.flush()
        # The shell gives up on a block itself after BLOCK_TIMEOUT: this is a backstop.
        ready, _, _ = select.select([self.answers], [], [], BLOCK_TIMEOUT + 30)
        answer = self.answers.readline() if ready else ""
        if not answer:
            self.shell.kill()
            self.shell.wait()
            problem = "did not answer" if not ready else f"exited ({self.shell.returncode})"
            return f"python block at {block.where}: the shell {problem}\n{self.output(start)}"
        error = json.loads(answer)["error"]
        return f"python block at {block.where}:\n{error}\n{self.output(start)}" if error else None

    def start_shell(self) -> None:
        """Start the page's Python session (``tests/docs_shell.py``)."""
        self.log = self.workdir / "python.log"
        answers, theirs = os.pipe()
        with self.log.open("a") as log:
            self.shell = subprocess.Popen(
                [sys.executable, "-m", "tests.docs_shell"],
                cwd=ROOT,
                env={**self.env, "DOCS_SHELL_FD": str(theirs)},
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                pass_fds=(theirs,),
            )
        os.close(theirs)
        self.answers = os.fdopen(answers)

    def output(self, start: int) -> str:
        """What the Python session printed since ``start``."""
        return self.log.read_bytes()[start:].decode(errors="replace")


@dataclass(frozen=True)
class Outcome:
    """How a block's process ended."""

    status: int | None  # None: it did not end within BLOCK_TIMEOUT
    stdout: str
    stderr: str


def run_process(command: list[str], env: dict[str, str]) -> Outcome:
    """Run ``command`` in a process group of its own, and end whatever it leaves running."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # Files, not pipes: a job left in the background would hold a pipe open.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            status = process.wait(BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.seek(0)
        err.seek(0)
        return Outcome(status, out.read(), err.read())


def failure(block: Block, done: Outcome) -> str | None:
    """What went wrong with ``block``'s process, or None when it ended with status 0."""
    if done.status is None:
        problem = f"did not end in {BLOCK_TIMEOUT:.0f} s"
    elif done.status:
        problem = f"exit status {done.status}"
    else:
        return None
    return f"{block.language} block at {block.where}: {problem}\n{done.stdout}{done.stderr}"


def transcript(first_line: int, code: str) -> list[tuple[int, str, list[tuple[int, str]]]]:
    """The commands of a console block: (line, command, [(line, expected output line)])."""
    commands: list[tuple[int, str, list[tuple[int, str]]]] = []
    continued = False
    for number, text in enumerate(code.split("\n"), start=first_line):
        if continued:
            line, command, expected = commands[-1]
            commands[-1] = (line, f"{command}\n{text}", expected)
        elif text.startswith("$ "):
            commands.append((number, text[2:], []))
        elif commands and text.strip():
            commands[-1][2].append((number, text.rstrip()))
        continued = text.endswith("\\") and (text.startswith("$ ") or continued)
    return commands


def normalized(text: str) -> str:
    text = text.rstrip()
    for pattern, replacement in VARYING:
        text = pattern.sub(replacement, text)
    return text


def node_flags() -> list[str]:
    """Node 20 has its browser-compatible ``WebSocket`` behind a flag; 22 and later do not."""
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    return ["--experimental-websocket"] if major < 22 else []


def page_env(workdir: Path) -> dict[str, str]:
    """The environment of the examples: the host project on the test database."""
    # What a terminal shows: no progress meter, but errors. A failed request fails an `sh` block.
    for name, options in [("curl", ""), ("curl-fail", "fail-with-body\n")]:
        (workdir / name).mkdir()
        (workdir / name / ".curlrc").write_text(f"silent\nshow-error\n{options}")
    env = {**os.environ, **database_env(), "DJANGO_SETTINGS_MODULE": "project.settings"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CURL_HOME"] = str(workdir / "curl")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
