"""Avro schemas as JSON Schema (2020-12, as OpenAPI 3.1 uses), by the conventions of
taskstream.avro.json: what a request body must look like for a task's argument record."""

from __future__ import annotations

from typing import Any

from taskstream.avro.json import full_name
from taskstream.errors import InvalidSchema

_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_LOGICAL: dict[str, dict[str, Any]] = {
    "timestamp-millis": {"type": "string", "format": "date-time"},
    "timestamp-micros": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    "time-millis": {"type": "string", "format": "time"},
    "time-micros": {"type": "string", "format": "time"},
    "uuid": {"type": "string", "format": "uuid"},
}


class JsonSchemas:
    """Converts Avro schemas; named types go to ``defs`` and are referred to by $ref."""

    def __init__(self, ref_prefix: str = "#/components/schemas/") -> None:
        self.ref_prefix = ref_prefix
        self.defs: dict[str, Any] = {}
        self._known: dict[str, str] = {}  # Avro full name -> defs key

    def convert(self, schema: Any, namespace: str = "") -> dict[str, Any]:
        if isinstance(schema, list):
            branches = [self.convert(s, namespace) for s in schema]
            return {"anyOf": branches}
        if isinstance(schema, str):
            return self._named_or_primitive(schema, namespace)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical in _LOGICAL:
            return dict(_LOGICAL[logical])
        if logical == "decimal" and kind == "bytes":
            return {
                "anyOf": [
                    {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
                    {"type": "number"},
                ],
                "description": (
                    f"decimal, precision {schema['precision']}, scale {schema.get('scale', 0)}"
                ),
            }
        if kind in ("record", "error", "enum", "fixed"):
            return self._define(schema, namespace)
        if kind == "array":
            return {"type": "array", "items": self.convert(schema["items"], namespace)}
        if kind == "map":
            return {
                "type": "object",
                "additionalProperties": self.convert(schema["values"], namespace),
            }
        return self._named_or_primitive(kind, namespace)

    def _named_or_primitive(self, name: str, namespace: str) -> dict[str, Any]:
        if name == "null":
            return {"type": "null"}
        if name == "boolean":
            return {"type": "boolean"}
        if name in _INT_RANGES:
            low, high = _INT_RANGES[name]
            return {"type": "integer", "minimum": low, "maximum": high}
        if name in ("float", "double"):
            return {"type": "number"}
        if name == "string":
            return {"type": "string"}
        if name == "bytes":
            return {"type": "string", "contentEncoding": "base64"}
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        key = self._known.get(full) or self._known.get(name)
        if key is None:
            raise InvalidSchema(f"unknown named type {name!r}")
        return {"$ref": self.ref_prefix + key}

    def _define(self, schema: dict[str, Any], namespace: str) -> dict[str, Any]:
        full = full_name(schema, namespace)
        inner_ns = full.rpartition(".")[0]
        key = full
        self._known[full] = key
        kind = schema["type"]
        out: dict[str, Any]
        if kind == "enum":
            out = {"type": "string", "enum": list(schema["symbols"])}
        elif kind == "fixed":
            out = {"type": "string", "contentEncoding": "base64",
                   "description": f"{schema['size']} bytes, base64"}  # fmt: skip
        else:
            properties = {f["name"]: self.convert(f["type"], inner_ns) for f in schema["fields"]}
            out = {
                "type": "object",
                "properties": properties,
                "required": [f["name"] for f in schema["fields"] if "default" not in f],
                "additionalProperties": False,
            }
        if schema.get("doc"):
            out["description"] = schema["doc"]
        self.defs[key] = out
        return {"$ref": self.ref_prefix + key}


def standalone(schema: Any) -> dict[str, Any]:
    """One self-contained JSON Schema (named types under ``$defs``)."""
    converter = JsonSchemas(ref_prefix="#/$defs/")
    root = converter.convert(schema)
    if converter.defs:
        root = {**root, "$defs": converter.defs}
    return root
