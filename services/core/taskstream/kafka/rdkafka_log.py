"""librdkafka's log through Python logging, its repeated lines rate-limited.

Every client taskstream configures (the config builders of :mod:`taskstream.kafka`) logs to
the logger ``taskstream.librdkafka`` instead of librdkafka's own stderr lines, at the level
librdkafka gives (its ``%3`` is ERROR, ``%4`` WARNING, ``%6`` INFO). A broker gone while
clients run makes each of them log the same connection failure several times a second;
here a line is logged once, then lines of the same shape (the text without its thread,
client, broker and "after N ms" detail) are counted for :data:`WINDOW_S` seconds and the next one
says how many there were. So a broker down while a worker runs is logged, not 20 times a
second. A user's own ``logger`` setting (``Settings.kafka``) replaces this one.
"""

from __future__ import annotations

import logging
import re
import threading
import time

WINDOW_S = 30.0  # a line's repeats are counted, not logged, for this long (seconds)

# What varies between lines of one shape: the thread, the broker-name prefixes
# ("GroupCoordinator: 127.0.0.1:9092/1: "), the time in a state.
_DETAIL = re.compile(
    r"^\[thrd:[^\]]*\]: (?:[^\s:]+(?::\d+)?(?:/\w+)?: )*"  # thread, then broker names
    r"|\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"
)


class _Repeats(logging.Filter):
    """Pass a line's first occurrence per window; count the others (by shape, all clients)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}  # shape -> (since, repeats)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 3:
            return True
        facility, _client, text = args
        key = (record.levelno, f"{facility} {_DETAIL.sub('', str(text))}")
        now = time.monotonic()
        with self._lock:
            since, repeats = self._seen.get(key, (-self.window_s, 0))
            if now - since < self.window_s:
                self._seen[key] = (since, repeats + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # shapes name brokers and topics: bounded anyway
                self._seen = {key: (now, 0)}
        if repeats:
            record.args = (*args[:2], f"{text} ({repeats} more like it since it was last logged)")
        return True


LOGGER = logging.getLogger("taskstream.librdkafka")
LOGGER.addFilter(_Repeats())
