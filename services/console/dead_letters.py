"""The dead-letter topic as the console shows it: read with ``taskstream dlq``'s reader,
replayed with its replay, each letter with the id and current status of its task."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from taskstream.app import App
from taskstream.consumer.dlq import DeadLetter, read_dead_letters, replay
from taskstream.errors import CodecError
from taskstream.store import ResultStore

from .cache import Cached

_READ_IDLE_S = 0.5  # the reader stops once nothing more arrives for this long


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

    def replay(self, letters: list[Letter]) -> int:
        """Send `letters` back where they came from (task events start over at attempt 1)."""
        sent = replay(self._app, [x.letter for x in letters])
        self._letters.invalidate()
        return sent

    def _task_id(self, letter: DeadLetter) -> str | None:
        try:
            return self._app.envelopes.decode_task(letter.value).id
        except CodecError:
            return None  # not a task event (undecodable, unknown schema): no task to show
