"""App: the registry of tasks and the entry point of the Python API.

The app is the facade that ties the parts together: it lazily opens the publisher when a
task is first sent and the lookup store when a result is first read, so importing an app to
run a worker costs neither. The publisher comes from a factory (taskstream.publishing), by
default the Kafka one the installed distribution declares, so core never imports the
producer package.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from taskstream.avro.codec import Codec
from taskstream.config import Settings
from taskstream.control import Control
from taskstream.envelope import Envelopes, ParentResult, TaskEvent
from taskstream.errors import UnknownTask
from taskstream.group_result import GroupResult
from taskstream.kafka.broker import Broker, KafkaBroker
from taskstream.kafka.topics import topic_specs
from taskstream.periodic import Call, PeriodicTask, Signal, entry_for
from taskstream.publishing import Publisher, PublisherFactory, default_publisher_factory
from taskstream.remote_task import RemoteTask
from taskstream.result import AsyncResult
from taskstream.schedules import Schedule
from taskstream.store import ResultStore, open_store
from taskstream.task import Task, TaskOptions
from taskstream.workflows.events import GROUP_RESULT_TASK

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_QUEUE = "default"


def queues_of(task_queues: Iterable[str]) -> list[str]:
    """The queues to consume and create topics for: the tasks' own, and always the default."""
    return sorted({*task_queues, DEFAULT_QUEUE})


def task_named(tasks: Mapping[str, T], name: str) -> T:
    """``tasks[name]``, or UnknownTask: how an app and the HTTP catalog look tasks up."""
    try:
        return tasks[name]
    except KeyError:
        raise UnknownTask(name) from None


