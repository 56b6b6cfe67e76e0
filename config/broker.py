"""kombu's Redis transport, with one guard that keeps a busy worker alive when Redis
restarts.

When the broker connection drops, the Celery consumer closes the old connection before
reconnecting, and closing its channel restores the messages the worker had taken but not
yet acknowledged (with `acks_late`, the tasks it is running). By then kombu has already
detached that connection's transport from its client, so the restore fails with
`AttributeError: 'NoneType' object has no attribute 'hostname'` (in `_connparams`),
which Celery does not count as a connection error: the worker exits "Unrecoverable"
(kombu 5.7.0, with a worker of several processes busy at the moment Redis goes away).

This transport skips that restore instead, and likewise the acknowledgement (or
rejection) that a task still running through the reconnect sends, when it ends, over the
old, detached channel: that fails the same way, in the consumer's event loop. Nothing is
lost by either: the messages stay in Redis's unacknowledged set and Redis hands them out
again after the visibility timeout (or, when the restarted Redis kept nothing, the email
sweeper restarts the sends from the database ledger); a task run twice that way is safe,
as every task here is (claims and ledgers are rows). Selected by CELERY_BROKER_TRANSPORT
in config/settings.py for redis:// and rediss:// brokers.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    def _detached(self) -> bool:
        """Whether this channel's connection is gone (closed for a reconnect)."""
        connection = getattr(self.channel, "connection", None)
        return connection is None or connection.client is None

    def _forget(self, delivery_tag: Any) -> None:
        if self._delivered is not None:
            self._delivered.pop(delivery_tag, None)

    def restore_unacked(self, client: Any = None) -> None:
        if client is None and self._detached():
            logger.warning(
                "Broker connection lost: %d unacknowledged task(s) left for Redis to hand "
                "out again after the visibility timeout.",
                len(self._delivered or ()),
            )
            if self._delivered is not None:
                self._delivered.clear()
            return
        super().restore_unacked(client)

    def ack(self, delivery_tag: Any) -> None:
        if self._detached():
            logger.warning(
                "A task ended after the broker connection it came over was lost; Redis "
                "hands it out again after the visibility timeout."
            )
            self._forget(delivery_tag)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._detached():
            self._forget(delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
