"""Reading Server-Sent Events (``text/event-stream``), as the WHATWG HTML standard parses them.

The client (genq.client) feeds it the lines of ``GET /v1/jobs/{id}/stream``. Kept apart from
any I/O so that the sync and the async client share it and fast tests cover it line by line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    event: str  # "message" when the stream named none
    data: str  # its data lines joined by "\n"
    id: str | None  # the last event id in force when it was dispatched (what to resume after)


class SseParser:
    """Feed it one line at a time, without its line ending; it returns an event at the blank line
    that ends one. ``last_event_id`` and ``retry_ms`` keep what the stream last set, also when
    no event came with them (a reconnecting client needs both)."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._first = True

    def feed(self, line: str) -> SseEvent | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")  # a byte order mark may open the stream
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: servers send them to keep the connection alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:  # the standard ignores such ids
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        # Any other field is ignored.
        return None

    def _dispatch(self) -> SseEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:  # no data line: nothing to dispatch (its id, if any, still counts)
            return None
        return SseEvent(event=event, data="\n".join(data), id=self.last_event_id)
