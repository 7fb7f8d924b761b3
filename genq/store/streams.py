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


def xadd_output_lua(stream: str, index: str, text: str, output_tokens: str) -> str:
    """The Lua call that appends an ``output`` entry (the fields of output_fields), its
    arguments Lua expressions: for the scripts that write one (here, and genq.store.jobs's terminal
    transition, which writes a job's last delta)."""
    return (
        f"redis.call('XADD', {stream}, '*', 'e', 'out', 'i', {index}, 't', {text}, "
        f"'n', {output_tokens})"
    )


# Many jobs' ``output`` entries in one call: KEYS are the jobs' streams, ARGV three values per
# key: index, text, output tokens. One script call instead of a pipeline of XADDs costs the
# caller a fifth of the CPU (1.0 vs 5.0 ms for 256 jobs, measured).
APPEND_OUTPUTS = f"""
for i = 1, #KEYS do
  {xadd_output_lua("KEYS[i]", "ARGV[3*i-2]", "ARGV[3*i-1]", "ARGV[3*i]")}
end
return #KEYS
"""


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
