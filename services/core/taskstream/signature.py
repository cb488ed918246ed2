"""A task's signature: its argument record and result schema, and binding a call to them.

``derive_signature(func, name)`` reads the type hints once, at decoration time
(taskstream.avro.hints maps each one); the TaskSignature it returns binds and encodes a
call's arguments like Python would, and decodes them again in the worker. JSON arguments (the
CLI's) go through the one JSON converter, taskstream.avro.json, as the HTTP service's do.
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any

from taskstream.avro.hints import (
    AVRO_NAME,
    SchemaBuilder,
    field_schema,
    sanitize,
    sanitize_namespace,
)
from taskstream.avro.json import JsonConverter, datum_to_json
from taskstream.avro.values import Conv, Mismatch
from taskstream.errors import InvalidArguments, UnsupportedAnnotation

__all__ = ["TaskSignature", "derive_signature"]


@dataclass(frozen=True)
class TaskSignature:
    """A task's argument record and result schema, with converters for both.

    Build it with derive_signature(); errors name the field, e.g. ``args.user.age``.
    """

    task: str
    parameters: tuple[str, ...]
    args_schema: dict[str, Any]
    result_schema: Any
    _bind: inspect.Signature = field(repr=False, compare=False)
    _args: tuple[Conv, ...] = field(repr=False, compare=False)
    _required: frozenset[str] = field(repr=False, compare=False)
    _result: Conv = field(repr=False, compare=False)
    # A call passing the first n (>= _fewest) arguments positionally skips inspect's bind():
    # defaults[n:] fills the rest. _fewest is -1 with keyword-only parameters.
    _fewest: int = field(repr=False, compare=False)
    _defaults: tuple[Any, ...] = field(repr=False, compare=False)

    def args_to_avro(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Bind a call's arguments like Python would (with defaults) and encode them."""
        if not kwargs and 0 <= self._fewest <= len(args) <= len(self.parameters):
            values: Any = args + self._defaults[len(args) :]
        else:
            try:
                bound = self._bind.bind(*args, **kwargs)
            except TypeError as exc:
                raise self._bind_error(args, kwargs, str(exc)) from None
            bound.apply_defaults()
            values = bound.arguments.values()
        out = {}
        for name, conv, value in zip(self.parameters, self._args, values, strict=True):
            try:
                out[name] = conv.encode(value)
            except Mismatch as exc:
                raise InvalidArguments(self.task, exc.path(f"args.{name}"), exc.message) from None
        return out

    def _bind_error(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], why: str
    ) -> InvalidArguments:
        """Name the argument in a bind() failure where there is one to name."""
        unknown = [name for name in kwargs if name not in self.parameters]
        if unknown:
            return InvalidArguments(self.task, f"args.{unknown[0]}", "unexpected argument")
        given = set(self.parameters[: len(args)]) | set(kwargs)
        missing = [name for name in self.parameters if name in self._required - given]
        if missing and len(args) <= len(self.parameters):
            return InvalidArguments(self.task, f"args.{missing[0]}", "missing required argument")
        return InvalidArguments(self.task, "args", why)

    def args_from_avro(self, datum: dict[str, Any]) -> dict[str, Any]:
        """A datum fastavro read -> keyword arguments, in parameter order.

        Positional-only parameters are included by name too; they must be passed positionally.
        """
        return {
            name: conv.decode(datum[name])
            for name, conv in zip(self.parameters, self._args, strict=True)
        }

    def result_to_avro(self, value: Any) -> Any:
        """Encode a return value; InvalidArguments with path ``result...`` if it does not fit."""
        try:
            return self._result.encode(value)
        except Mismatch as exc:
            raise InvalidArguments(self.task, exc.path("result"), exc.message) from None

    def result_from_avro(self, datum: Any) -> Any:
        """A result datum fastavro read -> the Python value."""
        return self._result.decode(datum)

    @functools.cached_property
    def _json(self) -> JsonConverter:
        return JsonConverter(self.args_schema)

    def args_from_json(self, obj: Any) -> dict[str, Any]:
        """A JSON object of arguments by name -> keyword arguments (omitted defaults stay out,
        for the call to fill in), by the conventions of taskstream.avro.json."""
        datum = self._json.to_datum(obj, task=self.task, root="args", partial=True)
        for name in self.parameters:
            if name in self._required and name not in datum:
                what = f"missing required field of task {self.task!r}"
                raise InvalidArguments(self.task, f"args.{name}", what)
        return {
            name: conv.decode(datum[name])
            for name, conv in zip(self.parameters, self._args, strict=True)
            if name in datum
        }

    def result_to_json(self, value: Any) -> Any:
        """A return value -> JSON-able data, the inverse conventions of args_from_json."""
        return datum_to_json(self.result_to_avro(value))


