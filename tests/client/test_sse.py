"""genq.client.sse: Server-Sent Events read line by line as the WHATWG standard says."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from genq.client.sse import SseEvent, SseParser


def parse_sse(lines: Iterable[str], last_event_id: str | None = None) -> Iterator[SseEvent]:
    """The events of a whole stream of lines, as the client's readers feed them to the parser."""
    parser = SseParser(last_event_id)
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


def events(text: str) -> list[SseEvent]:
    return list(parse_sse(text.split("\n")))


def test_named_events_with_ids_and_json_data() -> None:
    stream = 'id: 1-0\nevent: start\ndata: {"a": 1}\n\nid: 2-0\nevent: output\ndata: {"b": 2}\n\n'
    assert events(stream) == [
        SseEvent(event="start", data='{"a": 1}', id="1-0"),
        SseEvent(event="output", data='{"b": 2}', id="2-0"),
    ]


def test_comments_are_skipped_and_an_unnamed_event_is_a_message() -> None:
    stream = ": keep-alive\n\n:another\ndata: x\n: in the middle\n\n"
    assert events(stream) == [SseEvent(event="message", data="x", id=None)]


def test_several_data_lines_join_with_newlines() -> None:
    stream = "data: first\ndata:second\ndata\ndata:  two spaces\n\n"
    # One space after the colon is dropped, only one; "data" alone is an empty line.
    assert events(stream)[0].data == "first\nsecond\n\n two spaces"


def test_the_event_name_does_not_leak_into_the_next_event() -> None:
    stream = "event: output\ndata: 1\n\ndata: 2\n\n"
    assert [e.event for e in events(stream)] == ["output", "message"]


def test_an_id_stays_in_force_until_another_one() -> None:
    stream = "id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
    # An empty id resets it to "" (not None): that is still an id to send back.
    assert [e.id for e in events(stream)] == ["7", "7", ""]


def test_an_id_with_a_nul_is_ignored() -> None:
    assert events("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n")[1].id == "1"


def test_a_block_without_data_dispatches_nothing_but_its_id_and_retry_count() -> None:
    parser = SseParser()
    for line in ["id: 5", "event: output", "retry: 2500", ""]:
        assert parser.feed(line) is None
    assert parser.last_event_id == "5" and parser.retry_ms == 2500
    # ... and its event name does not carry over either.
    assert parser.feed("data: x") is None
    assert parser.feed("") == SseEvent(event="message", data="x", id="5")


def test_retry_must_be_digits() -> None:
    parser = SseParser()
    for line in ["retry: 100", "retry: 1.5", "retry: -3", "retry: soon", ""]:
        parser.feed(line)
    assert parser.retry_ms == 100


def test_unknown_fields_are_ignored() -> None:
    assert events("foo: bar\ndata: x\nbaz\n\n") == [SseEvent("message", "x", None)]


def test_an_unfinished_last_event_is_dropped() -> None:
    assert [e.data for e in events("data: done\n\ndata: cut off")] == ["done"]


def test_a_byte_order_mark_at_the_start_is_skipped() -> None:
    assert events("\ufeffdata: x\n\n") == [SseEvent("message", "x", None)]


def test_a_resumed_parser_starts_from_the_id_it_is_given() -> None:
    (event,) = parse_sse(["data: x", ""], last_event_id="41")
    assert event.id == "41"
