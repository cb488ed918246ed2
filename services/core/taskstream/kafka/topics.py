"""Topic naming: the one place that builds topic names.

With prefix ``taskstream``:

- ``taskstream.tasks.<queue>``  task events of one queue, keyed by the task's ordering key
- ``taskstream.tasks-high.<queue>``  the queue's high band: events with priority >= 5,
                                 which its workers drain first (see priority_band)
- ``taskstream.results``        result events, keyed by task id, compacted
- ``taskstream.dead-letter``    events that cannot run, with the reason in headers
- ``taskstream.delay.<N>s``     delayed events (retries, countdowns) waiting N seconds
- ``taskstream.deliveries``     the ownership journal: each task partition's owner, careful
                                 runs and hand-overs (the name predates it)
- ``taskstream.beat``           the beat leader's claims and each periodic entry's last tick
- ``taskstream.control``        revocations, keyed by task id, compacted (read by every worker)
- ``taskstream.heartbeats``     each worker's latest heartbeat, keyed by worker id, compacted
- ``taskstream.dev-probe``      ``taskstream dev``'s round trips that watch its embedded broker

and the consumer groups that read them:

- ``taskstream.workers``        the workers (task topics)
- ``taskstream.delays``         the delay schedulers (delay tiers)
- ``taskstream.materializer``   the materializers (results topic)
- ``taskstream.beat``           the beat replicas: the owner of the beat topic's one partition leads
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from taskstream.errors import InvalidTopicName

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def task_topic(prefix: str, queue: str) -> str:
    """``<prefix>.tasks.<queue>``"""
    return _checked(f"{prefix}.tasks.{queue}")


# Priorities (Celery's, RabbitMQ's sense): 0 to 9, a higher number served first; None is no
# priority. A partition is read in order, so a priority is a topic: the bands of a queue, from
# the highest, are each a topic. Two bands: priority >= HIGH_PRIORITY goes to the high band,
# the rest (and no priority) to the queue's own topic.
MIN_PRIORITY, MAX_PRIORITY = 0, 9
HIGH_PRIORITY = 5


def high_topic(prefix: str, queue: str) -> str:
    """``<prefix>.tasks-high.<queue>``: the queue's high band (never a queue's own topic:
    ``tasks-high.`` is no ``tasks.``)."""
    return _checked(f"{prefix}.tasks-high.{queue}")


def band_topics(prefix: str, queue: str) -> list[str]:
    """A queue's band topics, the highest band first (its own topic last)."""
    return [high_topic(prefix, queue), task_topic(prefix, queue)]


def event_topic(prefix: str, queue: str, priority: int | None) -> str:
    """The topic of an event of ``queue`` with ``priority``: its band's."""
    if priority is not None and priority >= HIGH_PRIORITY:
        return high_topic(prefix, queue)
    return task_topic(prefix, queue)


def queue_of(prefix: str, topic: str) -> str | None:
    """The queue of a task topic of any band, or None for another topic."""
    for head in (f"{prefix}.tasks.", f"{prefix}.tasks-high."):
        if topic.startswith(head):
            return topic[len(head) :]
    return None


def results_topic(prefix: str) -> str:
    """``<prefix>.results``"""
    return _checked(f"{prefix}.results")


def dead_letter_topic(prefix: str) -> str:
    """``<prefix>.dead-letter``"""
    return _checked(f"{prefix}.dead-letter")


def ownership_topic(prefix: str) -> str:
    """``<prefix>.deliveries``: the partition ownership journal."""
    # The name predates the ownership package; renaming it would migrate running deployments.
    return _checked(f"{prefix}.deliveries")


def beat_topic(prefix: str) -> str:
    """``<prefix>.beat``"""
    return _checked(f"{prefix}.beat")


def beat_group(prefix: str) -> str:
    """``<prefix>.beat``"""
    return f"{prefix}.beat"


def control_topic(prefix: str) -> str:
    """``<prefix>.control``"""
    return _checked(f"{prefix}.control")


def control_readers(prefix: str) -> str:
    """``<prefix>.control-readers``: the group id of control topic readers, which assign
    every partition themselves and never join nor commit (each worker reads it all)."""
    return f"{prefix}.control-readers"


def delay_scanners(prefix: str) -> str:
    """``<prefix>.delay-scanners``: the group id of the delay schedulers' revocation scans,
    which assign tier partitions themselves and never join nor commit."""
    return f"{prefix}.delay-scanners"


def heartbeats_topic(prefix: str) -> str:
    """``<prefix>.heartbeats``"""
    return _checked(f"{prefix}.heartbeats")


def dev_probe_topic(prefix: str) -> str:
    """``<prefix>.dev-probe``"""
    return _checked(f"{prefix}.dev-probe")


# One partition: a few workers' beats every few seconds; a reader reads it all.
HEARTBEAT_PARTITIONS = 1
# Kept a day at most (compacted meanwhile): a live worker beats every few seconds, so only
# workers gone for a day drop out of the topic.
HEARTBEAT_RETENTION_MS = 86_400_000


