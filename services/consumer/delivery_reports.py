"""Serving the producer's delivery reports on the thread that produces, not the loop's.

confluent-kafka runs each delivery callback with the GIL taken anew. Served by the consumer
loop's thread while a task thread runs Python, every report waits for the GIL (up to the
interpreter's switch interval): that cost a worker a third of its rate. So a pool thread
serves the reports that are ready each time it has produced an outcome, and the loop thread
serves them only when no pool thread has for a while (the tasks are idle, or one runs long).
A task run on the loop's own thread (concurrency 1) leaves them to the loop. Reports are
served by one thread at a time, so an outcome's callbacks never race.
"""

from __future__ import annotations

import threading
import time

from taskstream.kafka.producer import EventProducer

_STALE_S = 0.005  # no task thread served reports this long: the loop thread does


class ReportServer:
    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._served_at = 0.0  # when a task thread last served reports (monotonic)

    def serve_ready(self) -> None:
        """A task thread, after producing: serve what is ready, unless another thread does."""
        if threading.get_ident() == self._loop_thread:
            return  # the loop serves them at its next turn
        if self._lock.acquire(blocking=False):
            try:
                self._producer.poll(0)
                self._served_at = time.monotonic()
            finally:
                self._lock.release()

    def serve(self, timeout: float) -> None:
        """The loop thread: serve reports, waiting up to ``timeout`` for one, unless task
        threads are serving them (then only wait, with the GIL released)."""
        if time.monotonic() - self._served_at < _STALE_S:
            if timeout > 0:
                time.sleep(min(timeout, _STALE_S))
            return
        with self._lock:
            self._producer.poll(timeout)
