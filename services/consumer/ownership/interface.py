"""What the worker asks of partition ownership, and its no-op twin when counting is off."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from confluent_kafka import Message


class Ownership(Protocol):
    """What the worker asks of partition ownership (OwnershipJournal, or UncountedOwnership
    when crash counting is off), all from the consumer loop's thread except ``keep_alive``.

    Ownership is opened with two ways back into the worker: ``dispatch(message, lost)``
    runs a record it held (``lost``: None for a usual run, else the lost deliveries so far of
    a careful run, which runs alone) and ``skip(message)`` finishes one the previous owner
    finished. Every record ``admit`` does not pass stays with ownership until it goes out
    through one of those two, or is dropped by ``revoked``.
    """

    def assigned(self, topic: str, partition: int) -> None:
        """The partition is this worker's now: its records wait until it is claimed."""

    def admit(self, message: Message) -> bool:
        """A fetched record: True, run it as usual now; False, ownership has it (it holds it
        for later, or the previous owner finished it)."""

    def finished(self, topic: str, partition: int, offset: int) -> None:
        """A record's outcome is acknowledged."""

    def serve(self, in_flight: int) -> None:
        """Every loop turn: ``in_flight``, the worker's records not yet finished (those
        held here included), says whether anything runs."""

    def revoked(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
        *,
        lost: bool = False,
    ) -> int:
        """The partition is gone: handed over (``running``, offset -> key of the records in
        flight, those held here included; ``done``, offsets finished above the committed
        one), or ``lost`` (fenced: nothing is written). Returns how many records it held:
        never run here, they are no longer in flight."""

    def held(self, topic: str, partition: int) -> int:
        """Records of the partition fetched and held here (not running)."""

    def keep_alive(self) -> None:
        """Report on runs handed over, when due (from the runtime's keeper too, while a task
        holds the loop's thread: only reports, no record moves)."""

    @property
    def handing(self) -> bool:
        """Runs of revoked partitions are still in progress here."""

    def close(self) -> None:
        """The worker stops."""

    def describe(self) -> str:
        """Its state, for a diagnosis."""


class UncountedOwnership:
    """``worker_lost_max_deliveries = 0``: lost deliveries are not counted; every record runs
    as usual (a task that kills its worker is delivered again and again), and a partition
    moved while its tasks run is run again by its new owner."""

    def assigned(self, topic: str, partition: int) -> None: ...

    def admit(self, message: Message) -> bool:
        return True

    def finished(self, topic: str, partition: int, offset: int) -> None: ...

    def serve(self, in_flight: int) -> None: ...

    def revoked(
        self,
        topic: str,
        partition: int,
        running: Mapping[int, bytes | None] | None = None,
        done: Iterable[int] = (),
        *,
        lost: bool = False,
    ) -> int:
        return 0

    def held(self, topic: str, partition: int) -> int:
        return 0

    def keep_alive(self) -> None: ...

    @property
    def handing(self) -> bool:
        return False

    def close(self) -> None: ...

    def describe(self) -> str:
        return "uncounted"
