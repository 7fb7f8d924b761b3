"""A job's output stream, the parts every role shares: the entries of ``genq:job:<id>:stream``
(genq.contract.constants) and how to read them.

Three kinds of entry, written by three places:

- ``start`` (genq.store.jobs's claim script): a worker started the job; ``attempt`` counts the
  starts, so a second ``start`` means the job runs again after its worker died. Its text restarts
  from nothing, unless ``resumed_at`` says how many output tokens the new run keeps: it goes on
  from the text already in the stream (worker.host.runner), its deltas' indexes carrying on;
- ``output`` (worker.host.streams): a text delta, ``index`` 0, 1, 2... within one run, the
  output tokens so far, and the delta's token ids (what a resumed run continues from);
- ``end`` (genq.store.jobs's terminal transition): the job reached ``status``; nothing follows.

A reader needs no other source to follow a job: the same stream serves a client that connects
late (read from the beginning) and one that resumes (read after the last entry id it saw).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Start:
    attempt: int
    resumed_at: int = 0  # output tokens kept from the run before (0: from nothing)


@dataclass(frozen=True)
class Output:
    index: int
    text: str
    output_tokens: int
    # The delta's token ids as written, space-separated (none in a run's last delta): parsed only
    # where a run goes on from them (token_ids), not for every reader of the stream.
    ids: str = ""

    @property
    def token_ids(self) -> list[int]:
        return [int(t) for t in self.ids.split()]


@dataclass(frozen=True)
class End:
    status: str


Entry = Start | Output | End


def encode_token_ids(token_ids: Iterable[int]) -> str:
    return " ".join(map(str, token_ids))


def output_fields(
    index: int, text: str, output_tokens: int, token_ids: Iterable[int] = ()
) -> dict[str, str | int]:
    """An ``output`` entry as written with XADD (short field names: one per delta)."""
    return {"e": "out", "i": index, "t": text, "n": output_tokens, "k": encode_token_ids(token_ids)}


def decode(fields: Mapping[str, str]) -> Entry:
    kind = fields["e"]
    if kind == "out":
        return Output(int(fields["i"]), fields["t"], int(fields["n"]), fields.get("k") or "")
    if kind == "start":
        return Start(int(fields["a"]), int(fields.get("r") or 0))
    if kind == "end":
        return End(fields["s"])
    raise ValueError(f"unknown stream entry {kind!r}")


@dataclass
class RunSoFar:
    """The output of a job's current run (with what it resumed from), as its stream has it."""

    text: str = ""
    output_tokens: int = 0
    next_index: int = 0  # the index of the run's next delta
    ids: list[str] = field(default_factory=list)  # each delta's, as written

    def add(self, entry: Entry) -> None:
        if isinstance(entry, Start):
            if not entry.resumed_at:  # a run from nothing
                self.text, self.output_tokens, self.next_index, self.ids = "", 0, 0, []
        elif isinstance(entry, Output):
            if entry.index < self.next_index:
                return  # sent twice: a flush the worker retried
            self.text += entry.text
            self.output_tokens = entry.output_tokens
            self.next_index = entry.index + 1
            self.ids.append(entry.ids)

    @property
    def token_ids(self) -> list[int]:
        return [int(t) for ids in self.ids for t in ids.split()]

    @property
    def complete_ids(self) -> bool:
        """Every delta carried its token ids: a run may go on from here token for token."""
        return len(self.token_ids) == self.output_tokens


def run_so_far(entries: Iterable[Mapping[str, str]]) -> RunSoFar:
    run = RunSoFar()
    for fields in entries:
        run.add(decode(fields))
    return run


def partial(entries: Iterable[Mapping[str, str]]) -> tuple[str, int] | None:
    """The text and output tokens of the current run so far; None if it has no output yet."""
    run = run_so_far(entries)
    return (run.text, run.output_tokens) if run.next_index else None
