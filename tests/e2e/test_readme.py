"""Every example in README.md, run against the real stack of tests/e2e/conftest.py (Redis, the API,
the webhooks sender, a worker with the real vLLM CPU engine), and its shown output checked.

How the README writes an example, so that this test finds it:

- A ```bash block is run in one bash process at a terminal (a pty, as a reader would run it: the
  CLI prints text there, not JSON), with ``genq`` and ``jq`` on PATH and ``GENQ_URL`` set. Its
  lines make steps: a run of command lines, then the ``# `` lines right under them, which show
  what those commands print. A ``# `` line at the block's start or after a blank line is prose.
- A ```python block is run as a script. A ``# `` line right under a line that calls ``print(``
  (or under another such line) shows what it prints.
- Shown output is matched in fragments: ``...`` stands for anything, a 32-hex job id or a stream
  entry id (``1796692790985-0``) for any such id, a run of spaces for any whitespace. The
  fragments must appear in the order shown.
- Every step and every script must exit 0 (show a failure with ``cmd || echo "exit status $?"``).
- ``http://127.0.0.1:8000`` is replaced by the test stack's API, and
  ``https://example.com/genq-hook`` by a receiver on loopback that verifies what it gets: a block
  that names it must cause a verified delivery.
- ``<!-- readme-test: skip: REASON -->`` on the line before a block: not run, reported skipped
  with REASON (examples that need Docker or start a stack of their own).
- ``<!-- readme-test: webhook-receiver -->`` before a Python block that defines
  ``receive(body, headers)``: it is handed a real signed delivery (it must return the job), the
  same delivery again (``None``), and a forged one (it must raise).
- Other fences (```text, ```json, a diagram) are not examples; ```sh, ```shell, ```console and
  ```py are refused, so that no shell or Python example goes unrun.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.receivers import Receiver, receiver

pytestmark = pytest.mark.engine

README = Path(__file__).resolve().parents[2] / "README.md"
README_API = "http://127.0.0.1:8000"
README_HOOK = "https://example.com/genq-hook"
RUN = ("bash", "python")
REFUSED = ("sh", "shell", "console", "zsh", "py", "python3", "pycon")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
STEP_END = re.compile(r"@@readme-step (\d+) rc=(\d+)@@")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WILDCARDS = re.compile(r"\b[0-9a-f]{32}\b|\b\d{13}-\d+\b|\s+")
STEP_TIMEOUT_S = 240


@dataclass
class Example:
    lang: str
    line: int  # the opening fence's line in README.md
    heading: str
    code: list[str]
    marker: str | None

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"L{self.line}-{self.lang}-{slug}"


@dataclass
class Step:
    code: list[str]
    shown: list[str] = field(default_factory=list)


def examples(text: str) -> list[Example]:
    """The fenced blocks to run or refuse, in README order."""
    found: list[Example] = []
    lines = text.splitlines()
    heading, i = "top", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = FENCE.match(line)
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        lang = fence.group(1).lower()
        if lang in RUN or lang in REFUSED:
            marker = MARKER.match(lines[i - 1].strip()) if i else None
            found.append(
                Example(lang, i + 1, heading, lines[i + 1 : end], marker and marker.group(1))
            )
        i = end + 1
    return found


def shown_text(line: str) -> str:
    return line.strip()[1:].strip()


def bash_steps(code: list[str]) -> list[Step]:
    """Runs of command lines, each with the ``#`` lines right under it."""
    steps: list[Step] = []
    previous = "blank"  # blank, prose, code or shown
    for line in code:
        stripped = line.strip()
        if not stripped:
            previous = "blank"
        elif stripped.startswith("#"):
            if previous in ("code", "shown"):
                steps[-1].shown.append(shown_text(line))
                previous = "shown"
            else:
                previous = "prose"
        else:
            if previous == "code":
                steps[-1].code.append(line)
            else:
                steps.append(Step([line]))
            previous = "code"
    return steps


def python_shown(code: list[str]) -> list[str]:
    """The ``#`` lines right under a ``print(`` call (or under another such line)."""
    shown: list[str] = []
    after_print = showing = False
    for line in code:
        stripped = line.strip()
        if stripped.startswith("#") and (after_print or showing):
            shown.append(shown_text(line))
            showing = True
            continue
        showing = False
        after_print = "print(" in stripped
    return shown


def fragment(piece: str) -> str:
    out, pos = [], 0
    for match in WILDCARDS.finditer(piece):
        out.append(re.escape(piece[pos : match.start()]))
        token = match.group()
        if token.isspace():
            out.append(r"\s+")
        elif "-" in token:
            out.append(r"\d+-\d+")
        else:
            out.append("[0-9a-f]{32}")
        pos = match.end()
    out.append(re.escape(piece[pos:]))
    return "".join(out)


def pattern(shown: list[str]) -> re.Pattern[str] | None:
    pieces = [p.strip() for line in shown for p in re.split(r"\.\.\.|…", line)]
    regexes = [fragment(p) for p in pieces if p]
    return re.compile(".*?".join(regexes), re.S) if regexes else None


def check_shown(shown: list[str], printed: str, what: str) -> None:
    expected = pattern(shown)
    if expected is not None and not expected.search(printed):
        pytest.fail(
            f"{what}: the README shows\n  "
            + "\n  ".join(shown)
            + f"\nbut it printed\n{printed[-4000:]}",
            pytrace=False,
        )


