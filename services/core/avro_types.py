"""Avro schemas from a task's type hints, and converters between Python values and datums.

Converters are built once per annotation (closures), because every task call encodes its
arguments and every worker decodes them. For int, float, str, bool, bytes and None they only
type-check. fastavro converts the logical types itself (aware datetime, date, UUID,
Decimal), so those pass through once checked.

    int -> long            float -> double         str -> string          bool -> boolean
    bytes -> bytes         None -> null            X | None -> ["null", X]
    list[X], Sequence[X], tuple[X, ...] -> array   dict[str, X], Mapping[str, X] -> map
    datetime -> timestamp-micros (aware only)      date -> date           UUID -> uuid
    Decimal -> decimal bytes, 38 digits, scale 10 (Annotated[Decimal, DecimalSpec(...)])
    Enum -> enum of member names                   dataclass -> record
"""

from __future__ import annotations

import base64
import collections.abc as abc
import copy
import dataclasses
import functools
import inspect
import json
import re
import reprlib
import sys
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from taskstream.errors import InvalidArguments, UnsupportedAnnotation

__all__ = ["AvroType", "DecimalSpec", "TaskSignature", "avro_type", "derive_signature"]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SUPPORTED = "int, float, str, bool, bytes, None, datetime, date, UUID, Decimal, Enum, " + (
    "dataclasses, list[X], tuple[X, ...], dict[str, X] and X | None"
)


@dataclass(frozen=True)
class DecimalSpec:
    """Digits in all, and after the point, of a Decimal: ``Annotated[Decimal, DecimalSpec(12, 2)]``.

    The default suits amounts up to 10**28 with 10 decimal places.
    """

    precision: int = 38
    scale: int = 10


@dataclass(frozen=True)
class AvroType:
    """An Avro schema and the converters between Python values and fastavro datums.

    ``to_avro(value, path)`` raises InvalidArguments naming the offending field below `path`;
    ``from_avro`` takes what fastavro's schemaless_reader returned.
    """

    schema: Any
    to_avro: Callable[[Any, str], Any]
    from_avro: Callable[[Any], Any]


