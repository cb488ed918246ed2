"""Partition ownership: who owns each task partition, and how the last owner left it.

A record whose task kills its worker is counted, then dead-lettered (a lost delivery).

A task that kills its process (an OOM kill, a segfault in a C extension, ``os._exit``) leaves
its record uncommitted; the group hands its partition to another member, which runs it again
and dies too. To end that loop without a cost per task, the owner of each task partition
keeps a small journal in Kafka, the ownership journal: the compacted topic
``<prefix>.deliveries`` (its wire name from before, kept) keyed by ``topic:partition``;
each record there is the whole state of one partition (JSON):

- A worker **claims** a partition it is assigned, then reads the journal up to its own claim:
  the last state before it says how the previous owner left. A clean hand-over (``release``)
  costs nothing more: the partition runs as usual.
- An owner that never released its partition died (or was fenced). Which of its records
  killed it is unknown (nothing per task is written in the steady state). Most deaths are
  not a record's doing (an OOM kill of the pod, a node lost), so the new owner first runs
  that partition's suspects **on probation**: as usual, concurrently, once a state saying so
  is durable. Only if it dies too before they end does the next owner run them
  **carefully**: each alone in the worker (no other task runs meanwhile, so a death can only
  be that run's), its run recorded durably (``running``) before it starts. (Run carefully
  at once, a crash cost one durable write and one lone run per suspect: minutes for a
  thousand suspects on a replicated cluster, with every other partition waiting.) The
  suspects are what the dead owner could have fetched: from the committed offset, at most
  its ``max_tasks_in_flight`` records, and no further than the partition's end at the
  takeover. Afterwards the partition runs as usual again. Probation is skipped when
  ``worker_lost_max_deliveries`` is below 3 (it costs one death more before a record is
  caught).
- A careful owner that dies with a run recorded has been killed by that record: it counts a
  lost delivery, plus the death that started the careful mode (then attributed). At
  ``worker_lost_max_deliveries`` the record is not run again: its outcome is FAILURE
  ``WorkerLost`` and it goes to the dead-letter topic as ``worker-lost``; the records behind
  it run.

A partition moved by a rebalance while its tasks run (a long task, say) is **handed over
running**: the releasing owner names in its ``release`` the offsets it still runs (with
their keys) and those it finished above the committed offset, and it keeps running them,
reporting under the key ``topic:partition@token`` as each one's outcome is acknowledged
(and every ``HANDOVER_BEAT_S`` meanwhile). The new owner skips what was finished, holds the
records of the keys still running there, runs the other keys at once, and runs the held
ones in order once their reports say done. A report that stops for the lease (the releasing
worker died) leaves its runs as suspects, run carefully like a dead owner's.

So a record that kills every worker it runs on ends after that many deaths (the first one
or two inferred, the others recorded). The journal is internal and JSON, not part of the Avro
contract in ``schemas/``.

The worker sees :class:`Ownership`, named for what it means: a partition is ``assigned``; a
fetched record is ``admit``-ted (run it now, or ownership has it); a run ``finished``; the
loop ``serve``-s it each turn with the worker's ``in_flight`` count; a partition is
``revoked`` (handed over, or ``lost``) and its held records dropped; ``held`` counts a
partition's records held (not running). Plus ``keep_alive`` (hand-over reports from the
runtime's keeper), ``handing``, ``close`` and ``describe``. Ownership alone knows which
records wait and why (a claim not read back, a careful run, a key the previous owner still
runs, a usual record while a careful run must run alone); it hands them back through the
two callbacks it is opened with, ``dispatch(message, lost)`` and ``skip(message)``.

The package: ``state`` (the journal's records and the pure :func:`takeover` rules),
``journal`` (:class:`OwnershipJournal`, the I/O in one worker), ``reader``
(:class:`JournalReader`, the journal topic read by assignment while a claim waits),
``interface`` (the :class:`Ownership` protocol the worker sees, and
:class:`UncountedOwnership`, its no-op twin when counting is off).
"""

from __future__ import annotations

from taskstream.consumer.ownership.interface import Ownership, UncountedOwnership
from taskstream.consumer.ownership.journal import HANDOVER_BEAT_S, OwnershipJournal
from taskstream.consumer.ownership.reader import JournalReader
from taskstream.consumer.ownership.state import (
    CLAIM,
    OWN,
    RELEASE,
    HandoverReport,
    PartitionState,
    journal_key,
    report_key,
    takeover,
)

__all__ = [
    "CLAIM",
    "HANDOVER_BEAT_S",
    "OWN",
    "RELEASE",
    "HandoverReport",
    "JournalReader",
    "Ownership",
    "OwnershipJournal",
    "PartitionState",
    "UncountedOwnership",
    "journal_key",
    "report_key",
    "takeover",
]
