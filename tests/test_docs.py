"""The examples in README.md and docs/*.md run as written.

Every fenced block says what it is with the first word of its info string (```` ```python
title=x.py ```` is Python):

- ```` ```python ````, ```` ```sh ````, ```` ```console ```` and ```` ```js ```` are examples, and
  run, in page order, against a daphne process on the test database (``DS_PUBLIC_STREAMS=1``, as
  ``scripts/demo`` starts it). The only change made to them is the demo's address,
  ``127.0.0.1:8000``, which becomes the test server's.
- ```` ```text ```` (output, diagrams, recorded sessions), ```` ```json ```` (a single JSON value,
  which must parse) and ```` ```nginx ```` are shown, never run.
- An example that cannot run here (a settings fragment, a file of your project, a command that
  starts a server) has ``<!-- not run: <why> -->`` as the last line before its fence. A Python
  one must still compile.

A block without a language, or with another one, fails ``test_every_block_is_run_or_marked``.

How each kind runs (``test_examples_run``, one test per page, the blocks of a page in order, so a
block can build on the ones before it):

- **python**: pasted into one interactive session per page with the host project's settings, as
  into ``python manage.py shell`` (``tests/docs_shell.py``). Comments that are Python literals
  after an expression (``result.up_to_date  # True``) are compared with what the shell shows.
- **sh**: ``bash -e`` in the repository root, with the virtualenv's ``python`` first on ``PATH``
  and curl told to ``--fail-with-body``: every command must succeed.
- **console**: a transcript. Each ``$ `` line is a command (one bash per block); the lines after
  it are its output, and each must be a line of what the command prints to stdout, in any order.
  The page may leave lines out (headers, or where it says ``...``), but a command shown without
  output must print nothing. Values that change from run to run (cursors, stream ids in ETags)
  are not compared.
- **js**: an ES module run by ``node`` (``--experimental-websocket`` before Node 22).

Examples clean up after themselves (they delete what they create), so they run again on the demo.
A failure names the page and the line. The parser and the runners are in ``tests/docs_run.py``.
"""

from __future__ import annotations

import json

import pytest

from tests.docs_run import (
    PAGES,
    RUN,
    SHOWN,
    Block,
    PageRun,
    blocks_of,
    normalized,
    page_env,
    parse,
    transcript,
)
from tests.servers import ServerProcess


def problems_of(block: Block) -> list[str]:
    """What is wrong with how ``block`` is marked (see the module docstring)."""
    if not block.language:
        return [f"{block.where}: a block without a language: say what it is (```text ...)"]
    if block.language not in RUN | SHOWN:
        return [f"{block.where}: unknown language {block.language!r}: use one of {RUN | SHOWN}"]
    if block.language == "python" and block.not_run:
        try:
            compile(block.code, block.where, "exec")
        except SyntaxError as exc:
            return [f"{block.where}: a Python block that is not run must compile: {exc}"]
    if block.language == "json":
        try:
            json.loads(block.code)
        except ValueError as exc:
            return [f"{block.where}: not JSON ({exc}): make it ```text"]
    return []


def test_every_block_is_run_or_marked():
    problems = [
        problem for page in PAGES for block in blocks_of(page) for problem in problems_of(block)
    ]
    assert not problems, "\n".join(problems)


SAMPLE = """\
Text.

```python title="x.py"
x = 1
```

<!-- not run: settings fragment -->
```python
X = {
```

- a list item:

  ```sh
  echo one
  ```

```
no language
```

<!-- not run: a marker far from its block -->

Text between.
````json
{"a": "```"}
````
"""


def test_the_parser_reads_languages_markers_and_indented_fences():
    blocks = parse("sample.md", SAMPLE)
    found = [(b.line, b.language, b.code, b.not_run, b.runs) for b in blocks]
    assert found == [
        (3, "python", "x = 1", None, True),
        (8, "python", "X = {", "settings fragment", False),
        (14, "sh", "echo one", None, True),
        (18, "", "no language", None, False),
        (25, "json", '{"a": "```"}', None, False),
    ]
    problems = [problem for block in blocks for problem in problems_of(block)]
    assert len(problems) == 2
    assert problems[0].startswith("sample.md:8: a Python block that is not run must compile")
    assert problems[1] == "sample.md:18: a block without a language: say what it is (```text ...)"


def test_a_transcript_is_commands_and_their_output():
    code = "$ curl -i x \\\n    -X PUT\nHTTP/1.1 201 Created\n...\n\n$ curl y\n$ curl z\n[]"
    assert transcript(10, code) == [
        (10, "curl -i x \\\n    -X PUT", [(12, "HTTP/1.1 201 Created"), (13, "...")]),
        (15, "curl y", []),
        (16, "curl z", [(17, "[]")]),
    ]
    assert normalized('ETag: "12:0_0:1_1"') == normalized('ETag: "1:0_0:1_1"')
    assert normalized("Stream-Cursor: 1234") == normalized("Stream-Cursor: 99")
    assert normalized("Stream-Next-Offset: 1") != normalized("Stream-Next-Offset: 2")


@pytest.fixture(scope="module")
def docs_server(django_db_setup, django_db_blocker):
    """A daphne process as ``scripts/demo`` runs it (public streams, default long-poll timeout)."""
    with django_db_blocker.unblock():
        server = ServerProcess(
            public=True,
            # the demo's settings: new sessions get the demo agent, which the server runs
            env={"DS_LONG_POLL_TIMEOUT": "20", "DS_DEMO_AGENT": "1", "DS_AGENTS_EMBEDDED": "1"},
        ).start()
    yield server
    server.stop()


RUNNABLE = [page for page in PAGES if any(block.runs for block in blocks_of(page))]


@pytest.mark.django_db(transaction=True)  # without a test that asks, there is no test database
@pytest.mark.parametrize("page", RUNNABLE)
def test_examples_run(page, docs_server, tmp_path):
    run = PageRun(page, docs_server, tmp_path, page_env(tmp_path))
    try:
        for block in blocks_of(page):
            if block.runs:
                failure = run.run(block)
                assert failure is None, failure
    finally:
        run.close()
