"""``genq submit``, ``genq get``, ``genq cancel``: the jobs API from a shell, through genq.client.

What they print: the job as JSON where stdout is not a terminal (scripts, pipes: what ``genq
submit`` always printed) or with ``--json``; for a person at a terminal (or with ``--text``) the
job's text, or its id and status while it is not finished. ``--stream`` prints the text as it is
generated, wherever stdout goes (``--json``: each event as a JSON line). While the job waits for
a worker, stderr shows how long (a spinner on a terminal, else one line). Errors go to stderr
with the API's message.

Exit status: 0 the job succeeded (or is accepted / still running, without ``--wait``; for
``cancel``: the cancel was accepted), 1 it failed or was canceled, or the request failed; 130
interrupted (the job goes on).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

from genq.client import Client, CompletedEvent, GenqError, StartEvent
from genq.client.events import Deltas
from genq.contract.schemas import ChatMessage, JobPublic, JobStatus

_SPINNER = "|/-\\"


class Queued:
    """On stderr, while a job waits for a worker: a spinner and the seconds waited where stderr
    is a terminal, else a single line; nothing if the job is not queued. ``stop()`` may be
    called any number of times."""

    def __init__(self, job: JobPublic, err: TextIO | None = None) -> None:
        self.job_id = job.id
        self.err = err or sys.stderr
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if job.status is not JobStatus.QUEUED:
            self._stopped.set()  # nothing to show

    def __enter__(self) -> Queued:
        if self._stopped.is_set():
            pass
        elif not self.err.isatty():
            print(f"genq: job {self.job_id} is queued, waiting for a worker", file=self.err)
        else:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _spin(self) -> None:
        started, frame = time.monotonic(), 0
        while not self._stopped.wait(0.1):
            waited = time.monotonic() - started
            spinner = _SPINNER[frame % len(_SPINNER)]
            self.err.write(f"\r{spinner} job {self.job_id} queued {waited:.0f} s")
            self.err.flush()
            frame += 1

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self.err.write("\r\033[K")  # clear the spinner's line
            self.err.flush()


def _exit_status(job: JobPublic) -> int:
    return 1 if job.status in (JobStatus.FAILED, JobStatus.CANCELED) else 0


def _report_error(job: JobPublic) -> None:
    if job.error is not None:
        message = f"{job.error.type}: {job.error.message}"
        print(f"genq: job {job.id} {job.status.value}: {message}", file=sys.stderr)


def show(job: JobPublic, as_json: bool) -> int:
    """Print the job as the options say; its exit status."""
    if as_json:
        print(job.model_dump_json(indent=2))
    elif not job.status.is_terminal():
        print(f"{job.id} {job.status.value}")
    elif job.output is not None:
        print(job.output.text)
    _report_error(job)
    return _exit_status(job)


def wait_for(client: Client, job: JobPublic) -> JobPublic:
    """The job once finished, with the queued indicator while it waits for a worker."""
    with Queued(job):
        while job.status is JobStatus.QUEUED:
            job = client.get(job.id, wait=1)  # back each second to tell when it starts
    return job if job.status.is_terminal() else client.wait(job.id)


def follow(client: Client, job: JobPublic, as_json: bool) -> int:
    """Print the job's text as it comes (or its events as JSON lines); its exit status."""
    deltas, starts, ends_in_newline, final = Deltas(job.id), 0, True, job
    if not as_json:
        print(f"genq: job {job.id}", file=sys.stderr)  # to get or cancel it meanwhile
    with Queued(job) as queued:
        for event in client.stream_events(job.id):
            queued.stop()
            if as_json:
                print(event.model_dump_json(), flush=True)
            elif text := deltas.take(event):
                sys.stdout.write(text)
                sys.stdout.flush()
                ends_in_newline = text.endswith("\n")
            if isinstance(event, StartEvent):
                starts += 1
                if starts > 1:
                    print(f"\ngenq: job {job.id} runs again (a worker was lost)", file=sys.stderr)
            if isinstance(event, CompletedEvent):
                final = event.job
    if not as_json and not ends_in_newline:
        print()
    _report_error(final)
    return _exit_status(final)


