"""The dead-letter topic as the console shows it: read with ``taskstream dlq``'s reader,
replayed with its replay, each letter with the id and current status of its task."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from taskstream.app import App
from taskstream.consumer.dead_letter_replay import DeadLetter, read_dead_letters, replay
from taskstream.errors import CodecError
from taskstream.store import ResultStore

from .cache import Cached

_READ_IDLE_S = 0.5  # the reader stops once nothing more arrives for this long
REPLAY_MEMORY_S = 30 * 86_400.0  # how long a replayed letter is remembered as replayed


@dataclass(frozen=True)
class LetterFilter:
    task: str | None = None
    reason: str | None = None
    since: datetime | None = None

    def keeps(self, letter: DeadLetter) -> bool:
        return (
            (self.task is None or letter.task == self.task)
            and (self.reason is None or letter.reason == self.reason)
            and (self.since is None or letter.time >= self.since)
        )


@dataclass(frozen=True)
class Letter:
    """A dead letter and, when it holds a task event, that task's id and stored status."""

    letter: DeadLetter
    task_id: str | None
    status: str | None  # the task's status in the store now (None: no outcome stored)

    @property
    def position(self) -> str:
        """Where it is in the dead-letter topic, ``partition:offset``: its id on the page."""
        return f"{self.letter.partition}:{self.letter.offset}"


class DeadLetters:
    def __init__(self, app: App, store: ResultStore, max_age_s: float = 3.0) -> None:
        self._app = app
        self._store = store
        self._letters = Cached(lambda: list(read_dead_letters(app, idle_s=_READ_IDLE_S)), max_age_s)

    def matching(self, where: LetterFilter) -> list[Letter]:
        """The letters `where` keeps, newest first, with their tasks' statuses now."""
        kept = [letter for letter in self._letters.get() if where.keeps(letter)]
        kept.sort(key=lambda letter: (letter.time, letter.partition, letter.offset), reverse=True)
        ids = [self._task_id(letter) for letter in kept]
        stored = self._store.get_many([i for i in ids if i is not None])
        return [
            Letter(letter, i, stored[i].status.value if i in stored else None)
            for letter, i in zip(kept, ids, strict=True)
        ]

    def find(self, position: str) -> Letter | None:
        return next((x for x in self.matching(LetterFilter()) if x.position == position), None)

    def at(self, positions: list[str]) -> list[Letter]:
        """The letters at `positions` (``partition:offset``), in the list's order."""
        wanted = set(positions)
        return [x for x in self.matching(LetterFilter()) if x.position in wanted]

    def replay(self, letters: list[Letter]) -> tuple[int, int]:
        """Send `letters` back where they came from (task events start over at attempt 1),
        each once: a letter replayed before (by any console process sharing the store, within
        REPLAY_MEMORY_S) is skipped. How many were sent, and how many skipped."""
        fresh = [x for x in letters if self._claim(x)]
        sent = replay(self._app, [x.letter for x in fresh])
        for x in fresh:
            self._store.accept_idempotency_key(_replay_key(x), x.task_id or "")
        self._letters.invalidate()
        return sent, len(letters) - len(fresh)

    def _claim(self, letter: Letter) -> bool:
        """True unless `letter` was replayed already. The mark is an Idempotency-Key of the
        lookup store, accepted once the replay is sent: a replay that failed half-way can be
        tried again."""
        claimed = self._store.claim_idempotency_key(
            _replay_key(letter), letter.task_id or "", b"replay", REPLAY_MEMORY_S
        )
        return claimed is None or not claimed.accepted

    def _task_id(self, letter: DeadLetter) -> str | None:
        try:
            return self._app.envelopes.decode_task(letter.value).id
        except CodecError:
            return None  # not a task event (undecodable, unknown schema): no task to show


def _replay_key(x: Letter) -> str:
    """The letter's identity: its place in the dead-letter topic and the original record's
    (a recreated topic reuses offsets, not both)."""
    d = x.letter
    return f"replay:{d.partition}:{d.offset}:{d.original_partition}:{d.original_offset}:{d.topic}"
