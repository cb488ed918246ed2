"""Topic naming: the one place that builds topic names.

With prefix ``taskstream``:

- ``taskstream.tasks.<queue>``  task events of one queue, keyed by the task's ordering key
- ``taskstream.results``        result events, keyed by task id, compacted
- ``taskstream.dead-letter``    events that cannot run, with the reason in headers
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def task_topic(prefix: str, queue: str) -> str:
    """``<prefix>.tasks.<queue>``"""
    return _checked(f"{prefix}.tasks.{queue}")


def results_topic(prefix: str) -> str:
    """``<prefix>.results``"""
    return _checked(f"{prefix}.results")


def dead_letter_topic(prefix: str) -> str:
    """``<prefix>.dead-letter``"""
    return _checked(f"{prefix}.dead-letter")


def _checked(name: str) -> str:
    if not _LEGAL.match(name):
        raise ValueError(f"illegal Kafka topic name {name!r} (use letters, digits, '.', '_', '-')")
    return name


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create on start when missing."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(
    prefix: str, queues: list[str], partitions: int, replication: int
) -> list[TopicSpec]:
    """Every topic an app with these queues uses."""
    specs = [TopicSpec(task_topic(prefix, q), partitions, replication) for q in queues]
    # Compaction keeps the latest outcome per task id, so a store can be rebuilt from the topic.
    specs.append(
        TopicSpec(results_topic(prefix), partitions, replication, {"cleanup.policy": "compact"})
    )
    specs.append(TopicSpec(dead_letter_topic(prefix), partitions, replication))
    return specs