def _as_json(args: argparse.Namespace) -> bool:
    return args.json or (not args.text and not sys.stdout.isatty())


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    sampling: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "model": args.model,
        "raw": args.raw or None,
        "json_schema": _schema(args.json_schema),
        "regex": args.regex,
        "choice": args.choice,
        "n": args.n,
        "logprobs": args.logprobs,
    }
    sampling = {k: v for k, v in sampling.items() if v is not None}
    prompt, messages = args.prompt, None
    if args.system is not None:
        prompt, messages = (
            None,
            [
                ChatMessage(role="system", content=args.system),
                ChatMessage(role="user", content=args.prompt),
            ],
        )
    job = client.submit(prompt, messages=messages, webhook=args.webhook, **sampling)
    return _then(client, job, args)


def _schema(value: str | None) -> Any:
    """``--json-schema``: the schema as JSON, or @ and a file holding it."""
    if value is None:
        return None
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"genq: --json-schema: {exc}") from None


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    return _then(client, client.get(args.id), args)


def _then(client: Client, job: JobPublic, args: argparse.Namespace) -> int:
    """Follow the job's stream, wait for it, or show it as it is: what --stream/--wait ask."""
    if args.stream:
        return follow(client, job, args.json)
    if args.wait:
        job = wait_for(client, job)
    return show(job, _as_json(args))


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    if _as_json(args):
        print(job.model_dump_json(indent=2))
    else:
        state = "canceled" if job.status is JobStatus.CANCELED else "stopping"
        print(f"{job.id} {state}")
    return 0


def run(command: Callable[[Client, argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command with a client; API and network errors as a message and status 1."""
    try:
        with Client(args.url, api_key=args.api_key) as client:
            return command(client, args)
    except GenqError as exc:
        print(f"genq: {exc.message} ({exc.status or 'stream'} {exc.type})", file=sys.stderr)
    except httpx.HTTPError as exc:
        print(f"genq: no answer from {args.url or 'the API'}: {exc!r}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ngenq: interrupted (the job goes on; `genq cancel ID` stops it)", file=sys.stderr)
        return 130
    return 1


def add_commands(sub: Any) -> None:
    """Add ``submit``, ``get`` and ``cancel`` to the ``genq`` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="API base URL (GENQ_URL; default http://127.0.0.1:8000)")
    common.add_argument("--api-key", help="API key (GENQ_API_KEY)")
    form = common.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the job as JSON")
    form.add_argument("--text", action="store_true", help="print the text (piped output too)")
    follow_ = argparse.ArgumentParser(add_help=False)
    how = follow_.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="wait until the job is finished")
    how.add_argument("--stream", action="store_true", help="print the text as it is generated")

    submit = sub.add_parser("submit", parents=[common, follow_], help="submit a prompt as a job")
    submit.add_argument("prompt")
    submit.add_argument("--model", help="one of the models served (default: the default model)")
    submit.add_argument("--max-tokens", type=int)
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--system", help="a system message before the prompt's user turn")
    submit.add_argument(
        "--raw", action="store_true", help="send the prompt as plain text, not as a chat turn"
    )
    shape = submit.add_mutually_exclusive_group()
    shape.add_argument(
        "--json-schema", metavar="SCHEMA", help="answer as JSON following this schema (or @file)"
    )
    shape.add_argument("--regex", help="answer text matching this regular expression")
    shape.add_argument(
        "--choice", action="append", metavar="TEXT", help="answer one of these (repeat it)"
    )
    submit.add_argument("--n", type=int, help="completions of the prompt (default 1)")
    submit.add_argument("--logprobs", type=int, metavar="K", help="top K logprobs per token")
    submit.add_argument("--webhook", metavar="URL", help="POST the job there when it is finished")
    submit.set_defaults(fn=lambda args: run(cmd_submit, args))

    get = sub.add_parser("get", parents=[common, follow_], help="show a job")
    get.add_argument("id")
    get.set_defaults(fn=lambda args: run(cmd_get, args))

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("id")
    cancel.set_defaults(fn=lambda args: run(cmd_cancel, args))