def worker_group(prefix: str) -> str:
    """``<prefix>.workers``"""
    return f"{prefix}.workers"


def share_group(prefix: str) -> str:
    """``<prefix>.workers.shared``: the share group (KIP-932) of the shared queues' workers
    (a share group and a consumer group cannot have one name)."""
    return f"{prefix}.workers.shared"


def delays_group(prefix: str) -> str:
    """``<prefix>.delays``"""
    return f"{prefix}.delays"


def materializer_group(prefix: str) -> str:
    """``<prefix>.materializer``"""
    return f"{prefix}.materializer"


# Delay tiers: a delayed event waits in the largest tier not longer than its remaining time,
# hop by hop. Every record of one tier waits the same time, so a partition's records ripen in
# order and its head is the only one that must wait.
DELAY_TIERS_S = (1, 10, 60, 600, 3600)


def delay_topic(prefix: str, seconds: int) -> str:
    """``<prefix>.delay.<seconds>s``"""
    return _checked(f"{prefix}.delay.{seconds}s")


def delay_tier(remaining_s: float) -> int:
    """The tier for an event due in ``remaining_s``: the largest not longer than it, or the
    shortest (an event is never run early; it may run up to one shortest tier late)."""
    fitting = [t for t in DELAY_TIERS_S if t <= remaining_s]
    return fitting[-1] if fitting else DELAY_TIERS_S[0]


def tier_of(prefix: str, topic: str) -> int | None:
    """The tier of a delay topic name, or None for another topic."""
    head = f"{prefix}.delay."
    if topic.startswith(head) and topic.endswith("s"):
        try:
            return int(topic[len(head) : -1])
        except ValueError:
            return None
    return None


def _checked(name: str) -> str:
    if not _LEGAL.match(name):
        raise InvalidTopicName(name)
    return name


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create on start when missing."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


# Revocations are few and every worker reads them all: one partition, read cheaply and in
# order (a worker's start marker read back means every earlier revocation was read).
CONTROL_PARTITIONS = 1
# How long the results topic keeps an outcome past result_expires (ms): the store deletes
# outcomes first, so that a rebuild from the topic never lacks one the store still has.
RESULTS_RETENTION_MARGIN_MS = 86_400_000


def results_topic_config(result_expires_s: float | None) -> dict[str, str]:
    """The results topic's config. Compaction keeps the latest outcome per task id, so a store
    can be rebuilt from the topic; with ``result_expires`` the topic also deletes what is
    older than it plus a day (``compact,delete``), so it stops growing with every new id."""
    if not result_expires_s:
        return {"cleanup.policy": "compact"}
    retention_ms = int(result_expires_s * 1000) + RESULTS_RETENTION_MARGIN_MS
    return {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}


def control_topic_config(revoke_expires_s: float) -> dict[str, str]:
    """The control topic's config: the latest record per task id (compaction), none older
    than ``revoke_expires_s`` (deletion)."""
    retention_ms = int(revoke_expires_s * 1000)
    return {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}


def topic_specs(
    prefix: str,
    queues: list[str],
    partitions: int,
    replication: int,
    *,
    result_expires_s: float | None = None,
    revoke_expires_s: float = 10_800.0,
) -> list[TopicSpec]:
    """Every topic an app with these queues uses."""
    specs = [TopicSpec(t, partitions, replication) for q in queues for t in band_topics(prefix, q)]
    specs.append(
        TopicSpec(
            results_topic(prefix), partitions, replication, results_topic_config(result_expires_s)
        )
    )
    specs.append(TopicSpec(dead_letter_topic(prefix), partitions, replication))
    # One state record per task partition, the latest wins: compacted.
    specs.append(
        TopicSpec(ownership_topic(prefix), partitions, replication, {"cleanup.policy": "compact"})
    )
    specs += [TopicSpec(delay_topic(prefix, t), partitions, replication) for t in DELAY_TIERS_S]
    # One partition: its owner in the beat group is the one replica that fires ticks. The
    # latest record per key (each entry's last tick, the leader's claim) is all that counts.
    # An hour's segments: only closed segments are compacted, and a new leader reads it all.
    beat_config = {"cleanup.policy": "compact", "segment.ms": "3600000"}
    specs.append(TopicSpec(beat_topic(prefix), 1, replication, beat_config))
    specs.append(
        TopicSpec(
            control_topic(prefix),
            CONTROL_PARTITIONS,
            replication,
            control_topic_config(revoke_expires_s),
        )
    )
    # The latest beat per worker (compacted); a worker gone for a day is forgotten (delete).
    specs.append(
        TopicSpec(
            heartbeats_topic(prefix),
            HEARTBEAT_PARTITIONS,
            replication,
            {"cleanup.policy": "compact,delete", "retention.ms": str(HEARTBEAT_RETENTION_MS)},
        )
    )
    return specs
