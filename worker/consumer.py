"""Celery's consumer, with task events sent in batches.

With the threads pool, Celery buffers task events (received, started, succeeded, ...) and asks
its event loop to publish the buffer on its next turn, once per event; the loop takes one message
a turn, so each event went to Redis in a publish of its own. Here the first event of a batch asks
for a flush ``EVENT_FLUSH_S`` later, and the events buffered by then go in one publish (Celery
sends a batch as one ``task.multi`` message; Flower reads it as the events it holds). A burst of
jobs reaches the engine faster: on 2 cores Celery's consumer took 1,149-1,218 messages a second
where the stock one took 789-916 (ops/bench/consumer_gil.py; docs/performance.md, "Celery's
consumer sends task events in batches"). Events reach Flower up to ``EVENT_FLUSH_S`` later.
Selected with the ``worker_consumer`` setting (worker.celery_app).
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer

EVENT_FLUSH_S = 0.005


class BatchedEventsConsumer(Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events_flush_due = False

    def on_send_event_buffered(self) -> None:
        """Called by whichever thread buffered an event (pool threads too): the timer is set
        from the event loop's own thread."""
        if self.hub and not self._events_flush_due:
            self._events_flush_due = True
            self.hub.call_soon(self._flush_events_soon)

    def _flush_events_soon(self) -> None:
        self.hub.call_later(EVENT_FLUSH_S, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        # Cleared first: an event buffered from here on asks for a flush of its own.
        self._events_flush_due = False
        self._flush_events()

    def shutdown(self) -> None:
        """The events still buffered go out before the consumer's connections close."""
        self._flush_events()
        super().shutdown()
