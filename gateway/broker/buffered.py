"""What the pub/sub connection has already read, parsed without a read call per reply.

redis-py's ``get_message`` runs its whole read path for every publication (health check, retry
wrapper, a timeout scope, observability hooks, a dict per message): measured at ~15x the cost of
parsing the reply itself. The worker's reader takes the first publication of a wakeup through
``get_message`` (which waits, with the link's timeouts) and the rest straight from the hiredis
parser's buffer, all in the same tick, so the hub's write corking combines them as before.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import PubSub

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - redis-py without hiredis support
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]
    NOT_ENOUGH_DATA = object()


def buffered_replies(pubsub: PubSub, limit: int) -> list[Any]:
    """Up to ``limit`` replies the pub/sub connection has already read from its socket; empty
    when nothing is buffered or the parser is not hiredis (the caller then reads as usual)."""
    connection = pubsub.connection
    parser = getattr(connection, "_parser", None)
    if _AsyncHiredisParser is None or not isinstance(parser, _AsyncHiredisParser):
        return []
    reader = parser._reader
    if reader is None or not parser._connected:
        return []
    replies: list[Any] = []
    while len(replies) < limit:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA or reply is False:
            break
        replies.append(reply)
    return replies