class App:
    """A taskstream application: ``App("demo")``, then ``@app.task``.

    Settings come from keyword arguments, else ``TASKSTREAM_*`` environment variables
    (see taskstream.config.Settings): ``bootstrap_servers``, ``store``, ``topic_prefix``,
    ``partitions`` and more. The HTTP service's (``TASKSTREAM_HTTP_*``) are not the app's:
    see taskstream.producer.http.HttpSettings.

    ``broker``: where Kafka clients come from (default: the cluster in the settings).
    ``store``: the lookup store's URL (a setting), or a ResultStore to use as it is (e.g.
    ``MemoryStore()``); the app closes it in :meth:`close` either way.
    ``publisher_factory``: ``factory(app) -> Publisher``, called when the app first sends a
    task (default: the Kafka publisher, found by entry point; see taskstream.publishing).
    """

    def __init__(
        self,
        name: str,
        *,
        broker: Broker | None = None,
        store: str | ResultStore | None = None,
        publisher_factory: PublisherFactory | None = None,
        include: Sequence[str] = (),
        **settings: Any,
    ) -> None:
        self.name = name
        # Celery's include=: modules whose tasks load_app() imports with the app (the tasks
        # register themselves on import; proj/celery.py has none of its own).
        self.include: tuple[str, ...] = tuple(include)
        if isinstance(store, str):
            settings["store"] = store
        self.settings = Settings.load(**settings)
        # Where Kafka clients come from: the cluster in the settings, or a StubBroker.
        self.broker: Broker = broker if broker is not None else KafkaBroker()
        self._publisher_factory = publisher_factory
        self.codec = Codec()
        self.envelopes = Envelopes(self.codec)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._lock = threading.Lock()
        self._publisher: Publisher | None = None
        self._store: ResultStore | None = None if isinstance(store, str) else store
        self._periodic_tasks: dict[str, PeriodicTask] = {}  # the beat schedule, by entry name
        self.on_after_configure = Signal("on_after_configure")  # Celery's periodic-task hook
        self._control: Control | None = None
        self._remote_tasks: dict[str, RemoteTask] = {}  # send_task's tasks without code

    def __repr__(self) -> str:
        return f"<App {self.name} tasks={len(self.tasks)}>"

    @overload
    def task(self, func: Callable[P, R], /) -> Task[P, R]: ...
    # The "/" after self only works around python/mypy#11606 (a method's overload without
    # positional parameters is checked against the implementation's positional-only func).
    @overload
    def task(
        self, /, *, name: str | None = None, queue: str = DEFAULT_QUEUE, **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        func: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        **options: Any,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task. Its type hints become its Avro schemas; a hint
        that has no Avro mapping raises UnsupportedAnnotation here. ``options`` are the
        fields of TaskOptions: ``max_retries``, ``autoretry_for``, ``retry_backoff``,
        ``retry_backoff_max``, ``retry_jitter``, ``default_retry_delay``, ``time_limit``,
        ``soft_time_limit``, ``track_started``, ``rate_limit``, ..."""
        task_options = TaskOptions.of(options)

        def register(f: Callable[P, R]) -> Task[P, R]:
            task_name = name or self._default_name(f)
            t: Task[P, R] = Task(self, f, name=task_name, queue=queue, options=task_options)
            self.tasks[task_name] = t
            return t

        return register(func) if func is not None else register

    def _default_name(self, func: Callable[..., Any]) -> str:
        module = func.__module__
        if module == "__main__":  # run as a script: name tasks after the app instead
            module = self.name
        return f"{module}.{func.__qualname__}"

    def get_task(self, name: str) -> Task[Any, Any]:
        return task_named(self.tasks, name)

    @property
    def queues(self) -> list[str]:
        return queues_of(t.queue for t in self.tasks.values())

    # -- periodic tasks (run by `taskstream beat`, see taskstream.periodic) ------------------

    @property
    def periodic_tasks(self) -> dict[str, PeriodicTask]:
        """The beat schedule by entry name, once ``on_after_configure``'s receivers ran."""
        self.on_after_configure.send_once(self)
        return self._periodic_tasks

    def add_periodic_task(
        self,
        schedule: float | timedelta | Schedule,
        sig: Call,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        key: str | None = None,
    ) -> PeriodicTask:
        """Run ``sig`` (a task, or ``(task, args, kwargs)``) on ``schedule``: seconds, a
        timedelta or a ``crontab(...)``. ``name`` identifies the entry across deploys and
        replicas (default: the call, e.g. ``tasks.add(2, 3)``); an entry of the same name
        is replaced, as in Celery. The arguments are checked against the task's schema now."""
        entry = entry_for(schedule, sig, args, kwargs, name=name, queue=queue, key=key)
        self._periodic_tasks[entry.name] = entry
        return entry

    def periodic_task(
        self,
        schedule: float | timedelta | Schedule,
        *,
        name: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        **task_options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """``@app.periodic_task(crontab(minute=0))``: register the function as a task (with
        ``@app.task``'s options) and run it on ``schedule`` with ``args``/``kwargs``."""

        def register(func: Callable[P, R]) -> Task[P, R]:
            t: Task[P, R] = self.task(**task_options)(func)
            self.add_periodic_task(schedule, t, args, kwargs, name=name or t.name)
            return t

        return register

    # -- sending ----------------------------------------------------------------------------

    @property
    def publisher(self) -> Publisher:
        """The publisher, opened on first use (and closed at exit or by :meth:`close`)."""
        publisher = self._publisher  # set once: the lock is only for opening it
        if publisher is not None:
            return publisher
        with self._lock:
            if self._publisher is None:
                factory = self._publisher_factory or default_publisher_factory()
                self._publisher = factory(self)
                atexit.register(self._publisher.close)
            return self._publisher

    def publish(self, event: TaskEvent) -> AsyncResult[Any]:
        return AsyncResult(event.id, self, self.publisher.publish(event))

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name (``apply_async`` options apply), as Celery's ``send_task``:
        also one this app has no code for, by its published schemas (``schemas_dir``/tasks,
        written by ``taskstream schemas export``), which check the arguments before
        sending; UnknownTask, saying where it looked, when there are none."""
        task = self.tasks.get(name)
        if task is not None:
            return task.apply_async(args, kwargs, **options)
        return self.remote_task(name).apply_async(args, kwargs, **options)

    def remote_task(self, name: str) -> RemoteTask:
        """The task ``name`` as its published schemas describe it (see send_task)."""
        with self._lock:
            remote = self._remote_tasks.get(name)
            if remote is None:
                remote = RemoteTask.from_schemas(self, name, self.settings.schemas_dir)
                self._remote_tasks[name] = remote
            return remote

    def ensure_topics(self, queues: list[str] | None = None) -> list[str]:
        """Create this app's topics that are missing; returns the names created."""
        s = self.settings
        specs = topic_specs(
            s.topic_prefix, queues or self.queues, s.partitions, s.replication_factor,
            result_expires_s=s.result_expires, revoke_expires_s=s.revoke_expires_s,
        )  # fmt: skip
        return self.broker.ensure_topics(s, specs)

    @property
    def control(self) -> Control:
        """Celery's ``app.control``: ``app.control.revoke(task_id, terminate=False)``."""
        with self._lock:
            if self._control is None:
                self._control = Control(self.settings, self.broker)
            return self._control

    @contextmanager
    def rebound(
        self, *, broker: Broker, store: ResultStore, settings: Settings | None = None
    ) -> Iterator[App]:
        """Within the block, the app sends through ``broker``, looks results up in
        ``store`` and reads ``settings`` (when given); its publisher and ``app.control``
        open anew, on ``broker``, when first used. On exit, closes what the block opened
        (that publisher and control, and ``store``) and gives the app back its broker,
        settings, store, publisher and control as they were, unclosed. This is how
        ``taskstream.testing.run`` runs an app's tasks on a stub broker."""
        with self._lock:
            saved = (self.broker, self.settings, self._store, self._publisher, self._control)
            self.broker, self._store, self._publisher, self._control = broker, store, None, None
            if settings is not None:
                self.settings = settings
        try:
            yield self
        finally:
            # Closed outside the lock: a publisher's last delivery callbacks may use the app.
            publisher, opened, control = self._publisher, self._store, self._control
            if publisher is not None:
                publisher.close(5.0)  # seconds at most: the block waited for its work
                atexit.unregister(publisher.close)
            if opened is not None:  # None when the block called close()
                opened.close()
            if control is not None:
                control.close()
            with self._lock:
                self.broker, self.settings, self._store, self._publisher, self._control = saved

    # -- results ----------------------------------------------------------------------------

    @property
    def store(self) -> ResultStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.store)
            return self._store

    def result(self, task_id: str) -> AsyncResult[Any]:
        """The AsyncResult for a task id from elsewhere."""
        return AsyncResult(task_id, self)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:
        """Celery's ``app.AsyncResult(id)``: the same as :meth:`result`."""
        return AsyncResult(task_id, self)

    def group_result(self, group_id: str) -> GroupResult | None:
        """The GroupResult of a group id from elsewhere, once the lookup store has seen one
        of its members (None before: the group's size is not known yet)."""
        from taskstream.canvas import member_id

        info = self.store.group(group_id)
        if info is None:
            return None
        members: list[AsyncResult[Any]] = [
            AsyncResult(member_id(group_id, i), self) for i in range(info.size)
        ]
        return GroupResult(group_id, members, self)

    def decode_result(self, task_name: str, data: bytes | None) -> Any:
        """A stored return value as Python: typed when this app knows the task, else the
        plain Avro datum found by fingerprint."""
        if data is None:
            return None
        if task_name == GROUP_RESULT_TASK:  # a group's list stored as one result
            members = self.envelopes.decode_group_value(data)
            return [self.decode_result(r.task, r.result) for r in members]
        task = self.tasks.get(task_name)
        if task is not None:
            return task.decode_result(data)
        return self.codec.decode(data)[1]

    def decode_results(self, results: list[ParentResult]) -> list[Any]:
        """:meth:`decode_result` of each, in order; in one pass when one task known here
        returned them all (a chord's members, usually)."""
        task = self.tasks.get(results[0].task) if results else None
        if task is None or any(r.task != task.name for r in results):
            return [self.decode_result(r.task, r.result) for r in results]
        return task.decode_results([r.result for r in results])

    def close(self) -> None:
        """Flush undelivered events and close the store."""
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                atexit.unregister(self._publisher.close)
                self._publisher = None
            if self._store is not None:
                self._store.close()
                self._store = None
            if self._control is not None:
                self._control.close()
                self._control = None
