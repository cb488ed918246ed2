"""Whether data written with one Avro schema can be read with another (schema resolution).

Two uses: ``taskstream schemas check`` proves that a changed envelope stays backward
compatible (an older reader decodes the new events), and the typed canvas proves, before a
workflow is sent, that a step's return value fits the parameter it lands in. The rules are
the specification's "Schema Resolution": promotions int -> long -> float -> double,
string <-> bytes; a record's reader fields must be in the writer or have a default; an enum
writer's symbols must be known to the reader unless it has a default; a union reader takes
a writer that fits any branch, a union writer needs every branch to fit.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["incompatibility"]

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))

Names = dict[str, Any]

# The (writer, reader) record pairs a check has begun: a recursive type (a Flow's nodes are
# Flows) meets its pair again inside itself, where it is taken as fitting (coinduction); a
# field that does not fit is found where the pair was first met.
_begun = threading.local()


def incompatibility(writer: Any, reader: Any) -> str | None:
    """None when data written with ``writer`` reads as ``reader``, else why not (a path)."""
    _begun.pairs = set()
    try:
        return _check(writer, reader, {}, {}, "")
    finally:
        _begun.pairs = set()


def _full_name(schema: dict[str, Any], namespace: str) -> str:
    name: str = schema["name"]
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _resolve(schema: Any, names: Names, namespace: str) -> tuple[Any, str]:
    """The schema a name refers to; records, enums and fixed are remembered by name."""
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        key = schema if "." in schema else (f"{namespace}.{schema}" if namespace else schema)
        found = names.get(key, names.get(schema))
        if found is None:
            return schema, namespace
        return found, found.get("namespace", namespace) if isinstance(found, dict) else namespace
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        full = _full_name(schema, namespace)
        names.setdefault(full, schema)
        names.setdefault(schema["name"].rpartition(".")[2], schema)
        namespace = full.rpartition(".")[0]
    return schema, namespace


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) else _kind(kind)
    return str(schema)


def _check(writer: Any, reader: Any, wn: Names, rn: Names, path: str, ns: str = "") -> str | None:
    writer, wns = _resolve(writer, wn, ns)
    reader, rns = _resolve(reader, rn, ns)
    wk, rk = _kind(writer), _kind(reader)
    where = path or "the value"
    if wk == "union":
        for branch in writer:
            why = _check(branch, reader, wn, rn, path, wns)
            if why is not None:
                return why
        return None
    if rk == "union":
        for branch in reader:
            if _check(writer, branch, wn, rn, path, rns) is None:
                return None
        return f"{where}: {_show(writer)} fits no branch of {_show(reader)}"
    if isinstance(writer, dict) and isinstance(writer["type"], (dict, list)):
        return _check(writer["type"], reader, wn, rn, path, wns)
    if isinstance(reader, dict) and isinstance(reader["type"], (dict, list)):
        return _check(writer, reader["type"], wn, rn, path, rns)
    return _same_kind(writer, reader, wn, rn, path, wns)


def _same_kind(writer: Any, reader: Any, wn: Names, rn: Names, path: str, wns: str) -> str | None:
    """Neither is a union nor a wrapped type: primitives promote, the rest must match."""
    wk, rk = _kind(writer), _kind(reader)
    where = path or "the value"
    if wk in _PROMOTIONS or wk in ("null", "boolean"):
        if rk in _PROMOTIONS.get(wk, {wk}):
            return _logical(writer, reader, where)
        return f"{where}: {_show(writer)} cannot be read as {_show(reader)}"
    if wk != rk:
        return f"{where}: {_show(writer)} cannot be read as {_show(reader)}"
    if wk == "array":
        return _check(writer["items"], reader["items"], wn, rn, f"{path}[]", wns)
    if wk == "map":
        return _check(writer["values"], reader["values"], wn, rn, f"{path}{{}}", wns)
    if wk == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return f"{where}: the reader's enum lacks {sorted(missing)} and has no default"
        return None
    if wk == "fixed":
        if writer["size"] != reader["size"]:
            return f"{where}: fixed of {writer['size']} bytes read as {reader['size']}"
        return None
    return _record(writer, reader, wn, rn, path, wns)


def _record(writer: Any, reader: Any, wn: Names, rn: Names, path: str, ns: str) -> str | None:
    pairs: set[tuple[int, int]] = _begun.pairs
    if (id(writer), id(reader)) in pairs:
        return None
    pairs.add((id(writer), id(reader)))
    written = {f["name"]: f for f in writer["fields"]}
    for field in reader["fields"]:
        name = f"{path}.{field['name']}" if path else field["name"]
        source = written.get(field["name"])
        if source is None:
            if "default" not in field:
                return f"{name}: the reader needs it and the writer has no such field"
            continue
        why = _check(source["type"], field["type"], wn, rn, name, ns)
        if why is not None:
            return why
    return None


def _logical(writer: Any, reader: Any, where: str) -> str | None:
    w = writer.get("logicalType") if isinstance(writer, dict) else None
    r = reader.get("logicalType") if isinstance(reader, dict) else None
    if w != r and r is not None:
        return f"{where}: {w or 'a plain value'} cannot be read as {r}"
    return None


def _show(schema: Any) -> str:
    if isinstance(schema, dict):
        if "name" in schema:
            return str(schema["name"])
        if schema.get("type") == "array":
            return f"array of {_show(schema['items'])}"
        if schema.get("type") == "map":
            return f"map of {_show(schema['values'])}"
        return str(schema.get("logicalType") or schema["type"])
    if isinstance(schema, list):
        return " | ".join(_show(s) for s in schema)
    return str(schema)