def run_at_terminal(script: str, env: dict[str, str], cwd: Path) -> str:
    """bash -c SCRIPT with stdin, stdout and stderr on a pty; what it printed, as text."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        ["bash", "-c", script],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + STEP_TIMEOUT_S
    try:
        while True:
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                chunks.append(b"\n[killed: the block ran past its time]\n")
                break
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break  # done, and nothing more to read
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(controller)
        process.wait(10)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return ANSI.sub("", text).replace("\r", "")


def substitute(text: str, stack: Stack, hook: Receiver) -> str:
    return text.replace(README_API, stack.api).replace(README_HOOK, hook.url)


def environment(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GENQ_API_KEY"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GENQ_URL"] = stack.api
    env["GENQ_WEBHOOK_SECRET"] = stack.webhook_secret
    return env


def run_bash(example: Example, stack: Stack, hook: Receiver, tmp_path: Path) -> None:
    steps = bash_steps([substitute(line, stack, hook) for line in example.code])
    script = "\n".join(
        "\n".join(step.code) + f"\nprintf '\\n@@readme-step {n} rc=%d@@\\n' $?"
        for n, step in enumerate(steps)
    )
    printed = run_at_terminal(script, environment(stack), tmp_path)
    outputs, pos = [], 0
    for match in STEP_END.finditer(printed):
        outputs.append((printed[pos : match.start()], int(match.group(2))))
        pos = match.end()
    for n, step in enumerate(steps):
        command = "\n  ".join(step.code)
        if n >= len(outputs):
            pytest.fail(f"README.md:{example.line}: never finished:\n  {command}\n{printed[pos:]}")
        out, status = outputs[n]
        if status != 0:
            pytest.fail(
                f"README.md:{example.line}: exit status {status}:\n  {command}\n{out}",
                pytrace=False,
            )
        check_shown(step.shown, out, f"README.md:{example.line}:\n  {command}\n")


def run_python(example: Example, stack: Stack, hook: Receiver, tmp_path: Path) -> None:
    code = [substitute(line, stack, hook) for line in example.code]
    script = tmp_path / "example.py"
    script.write_text("\n".join(code) + "\n")
    done = subprocess.run(
        [sys.executable, str(script)],
        env=environment(stack),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    printed = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(
            f"README.md:{example.line}: exit status {done.returncode}:\n{printed[-4000:]}",
            pytrace=False,
        )
    check_shown(python_shown(code), done.stdout, f"README.md:{example.line}")


def check_webhook_receiver(example: Example, stack: Stack, monkeypatch) -> None:
    """The README's receiver, handed what genq really sends."""
    monkeypatch.setenv("GENQ_WEBHOOK_SECRET", stack.webhook_secret)
    namespace: dict = {"__name__": "readme_receiver"}
    exec(compile("\n".join(example.code), f"README.md:{example.line}", "exec"), namespace)
    receive = namespace["receive"]
    with receiver(stack.webhook_secret) as rx:
        job = httpx.post(
            f"{stack.api}/v1/jobs",
            json={"prompt": "Say hi.", "max_tokens": 8, "webhook": rx.url},
        ).json()
        (got,) = rx.wait_for(1, timeout_s=120)
    delivered = receive(got.body, got.headers)
    assert delivered is not None and delivered["id"] == job["id"], delivered
    assert delivered["status"] == "succeeded", delivered
    assert receive(got.body, got.headers) is None, "the same delivery twice was not recognised"
    forged = got.body.replace(b'"succeeded"', b'"failed"')
    with pytest.raises(Exception, match="signature"):
        receive(forged, got.headers | {"webhook-id": "msg_forged"})


@pytest.fixture(scope="module")
def hook(stack: Stack) -> Iterator[Receiver]:
    with receiver(stack.webhook_secret) as rx:
        yield rx


EXAMPLES = examples(README.read_text())


def test_the_readme_has_examples() -> None:
    assert sum(e.lang in RUN and e.marker is None for e in EXAMPLES) >= 5, [e.id for e in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_readme_example(
    example: Example, stack: Stack, hook: Receiver, tmp_path: Path, monkeypatch
) -> None:
    if example.lang in REFUSED:
        pytest.fail(
            f"README.md:{example.line}: ```{example.lang} is not run: write ```bash or ```python "
            "(or mark it <!-- readme-test: skip: REASON -->)",
            pytrace=False,
        )
    marker = example.marker or ""
    if marker.startswith("skip:"):
        pytest.skip(f"README.md:{example.line}: {marker.removeprefix('skip:').strip()}")
    if marker == "webhook-receiver":
        check_webhook_receiver(example, stack, monkeypatch)
        return
    if marker:
        pytest.fail(f"README.md:{example.line}: unknown marker {marker!r}", pytrace=False)
    code = "\n".join(example.code)
    if example.lang == "bash" and re.search(r"\bjq\b", code) and shutil.which("jq") is None:
        pytest.skip(f"README.md:{example.line}: jq is not installed")
    delivered_before = len(hook.got)
    if example.lang == "bash":
        run_bash(example, stack, hook, tmp_path)
    else:
        run_python(example, stack, hook, tmp_path)
    if README_HOOK in code:
        got = hook.wait_for(delivered_before + 1, timeout_s=120)[delivered_before:]
        assert all(g.verified for g in got), [g.headers for g in got]
