"""A worker's check of its queues' topics: fewer partitions than configured is said loudly.

A queue's topic created by someone else (an older deploy, a broker's auto-creation, an
operator) may have fewer partitions than ``partitions``: the queue then runs on at most that
many workers' consumers, whatever is deployed. The worker logs it at its start, sets
``taskstream_queue_partitions_missing{queue}`` and names it in its heartbeats
(``warnings``), so ``taskstream workers`` and the console show it.
"""

from __future__ import annotations

import logging

from taskstream import metrics
from taskstream.app import App
from taskstream.kafka.topics import high_topic, task_topic

log = logging.getLogger(__name__)


def short_queues(app: App, queues: list[str], counts: dict[str, int]) -> list[str]:
    """Check ``queues``' topics (``counts``: their partition counts, as the broker has them);
    a warning for each with fewer partitions than configured."""
    s = app.settings
    topics = {task_topic(s.topic_prefix, q): q for q in queues}
    warnings: list[str] = []
    for topic, queue in topics.items():
        have = counts.get(topic)
        missing = 0 if have is None else max(0, s.partitions - have)
        metrics.QUEUE_PARTITIONS_MISSING.labels(queue).set(missing)
        if missing:
            assert have is not None
            warning = (
                f"queue {queue!r}: its topic {topic} has {have} partitions, fewer than the "
                f"{s.partitions} configured, so at most {have} consumers share it; add "
                f"partitions (kafka-topics --alter --topic {topic} --partitions {s.partitions}; "
                f"keys then map to other partitions) or set partitions={have}"
            )
            log.warning("%s", warning)
            warnings.append(warning)
        high = counts.get(high_topic(s.topic_prefix, queue))
        if high is not None and have is not None and high != have:
            # The owner of the queue's partition p reads partition p of its high band.
            warning = (
                f"queue {queue!r}: its high band {high_topic(s.topic_prefix, queue)} has "
                f"{high} partitions and its topic {have}: high tasks are drained first only "
                f"on the partitions both have; give both {s.partitions} partitions"
            )
            log.warning("%s", warning)
            warnings.append(warning)
    return warnings