class _Mismatch(ValueError):
    """A value that does not fit; containers add their path segment while it propagates."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.segments: list[str] = []

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.segments))


def _expected(what: str, value: Any) -> _Mismatch:
    return _Mismatch(f"expected {what}, got {type(value).__name__} {reprlib.repr(value)}")


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class _Conv:
    """Everything derived from one annotation."""

    schema: Any
    encode: Callable[[Any], Any]  # python -> datum; raises _Mismatch
    decode: Callable[[Any], Any]  # datum -> python
    from_json: Callable[[Any], Any]  # JSON value -> python; raises _Mismatch
    to_json: Callable[[Any], Any]  # python -> JSON value


def _check(label: str, accepts: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if accepts(v):
            return v
        raise _expected(label, v)

    return check


def _int(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        if _LONG_MIN <= v <= _LONG_MAX:
            return v
        raise _Mismatch(f"{v} does not fit in a 64-bit signed long")
    raise _expected("int", v)


def _float(v: Any) -> Any:
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) <= sys.float_info.max:
        return float(v)
    raise _expected("float", v)


def _aware(v: Any) -> Any:
    if not isinstance(v, datetime):
        raise _expected("datetime", v)
    if v.utcoffset() is None:  # fastavro would silently take a naive value as UTC
        raise _Mismatch(f"datetime {v.isoformat()} needs a timezone (e.g. tzinfo=UTC)")
    return v


def _b64encode(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


def _parsed(parse: Callable[[str], Any], check: Callable[[Any], Any], what: str) -> Any:
    """from_json for a type that JSON carries as a string: parse strings, then check."""

    def from_json(v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = parse(v)
            except (ValueError, ArithmeticError):  # decimal raises ArithmeticError subclasses
                raise _expected(what, v) from None
        return check(v)

    return from_json


def _leaf(schema: Any, check: Any, parse: Any = None, what: str = "", dump: Any = None) -> _Conv:
    """A type without parts; JSON carries it as a string that `parse` reads, if it has one."""
    from_json = check if parse is None else _parsed(parse, check, what)
    return _Conv(schema, check, _identity, from_json, dump or _identity)


def _logical(avro: str, logical: str) -> dict[str, str]:
    return {"type": avro, "logicalType": logical}


_is_bytes = _check("bytes", lambda v: isinstance(v, bytes))
_is_date = _check("date", lambda v: isinstance(v, date) and not isinstance(v, datetime))
_is_uuid = _check("UUID", lambda v: isinstance(v, uuid.UUID))
_b64decode = functools.partial(base64.b64decode, validate=True)
_LEAVES: dict[Any, _Conv] = {
    int: _leaf("long", _int),
    float: _leaf("double", _float),
    str: _leaf("string", _check("str", lambda v: isinstance(v, str))),
    bool: _leaf("boolean", _check("bool", lambda v: v is True or v is False)),
    None: _leaf("null", _check("None", lambda v: v is None)),
    bytes: _leaf("bytes", _is_bytes, _b64decode, "a base64 string", _b64encode),
    datetime: _leaf(
        _logical("long", "timestamp-micros"),
        _aware,
        datetime.fromisoformat,
        "an ISO-8601 datetime",
        datetime.isoformat,
    ),
    date: _leaf(
        _logical("int", "date"), _is_date, date.fromisoformat, "an ISO-8601 date", date.isoformat
    ),
    uuid.UUID: _leaf(_logical("string", "uuid"), _is_uuid, uuid.UUID, "a UUID string", str),
}
_LEAVES[type(None)] = _LEAVES[None]


def _decimal(spec: DecimalSpec) -> _Conv:
    precision, scale = spec.precision, spec.scale

    def encode(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = Decimal(v)
        elif not isinstance(v, Decimal):
            raise _expected("Decimal", v)
        if not v.is_finite():
            raise _Mismatch(f"{v} is not a finite Decimal")
        _, digits, exponent = v.as_tuple()
        assert isinstance(exponent, int)  # finite, so not 'n', 'N' or 'F'
        if -exponent > scale:  # rather than round: fastavro refuses it, and money would change
            raise _Mismatch(f"{v} has more than {scale} digits after the point")
        if len(digits) + exponent + scale > precision:
            raise _Mismatch(f"{v} has more than {precision - scale} digits before the point")
        return v

    parse = _parsed(Decimal, encode, "a decimal string or number")

    def from_json(v: Any) -> Any:
        # A float via repr(), so that 0.1 stays 0.1 rather than its binary expansion.
        return parse(repr(v) if isinstance(v, float) else v)

    schema = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    return _Conv(schema, encode, _identity, from_json, str)


def _is_list(v: Any) -> None:
    if not isinstance(v, list | tuple):
        raise _expected("list", v)


def _is_map(v: Any) -> None:
    if not isinstance(v, abc.Mapping):
        raise _expected("dict", v)
    for key in v:
        if not isinstance(key, str):
            raise _expected("str keys", key)


def _each(conv: Callable[[Any], Any], is_map: bool, check: Any = None) -> Callable[[Any], Any]:
    """Apply `conv` to each item of a list or each value of a dict, naming a failing one."""

    def convert(v: Any) -> Any:
        if check is not None:
            check(v)
        try:
            return {k: conv(x) for k, x in v.items()} if is_map else [conv(x) for x in v]
        except _Mismatch as exc:
            # Only now find which item failed, so that success stays a plain comprehension.
            items = ((json.dumps(k), x) for k, x in v.items()) if is_map else enumerate(v)
            exc.segments.append(next((f"[{k}]" for k, x in items if _fails(conv, x)), "[?]"))
            raise

    return convert


def _fails(conv: Callable[[Any], Any], value: Any) -> bool:
    try:
        conv(value)
    except _Mismatch:
        return True
    return False


def _container(item: _Conv, kind: str) -> _Conv:
    """An Avro array (for kind "list" or "tuple") or map of `item`."""
    is_map, check = kind == "map", _is_map if kind == "map" else _is_list
    decode = _identity if item.decode is _identity else _each(item.decode, is_map)
    if kind == "tuple":
        decode = functools.partial(lambda inner, d: tuple(inner(d)), decode)
    schema = (
        {"type": "map", "values": item.schema}
        if is_map
        else {"type": "array", "items": item.schema}
    )
    encode, from_json = _each(item.encode, is_map, check), _each(item.from_json, is_map, check)
    return _Conv(schema, encode, decode, from_json, _each(item.to_json, is_map))


def _optional(inner: _Conv) -> _Conv:
    def lift(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return _identity if conv is _identity else (lambda v: None if v is None else conv(v))

    convs = (inner.encode, inner.decode, inner.from_json, inner.to_json)
    return _Conv(["null", inner.schema], *(lift(c) for c in convs))


def _enum(cls: type[Enum], named: dict[str, str]) -> _Conv:
    members = {m.name: m for m in cls}

    def encode(v: Any) -> Any:
        if isinstance(v, cls):
            return v.name
        raise _expected(cls.__name__, v)

    def from_json(v: Any) -> Any:
        if isinstance(v, str) and v in members:
            return members[v]
        try:  # also a member's value, e.g. 1 for Priority.LOW = 1
            return cls(v)
        except ValueError:
            raise _expected(f"one of {', '.join(members)}", v) from None

    schema = {"type": "enum", **named, "symbols": list(members)}
    return _Conv(schema, encode, members.__getitem__, from_json, lambda v: v.name)


def _from_json_object(fields: list[tuple[str, _Conv, bool]], obj: Any, what: str) -> dict[str, Any]:
    """A JSON object -> keyword arguments, for dataclasses and for a task's arguments."""
    if not isinstance(obj, dict):
        raise _expected(f"a JSON object of {what}", obj)
    names = [name for name, _, _ in fields]
    for key in obj:
        if key not in names:
            exc = _Mismatch(f"unknown field of {what}; expected one of {', '.join(names)}")
            exc.segments.append(f".{key}")
            raise exc
    out = {}
    for name, conv, required in fields:
        try:
            if name in obj:
                out[name] = conv.from_json(obj[name])
            elif required:
                raise _Mismatch(f"missing required field of {what}")
        except _Mismatch as exc:
            exc.segments.append(f".{name}")
            raise
    return out


