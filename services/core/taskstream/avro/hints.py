"""Avro schemas from type hints: each annotation maps to a schema and its converters.

    int -> long            float -> double         str -> string          bool -> boolean
    bytes -> bytes         None -> null            X | None -> ["null", X]
    list[X], Sequence[X], tuple[X, ...] -> array   dict[str, X], Mapping[str, X] -> map
    datetime -> timestamp-micros (aware only)      date -> date           UUID -> uuid
    Decimal -> decimal bytes, 38 digits, scale 10 (Annotated[Decimal, DecimalSpec(...)])
    Enum -> enum of member names                   dataclass -> record

The converters themselves are in taskstream.avro.values; a task's whole signature is in
taskstream.signature.
"""

from __future__ import annotations

import collections.abc as abc
import copy
import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from taskstream.avro import values as values
from taskstream.avro.values import Conv, Mismatch
from taskstream.errors import InvalidArguments, UnsupportedAnnotation

__all__ = ["AvroType", "DecimalSpec", "avro_type"]

AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
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


def field_schema(name: str, conv: Conv, default: Any) -> dict[str, Any]:
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


def sanitize(name: str) -> str:
    """`name` as an Avro name: other characters become ``_``, a leading digit gets one."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return name if AVRO_NAME.match(name) else f"_{name}"


def sanitize_namespace(namespace: str) -> str:
    return ".".join(sanitize(part) for part in namespace.split("."))


_SEQUENCES: tuple[Any, ...] = (list, tuple, abc.Sequence)  # an Avro array
_MAPPINGS: tuple[Any, ...] = (dict, abc.Mapping)  # an Avro map
_CONTAINERS = _SEQUENCES + _MAPPINGS


class SchemaBuilder:
    """Builds one schema, defining each named type once (Avro forbids redefining one).

    Errors are UnsupportedAnnotation naming `task` and `parameter` (which callers may move on
    from one parameter to the next).
    """

    def __init__(self, namespace: str, task: str, parameter: str) -> None:
        self.namespace = sanitize_namespace(namespace)
        self.task, self.parameter = task, parameter
        self.owners: dict[str, Any] = {}  # full name -> the Python type defining it
        self.built: dict[type, list[Conv]] = {}  # the list is empty while building

    def fail(self, annotation: Any, reason: str) -> UnsupportedAnnotation:
        return UnsupportedAnnotation(self.task, self.parameter, annotation, reason)

    def claim(self, owner: Any, name: str) -> dict[str, str]:
        full = f"{self.namespace}.{name}"
        if self.owners.setdefault(full, owner) is not owner:
            raise self.fail(owner, f"another type in this schema is also named {full!r}")
        return {"name": name, "namespace": self.namespace}

    def build(self, ann: Any, spec: DecimalSpec | None = None) -> Conv:
        """Dispatches on the kind of annotation; each kind with rules of its own has a method."""
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is typing.Annotated:
            found = [m for m in ann.__metadata__ if isinstance(m, DecimalSpec)]
            return self.build(args[0], found[-1] if found else spec)
        if origin is typing.Union or origin is types.UnionType:
            return self.union(ann, args, spec)
        if spec is not None or ann is Decimal:
            return self.decimal(ann, spec)
        if ann is typing.Any:
            raise self.fail(ann, "Any has no Avro schema; use a concrete type")
        if (ann is None or isinstance(ann, type)) and ann in values.LEAVES:
            return values.LEAVES[ann]
        if (origin or ann) in _CONTAINERS:
            return self.container(ann, origin, args)
        if isinstance(ann, type) and (issubclass(ann, Enum) or dataclasses.is_dataclass(ann)):
            return self.named(ann)
        raise self.fail(ann, f"no Avro mapping; supported: {_SUPPORTED}")

    def union(self, ann: Any, args: tuple[Any, ...], spec: DecimalSpec | None) -> Conv:
        if len(args) != 2 or type(None) not in args:
            raise self.fail(
                ann,
                "only X | None unions are supported; for alternatives, "
                "use a dataclass with optional fields",
            )
        return values.optional(self.build(args[args[0] is type(None)], spec))

    def decimal(self, ann: Any, spec: DecimalSpec | None) -> Conv:
        if ann is not Decimal:
            raise self.fail(ann, "DecimalSpec applies to Decimal only")
        spec = spec or DecimalSpec()
        if not 0 <= spec.scale <= spec.precision or spec.precision < 1:
            raise self.fail(ann, f"{spec} needs 0 <= scale <= precision, precision >= 1")
        return values.decimal(spec.precision, spec.scale)

    def container(self, ann: Any, origin: Any, args: tuple[Any, ...]) -> Conv:
        """A list, tuple, sequence, dict or mapping: an Avro array or map."""
        if not args:
            raise self.fail(ann, "name the item types, e.g. list[int] or dict[str, int]")
        if origin in _MAPPINGS:
            if args[0] is not str:
                raise self.fail(ann, "Avro map keys are strings; use dict[str, X]")
            return values.container(self.build(args[1]), "map")
        if origin is tuple and (len(args) != 2 or args[1] is not ...):
            raise self.fail(ann, "only tuple[X, ...] is supported; use a dataclass")
        return values.container(self.build(args[0]), "tuple" if origin is tuple else "list")

    def named(self, cls: type) -> Conv:
        name = sanitize(cls.__qualname__.replace(".", "_"))
        if cls in self.built:  # defined before: refer to it by its full name
            ref, cell = f"{self.namespace}.{name}", self.built[cls]
            return dataclasses.replace(cell[0], schema=ref) if cell else values.late(cell, ref)
        named = self.claim(cls, name)
        self.built[cls] = cell = []
        if issubclass(cls, Enum):
            bad = [m.name for m in cls if not AVRO_NAME.match(m.name)]
            if bad or not len(cls):
                raise self.fail(cls, f"enum symbols must be Avro names, not {bad or 'none'}")
            cell.append(values.enum(cls, named))
        else:
            cell.append(self.record(cls, named))
        return cell[0]

    def record(self, cls: Any, named: dict[str, str]) -> Conv:
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
            fields.append((f.name, conv))
            schema_fields.append(field_schema(f.name, conv, f.default))
        schema = {"type": "record", **named, "fields": schema_fields}
        return values.record(cls, fields, schema)


def avro_type(
    annotation: Any, *, namespace: str, task: str = "?", parameter: str = "?"
) -> AvroType:
    """The Avro schema of `annotation` and its converters; named types go in `namespace`.

    Raises UnsupportedAnnotation, naming `task` and `parameter`, if it has no Avro mapping.
    """
    conv = SchemaBuilder(namespace, task, parameter).build(annotation)
    encode = conv.encode

    def to_avro(value: Any, path: str) -> Any:
        try:
            return encode(value)
        except Mismatch as exc:
            raise InvalidArguments(task, exc.path(path), exc.message) from None

    # A copy, because leaf schemas are shared module-wide and callers may annotate theirs.
    return AvroType(copy.deepcopy(conv.schema), to_avro, conv.decode)
