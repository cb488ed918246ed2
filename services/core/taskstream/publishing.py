"""The seam between an app and whatever sends its task events: a :class:`Publisher`.

Core never imports the package that implements it (dependencies point inward: producer ->
core <- consumer). ``App("demo")`` still needs no configuration to send: the ``taskstream``
distribution declares its Kafka publisher as an entry point,

    [project.entry-points."taskstream.publishers"]
    kafka = "taskstream.producer.publisher:for_app"

and :func:`default_publisher_factory` loads it the first time an app sends a task (once per
process). Tests and embedders pass their own instead: ``App("t", publisher_factory=...)``,
a callable that takes the app and returns a Publisher.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from taskstream.envelope import TaskEvent
from taskstream.errors import ConfigError

if TYPE_CHECKING:
    from taskstream.app import App

ENTRY_POINT_GROUP = "taskstream.publishers"
DEFAULT_PUBLISHER = "kafka"


class DeliveryHandle(Protocol):
    """The broker's acknowledgement of one event, with the ``concurrent.futures.Future``
    methods callers use. ``result()`` returns None once the event is acknowledged and raises
    DeliveryFailed when it was not, TimeoutError while it is still pending."""

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> None: ...

    def exception(self, timeout: float | None = None) -> BaseException | None: ...

    def add_done_callback(self, callback: Callable[[DeliveryHandle], object]) -> None: ...


class Publisher(Protocol):
    """Sends task events to their queue's topic."""

    def publish(self, event: TaskEvent) -> DeliveryHandle: ...

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered."""
        ...

    def close(self, timeout: float = 30.0) -> int:
        """Flush, then release the connection; returns how many were never delivered."""
        ...


PublisherFactory = Callable[["App"], Publisher]


@functools.cache
def default_publisher_factory() -> PublisherFactory:
    """The publisher factory the installed distribution declares (see the module docstring).

    Raises ConfigError when none is installed, e.g. when running from a source tree that was
    never ``pip install``-ed: its metadata is where the entry point lives.
    """
    found = entry_points(group=ENTRY_POINT_GROUP, name=DEFAULT_PUBLISHER)
    for entry in found:
        factory: PublisherFactory = entry.load()
        return factory
    raise ConfigError(
        f"no {DEFAULT_PUBLISHER!r} publisher in the {ENTRY_POINT_GROUP!r} entry points: "
        "install taskstream (pip install -e . in a checkout), or pass App(publisher_factory=...)"
    )
