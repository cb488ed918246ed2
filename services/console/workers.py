"""Where the console learns which workers run: a :class:`WorkerSource`.

The workers' heartbeats (a compacted topic read by a worker directory) are one such source;
the console depends only on this protocol, and without a source it shows no workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class WorkerSource(Protocol):
    """The workers known now, as JSON-able dicts with the keys ``worker_id``, ``hostname``,
    ``pid``, ``version``, ``queues``, ``partitions``, ``concurrency``, ``processing_guarantee``,
    ``running`` (a list of ``{task_id, task, started_at}``), ``counts``, ``lag`` (a list of
    ``{topic, partition, records, seconds}``), ``state`` (``online`` | ``offline`` |
    ``lost``) and ``last_beat``."""

    def workers_json(self) -> list[dict[str, object]]: ...


class NoWorkers:
    """A source that knows no worker: the console's default."""

    def workers_json(self) -> list[dict[str, object]]:
        return []


def lag_seconds_by_topic(workers: list[dict[str, object]]) -> dict[str, float]:
    """The largest lag in seconds any online worker reports per topic: how long the oldest
    record not yet done in the topic's worst partition has waited."""
    worst: dict[str, float] = {}
    for worker in workers:
        if worker.get("state", "online") != "online":
            continue  # a stopped or lost worker's last report is stale
        lag = worker.get("lag")
        for entry in lag if isinstance(lag, list) else []:
            if not isinstance(entry, Mapping):
                continue
            topic, seconds = entry.get("topic"), entry.get("seconds")
            if isinstance(topic, str) and isinstance(seconds, int | float):
                worst[topic] = max(worst.get(topic, 0.0), float(seconds))
    return worst
