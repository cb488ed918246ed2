"""Task: a function registered with an app, with Avro schemas derived from its type hints."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from taskstream.avro_types import TaskSignature, derive_signature
from taskstream.codec import AvroSchema
from taskstream.envelope import TaskEvent, now_micros

if TYPE_CHECKING:
    from taskstream.app import App
    from taskstream.producer.result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A registered task. Call it to run it here; ``delay`` to run it on a worker."""

    def __init__(
        self,
        app: App,
        func: Callable[P, R],
        *,
        name: str,
        queue: str,
    ) -> None:
        self.app = app
        self.func = func
        self.name = name
        self.queue = queue
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature: TaskSignature = derive_signature(func, name)
        codec = app.codec
        self.args_schema: AvroSchema = codec.register(self.signature.args_schema)
        self.result_schema: AvroSchema = codec.register(self.signature.result_schema)
        self._positional_only = tuple(
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.kind is inspect.Parameter.POSITIONAL_ONLY
        )
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def invoke(self, kwargs: dict[str, Any]) -> Any:
        """Run the function with decoded arguments (by name, positional-only ones by place)."""
        if self._positional_only:
            args = [kwargs.pop(name) for name in self._positional_only]
            return self.func(*args, **kwargs)
        return self.func(**kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task to a worker; returns at once. Arguments are checked against the
        task's schema here, before anything is sent (InvalidArguments)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        queue: str | None = None,
        task_id: str | None = None,
    ) -> AsyncResult[R]:
        """Send the task with options. ``key``: events with one key go to one partition and
        run in order. ``queue``: another queue than the task's own."""
        event = self.event(
            self.encode_args(args, kwargs or {}), key=key, queue=queue, task_id=task_id
        )
        return self.app.publish(event)

    def event(
        self,
        encoded_args: bytes,
        *,
        key: str | None = None,
        queue: str | None = None,
        task_id: str | None = None,
    ) -> TaskEvent:
        return TaskEvent(
            id=task_id or str(uuid.uuid4()),
            task=self.name,
            queue=queue or self.queue,
            key=key,
            attempt=1,
            enqueued_at=now_micros(),
            not_before=None,
            args=encoded_args,
        )

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return self.app.codec.encode(self.args_schema, self.signature.args_to_avro(args, kwargs))

    def decode_args(self, data: bytes) -> dict[str, Any]:
        return self.signature.args_from_avro(self.app.codec.decode_as(self.args_schema, data))

    def encode_result(self, value: Any) -> bytes:
        return self.app.codec.encode(self.result_schema, self.signature.result_to_avro(value))

    def decode_result(self, data: bytes) -> Any:
        return self.signature.result_from_avro(self.app.codec.decode_as(self.result_schema, data))
