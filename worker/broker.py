"""kombu's Redis transport, with a delivered message's bookkeeping off the job's way in.

kombu emulates acknowledgements on Redis: before it hands a message it popped from the queue to
Celery, it records the message as unacknowledged (ZADD and HSET, one MULTI/EXEC) and waits for
Redis to answer; a consumer that dies before it acknowledges has its messages restored from
there. That wait sat between the message's arrival and the moment the worker forwards the job to
its engine (worker.engine_host ``forward``): 0.40 ms p50 of the way on 2 cores, measured with
timestamps in each process.

Here the same commands go out at the same point, before Celery sees the message, so a consumer
that dies mid-way leaves exactly what it left before; only the reply is read later, once Celery
has taken the message (and the job has gone to the engine), or before anything else touches the
unacknowledged set (an ack, a reject, a restore). Selected with the ``broker_transport`` setting
(worker.celery_app) for ``redis://`` brokers. A key prefix (the ``global_keyprefix`` transport
option) keeps kombu's own way.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis, virtual
from kombu.utils.json import dumps


class QoS(redis.QoS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unread: tuple[Any, Any] | None = None  # (pool, connection) owing a reply
        # Acks come from Celery's pool threads too: one thread takes the reply to read.
        self._unread_lock = threading.Lock()

    def append(self, message: Any, delivery_tag: str) -> None:
        """Record the message as unacknowledged: sent now, its reply read by :meth:`settle`."""
        if self.channel.global_keyprefix:
            super().append(message, delivery_tag)
            return
        self.settle()
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        pool = self.channel.pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(
                connection.pack_commands(
                    [
                        ("MULTI",),
                        ("ZADD", self.unacked_index_key, time.time(), delivery_tag),
                        ("HSET", self.unacked_key, delivery_tag, raw),
                        ("EXEC",),
                    ]
                )
            )
        except BaseException:
            connection.disconnect()  # a command may be half written
            pool.release(connection)
            raise
        with self._unread_lock:
            self._unread = (pool, connection)
        virtual.QoS.append(self, message, delivery_tag)  # kombu's record in memory

    def settle(self) -> None:
        """Read the reply to the last :meth:`append`: raises what Redis refused."""
        with self._unread_lock:
            unread, self._unread = self._unread, None
        if unread is None:
            return
        pool, connection = unread
        try:
            for _ in range(3):  # OK, QUEUED, QUEUED
                connection.read_response()
            for reply in connection.read_response():  # EXEC: each command's reply
                if isinstance(reply, Exception):
                    raise reply
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def ack(self, delivery_tag: str) -> None:
        self.settle()
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.settle()
        super().reject(delivery_tag, requeue)

    def restore_unacked(self, client: Any = None) -> None:
        self.settle()
        super().restore_unacked(client)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        self.settle()
        super().restore_visible(*args, **kwargs)


class Channel(redis.Channel):
    QoS = QoS

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        """kombu's, with the delivery's bookkeeping reply read after Celery took the message."""
        ret = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        if no_ack:
            return ret

        def deliver(raw_message: Any) -> Any:
            message = self.Message(raw_message, channel=self)
            self.qos.append(message, message.delivery_tag)
            try:
                return callback(message)
            finally:
                self.qos.settle()

        self.connection._callbacks[queue] = deliver
        return ret


class Transport(redis.Transport):
    Channel = Channel


BROKER_TRANSPORT = f"{__name__}:Transport"  # Celery's ``broker_transport`` setting


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` for a broker: this one for ``redis://``; kombu's own (None) for
    TLS, whose options kombu derives from the scheme's name (``rediss``)."""
    return BROKER_TRANSPORT if urlsplit(broker_url).scheme == "redis" else None
