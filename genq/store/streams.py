"""A job's output stream, the parts every role shares: the entries of ``genq:job:<id>:stream``
(genq.contract.constants) and how to read them.

Three kinds of entry, written by three places:

- ``start`` (genq.store.jobs's claim script): a worker started the job; ``attempt`` counts the
  starts, so a second ``start`` means the job runs again after its worker died, and its text
  restarts from nothing;
- ``output`` (worker.host.streams): a text delta, ``index`` 0, 1, 2... within one start, and the
  output tokens so far;
- ``end`` (genq.store.jobs's terminal transition): the job reached ``status``; nothing follows.

A reader needs no other source to follow a job: the same stream serves a client that connects
late (read from the beginning) and one that resumes (read after the last entry id it saw).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Start:
    attempt: int


@dataclass(frozen=True)
class Output:
    index: int
    text: str
    output_tokens: int


@dataclass(frozen=True)
class End:
    status: str


Entry = Start | Output | End


def output_fields(index: int, text: str, output_tokens: int) -> dict[str, str | int]:
    """An ``output`` entry as written with XADD (short field names: one per delta)."""
    return {"e": "out", "i": index, "t": text, "n": output_tokens}


def decode(fields: Mapping[str, str]) -> Entry:
    kind = fields["e"]
    if kind == "out":
        return Output(int(fields["i"]), fields["t"], int(fields["n"]))
    if kind == "start":
        return Start(int(fields["a"]))
    if kind == "end":
        return End(fields["s"])
    raise ValueError(f"unknown stream entry {kind!r}")


def partial(entries: Iterable[Mapping[str, str]]) -> tuple[str, int] | None:
    """The text and output tokens of the latest start so far; None if it has no output yet."""
    pieces: list[str] = []
    tokens = 0
    for fields in entries:
        entry = decode(fields)
        if isinstance(entry, Start):
            pieces, tokens = [], 0
        elif isinstance(entry, Output):
            pieces.append(entry.text)
            tokens = entry.output_tokens
    return ("".join(pieces), tokens) if pieces else None
