"""What the worker asks of partition ownership, and its no-op twin when counting is off."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from confluent_kafka import Message, TopicPartition


class Ownership(Protocol):
    """What the worker asks of partition ownership (OwnershipJournal, or UncountedOwnership
    when crash counting is off)."""

    @property
    def handing(self) -> bool: ...
    @property
    def isolating(self) -> bool: ...
    def close(self) -> None: ...
    def keep_alive(self) -> None: ...
    def claim(self, tp: TopicPartition) -> None: ...
    def release(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
    ) -> list[Message]: ...
    def lost(self, topic: str, partition: int) -> list[Message]: ...
    def admit(self, message: Message) -> bool: ...
    def finished(self, topic: str, partition: int, offset: int) -> None: ...
    def held_in(self, topic: str, partition: int) -> int: ...
    def held(self) -> int: ...
    def serve(self, idle: Callable[[], bool]) -> None: ...
    def describe(self) -> str: ...


class UncountedOwnership:
    """``worker_lost_max_deliveries = 0``: lost deliveries are not counted; every record runs
    as usual (a task that kills its worker is delivered again and again), and a partition
    moved while its tasks run is run again by its new owner."""

    def close(self) -> None: ...
    def claim(self, tp: TopicPartition) -> None: ...

    @property
    def handing(self) -> bool:
        return False

    def keep_alive(self) -> None: ...

    def release(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
    ) -> list[Message]:
        return []

    def lost(self, topic: str, partition: int) -> list[Message]:
        return []

    def admit(self, message: Message) -> bool:
        return True

    def finished(self, topic: str, partition: int, offset: int) -> None: ...

    def held_in(self, topic: str, partition: int) -> int:
        return 0

    def held(self) -> int:
        return 0

    @property
    def isolating(self) -> bool:
        return False

    def serve(self, idle: Callable[[], bool]) -> None: ...

    def describe(self) -> str:
        return "uncounted"