def _field(name: str, conv: _Conv, default: Any) -> dict[str, Any]:
    """A record field, with an Avro default where Avro can say what the Python default is."""
    out: dict[str, Any] = {"name": name, "type": conv.schema}
    s = conv.schema
    if default is None and isinstance(s, list) and s[0] == "null":
        out["default"] = None
    elif (s, type(default)) in (("boolean", bool), ("string", str), ("long", int)):
        out["default"] = default
    elif s == "double" and type(default) in (int, float):
        out["default"] = float(default)
    return out


def _sanitize(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return name if _AVRO_NAME.match(name) else f"_{name}"


def _sanitize_namespace(namespace: str) -> str:
    return ".".join(_sanitize(part) for part in namespace.split("."))


def _construct(cls: Any, datum: dict[str, Any]) -> Any:
    return cls(**datum)


class _Builder:
    """Builds one schema, defining each named type once (Avro forbids redefining one)."""

    def __init__(self, namespace: str, task: str, parameter: str) -> None:
        self.namespace = _sanitize_namespace(namespace)
        self.task, self.parameter = task, parameter
        self.owners: dict[str, Any] = {}  # full name -> the Python type defining it
        self.built: dict[type, list[_Conv]] = {}  # the list is empty while building

    def fail(self, annotation: Any, reason: str) -> UnsupportedAnnotation:
        return UnsupportedAnnotation(self.task, self.parameter, annotation, reason)

    def claim(self, owner: Any, name: str) -> dict[str, str]:
        full = f"{self.namespace}.{name}"
        if self.owners.setdefault(full, owner) is not owner:
            raise self.fail(owner, f"another type in this schema is also named {full!r}")
        return {"name": name, "namespace": self.namespace}

    def build(self, ann: Any, spec: DecimalSpec | None = None) -> _Conv:
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is typing.Annotated:
            found = [m for m in ann.__metadata__ if isinstance(m, DecimalSpec)]
            return self.build(args[0], found[-1] if found else spec)
        if origin is typing.Union or origin is types.UnionType:
            if len(args) != 2 or type(None) not in args:
                raise self.fail(
                    ann,
                    "only X | None unions are supported; for alternatives, "
                    "use a dataclass with optional fields",
                )
            return _optional(self.build(args[args[0] is type(None)], spec))
        if spec is not None and ann is not Decimal:
            raise self.fail(ann, "DecimalSpec applies to Decimal only")
        if ann is Decimal:
            spec = spec or DecimalSpec()
            if not 0 <= spec.scale <= spec.precision or spec.precision < 1:
                raise self.fail(ann, f"{spec} needs 0 <= scale <= precision, precision >= 1")
            return _decimal(spec)
        if ann is typing.Any:
            raise self.fail(ann, "Any has no Avro schema; use a concrete type")
        if (ann is None or isinstance(ann, type)) and ann in _LEAVES:
            return _LEAVES[ann]
        if (origin or ann) in (list, tuple, abc.Sequence, dict, abc.Mapping) and not args:
            raise self.fail(ann, "name the item types, e.g. list[int] or dict[str, int]")
        if origin in (list, tuple, abc.Sequence):
            if origin is tuple and (len(args) != 2 or args[1] is not ...):
                raise self.fail(ann, "only tuple[X, ...] is supported; use a dataclass")
            return _container(self.build(args[0]), "tuple" if origin is tuple else "list")
        if origin in (dict, abc.Mapping):
            if args[0] is not str:
                raise self.fail(ann, "Avro map keys are strings; use dict[str, X]")
            return _container(self.build(args[1]), "map")
        if isinstance(ann, type) and (issubclass(ann, Enum) or dataclasses.is_dataclass(ann)):
            return self.named(ann)
        raise self.fail(ann, f"no Avro mapping; supported: {_SUPPORTED}")

    def named(self, cls: type) -> _Conv:
        name = _sanitize(cls.__qualname__.replace(".", "_"))
        if cls in self.built:  # defined before: refer to it by its full name
            ref, cell = f"{self.namespace}.{name}", self.built[cls]
            if cell:
                return dataclasses.replace(cell[0], schema=ref)
            # It refers to itself and is still being built: look the converters up late.
            late = [
                functools.partial(lambda a, v: getattr(cell[0], a)(v), attr)
                for attr in ("encode", "decode", "from_json", "to_json")
            ]
            return _Conv(ref, *late)
        named = self.claim(cls, name)
        self.built[cls] = cell = []
        if issubclass(cls, Enum):
            bad = [m.name for m in cls if not _AVRO_NAME.match(m.name)]
            if bad or not len(cls):
                raise self.fail(cls, f"enum symbols must be Avro names, not {bad or 'none'}")
            cell.append(_enum(cls, named))
        else:
            cell.append(self.record(cls, named))
        return cell[0]

    def record(self, cls: Any, named: dict[str, str]) -> _Conv:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # NameError for a name that is not defined at module level
            raise self.fail(cls, f"cannot resolve the hints of {cls.__name__}: {exc}") from exc
        fields, schema_fields = [], []
        for f in dataclasses.fields(cls):
            if not f.init:  # set by __post_init__, so derived rather than data
                continue
            try:
                conv = self.build(hints[f.name])
            except UnsupportedAnnotation as exc:
                raise self.fail(exc.annotation, f"{cls.__name__}.{f.name}: {exc.reason}") from None
            fields.append((f.name, conv, f.default is MISSING and f.default_factory is MISSING))
            schema_fields.append(_field(f.name, conv, f.default))
        pairs = [(name, conv) for name, conv, _ in fields]

        def encode(v: Any) -> Any:
            if not isinstance(v, cls):
                raise _expected(cls.__name__, v)
            out = {}
            for name, conv in pairs:
                try:
                    out[name] = conv.encode(getattr(v, name))
                except _Mismatch as exc:
                    exc.segments.append(f".{name}")
                    raise
            return out

        def decode(d: Any) -> Any:
            return cls(**{name: conv.decode(d[name]) for name, conv in pairs})

        if all(conv.decode is _identity for _, conv in pairs):
            decode = functools.partial(_construct, cls)  # fastavro's dict holds the values

        def from_json(v: Any) -> Any:
            return cls(**_from_json_object(fields, v, cls.__name__))

        def to_json(v: Any) -> Any:
            return {name: conv.to_json(getattr(v, name)) for name, conv in pairs}

        schema = {"type": "record", **named, "fields": schema_fields}
        return _Conv(schema, encode, decode, from_json, to_json)


def avro_type(
    annotation: Any, *, namespace: str, task: str = "?", parameter: str = "?"
) -> AvroType:
    """The Avro schema of `annotation` and its converters; named types go in `namespace`.

    Raises UnsupportedAnnotation, naming `task` and `parameter`, if it has no Avro mapping.
    """
    conv = _Builder(namespace, task, parameter).build(annotation)
    encode = conv.encode

    def to_avro(value: Any, path: str) -> Any:
        try:
            return encode(value)
        except _Mismatch as exc:
            raise InvalidArguments(task, exc.path(path), exc.message) from None

    return AvroType(copy.deepcopy(conv.schema), to_avro, conv.decode)


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
    _args: tuple[_Conv, ...] = field(repr=False, compare=False)
    _required: frozenset[str] = field(repr=False, compare=False)
    _result: _Conv = field(repr=False, compare=False)
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
            except _Mismatch as exc:
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
        except _Mismatch as exc:
            raise InvalidArguments(self.task, exc.path("result"), exc.message) from None

    def result_from_avro(self, datum: Any) -> Any:
        """A result datum fastavro read -> the Python value."""
        return self._result.decode(datum)

    def args_from_json(self, obj: Any) -> dict[str, Any]:
        """A JSON object of arguments by name -> keyword arguments (omitted defaults stay out).

        datetime and date from ISO-8601 strings, UUID from a string, Decimal from a string or
        number, bytes from base64, Enum by member name (or value), dataclass from an object.
        """
        fields = [
            (n, c, n in self._required) for n, c in zip(self.parameters, self._args, strict=True)
        ]
        try:
            return _from_json_object(fields, obj, f"task {self.task!r}")
        except _Mismatch as exc:
            raise InvalidArguments(self.task, exc.path("args"), exc.message) from None

    def result_to_json(self, value: Any) -> Any:
        """A return value -> JSON-able data, the inverse conventions of args_from_json."""
        return self._result.to_json(value)


def _args_record_name(task: str) -> tuple[str, str]:
    """(namespace, name) of a task's argument record: ``app.tasks.add`` -> app.tasks.add_args."""
    namespace, _, last = task.rpartition(".")
    return _sanitize_namespace(namespace or "taskstream.tasks"), _sanitize(f"{last}_args")


def _unresolved(func: Callable[..., Any]) -> tuple[str, Any]:
    """The first parameter whose string annotation does not evaluate, as get_type_hints does."""
    for name, annotation in getattr(func, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                eval(annotation, getattr(func, "__globals__", {}))
            except Exception:
                return name, annotation
    return "?", None


def derive_signature(func: Callable[..., Any], task: str) -> TaskSignature:
    """Derive the argument record and result schema of `func`, registered as `task`.

    Raises UnsupportedAnnotation at decoration time for anything without an Avro mapping.
    """
    namespace, record_name = _args_record_name(task)
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # NameError for an undefined name in a string annotation
        name, annotation = _unresolved(func)
        raise UnsupportedAnnotation(task, name, annotation, f"cannot resolve it: {exc}") from exc
    builder = _Builder(namespace, task, "?")
    record = builder.claim(TaskSignature, record_name)
    convs, fields, required, params = [], [], set(), []
    for p in sig.parameters.values():
        builder.parameter = p.name
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise builder.fail(p.annotation, "*args and **kwargs have no schema; name each one")
        if p.name not in hints:
            raise builder.fail(p.annotation, f"annotate it, e.g. `{p.name}: int`")
        if not _AVRO_NAME.match(p.name):
            raise builder.fail(p.annotation, "the name is not a valid Avro field name")
        conv = builder.build(hints[p.name])
        if p.default is p.empty:
            required.add(p.name)
        else:
            try:
                conv.encode(p.default)
            except _Mismatch as exc:
                raise builder.fail(hints[p.name], f"the default does not fit: {exc}") from None
        convs.append(conv)
        fields.append(_field(p.name, conv, MISSING if p.default is p.empty else p.default))
        # Arguments arrive by name from messages and JSON, so bind positional-only by name too.
        kind = p.POSITIONAL_OR_KEYWORD if p.kind is p.POSITIONAL_ONLY else p.kind
        params.append(p.replace(kind=kind))
    if "return" not in hints:
        raise UnsupportedAnnotation(
            task, "return", sig.return_annotation, "annotate it; use -> None for no result"
        )
    result = _Builder(namespace, task, "return").build(hints["return"])
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