def tail_signature(sig: TaskSignature) -> TaskSignature:
    """``sig`` without its first parameter: the arguments a workflow step is sent with when
    the parent's result becomes that first argument (Celery's ``add.s(10)`` after a step
    returning 5 runs ``add(5, 10)``). Its record is named ``<task>_args_tail``."""
    params = list(sig._bind.parameters.values())[1:]
    keyword_only = any(p.kind is p.KEYWORD_ONLY for p in params)
    fewest = max((i + 1 for i, p in enumerate(params) if p.default is p.empty), default=0)
    record = {
        **sig.args_schema,
        "name": f"{sig.args_schema['name']}_tail",
        "fields": sig.args_schema["fields"][1:],
    }
    return TaskSignature(
        task=sig.task,
        parameters=sig.parameters[1:],
        args_schema=copy.deepcopy(record),
        result_schema=sig.result_schema,
        _bind=sig._bind.replace(parameters=params),
        _args=sig._args[1:],
        _required=sig._required - {sig.parameters[0]},
        _result=sig._result,
        _fewest=-1 if keyword_only else fewest,
        _defaults=sig._defaults[1:],
    )


def _args_record_name(task: str) -> tuple[str, str]:
    """(namespace, name) of a task's argument record: ``app.tasks.add`` -> app.tasks.add_args."""
    namespace, _, last = task.rpartition(".")
    return sanitize_namespace(namespace or "taskstream.tasks"), sanitize(f"{last}_args")


def _unresolved(func: Callable[..., Any]) -> tuple[str, Any]:
    """The first parameter whose string annotation does not evaluate, as get_type_hints does."""
    for name, annotation in getattr(func, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                eval(annotation, getattr(func, "__globals__", {}))
            except Exception:
                return name, annotation
    return "?", None


def derive_signature(func: Callable[..., Any], task: str, *, bound: bool = False) -> TaskSignature:
    """Derive the argument record and result schema of `func`, registered as `task`.

    ``bound``: the first parameter is the task itself (``@app.task(bind=True)``), not an
    argument. Raises UnsupportedAnnotation at decoration time for anything without an Avro
    mapping.
    """
    namespace, record_name = _args_record_name(task)
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # NameError for an undefined name in a string annotation
        name, annotation = _unresolved(func)
        raise UnsupportedAnnotation(task, name, annotation, f"cannot resolve it: {exc}") from exc
    builder = SchemaBuilder(namespace, task, "?")
    record = builder.claim(TaskSignature, record_name)
    convs, fields, required, params = [], [], set(), []
    for p in list(sig.parameters.values())[1 if bound else 0 :]:
        builder.parameter = p.name
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise builder.fail(p.annotation, "*args and **kwargs have no schema; name each one")
        if p.name not in hints:
            raise builder.fail(p.annotation, f"annotate it, e.g. `{p.name}: int`")
        if not AVRO_NAME.match(p.name):
            raise builder.fail(p.annotation, "the name is not a valid Avro field name")
        conv = builder.build(hints[p.name])
        if p.default is p.empty:
            required.add(p.name)
        else:
            try:
                conv.encode(p.default)
            except Mismatch as exc:
                raise builder.fail(hints[p.name], f"the default does not fit: {exc}") from None
        convs.append(conv)
        fields.append(field_schema(p.name, conv, MISSING if p.default is p.empty else p.default))
        # Arguments arrive by name from messages and JSON, so bind positional-only by name too.
        kind = p.POSITIONAL_OR_KEYWORD if p.kind is p.POSITIONAL_ONLY else p.kind
        params.append(p.replace(kind=kind))
    if "return" not in hints:
        raise UnsupportedAnnotation(
            task, "return", sig.return_annotation, "annotate it; use -> None for no result"
        )
    result = SchemaBuilder(namespace, task, "return").build(hints["return"])
    keyword_only = any(p.kind is p.KEYWORD_ONLY for p in params)
    fewest = max((i + 1 for i, p in enumerate(params) if p.default is p.empty), default=0)
    return TaskSignature(
        task=task,
        parameters=tuple(p.name for p in params),
        # Copies, because leaf schemas are shared module-wide and callers may annotate theirs.
        args_schema=copy.deepcopy({"type": "record", **record, "fields": fields}),
        result_schema=copy.deepcopy(result.schema),
        _bind=sig.replace(parameters=params),
        _args=tuple(convs),
        _required=frozenset(required),
        _result=result,
        _fewest=-1 if keyword_only else fewest,
        _defaults=tuple(p.default for p in params),
    )
