"""The OpenAPI 3.1 document of the service, built from its task catalog.

Each task gets its own ``POST /v1/tasks/<name>`` and ``POST /v1/tasks/<name>:batch`` with the
JSON Schema of its argument record, so clients and fuzzers see exactly what is accepted.
"""

from __future__ import annotations

from typing import Any

from taskstream.text import MAX_ID_CHARS

from .catalog import Catalog
from .jsonschema import JsonSchemas

# What taskstream.text.id_problem accepts: no control characters, at most MAX_ID_CHARS
# characters; a task id has no "/".
KEY_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
    "pattern": "^[^\\u0000-\\u001f\\u007f]+$",
}  # fmt: skip
# Celery's priority: 0 (lowest) to 9 (highest); 5 and above go to the queue's high band.
PRIORITY_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 9}
TASK_ID_SCHEMA = {**KEY_SCHEMA, "pattern": "^[^/\\u0000-\\u001f\\u007f]+$"}

REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = headers
    return out


_ERROR = _ref("Error")
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}
_LOCATION = {
    "Location": {"description": "where to read the task's outcome", "schema": {"type": "string"}}
}


def _errors(*codes: int, auth: bool) -> dict[str, Any]:
    texts = {
        400: "malformed JSON",
        403: "a write sent by a browser page of another origin (Sec-Fetch-Site, Origin)",
        404: "unknown task or task id",
        409: "the Idempotency-Key was used before with a different request",
        413: "request body over the size limit, or a task event over the producer's "
        "message.max.bytes (error.size and error.limit, in bytes)",
        415: "content type is not application/json",
        422: "the request does not fit the schema (error.path names the field)",
    }
    out = {str(c): _json(_ERROR, texts[c]) for c in codes}
    if auth:
        out["401"] = _json(_ERROR, "missing or invalid bearer token")
    # Every route, before any other check (taskstream.producer.http.origins).
    out["421"] = _json(_ERROR, "the Host is not served here (TASKSTREAM_HTTP_ALLOWED_HOSTS)")
    return out


def _common_schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorDetail")},
        },
        "ErrorDetail": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "path": {
                    "type": "string",
                    "description": "the offending field, e.g. args.order.items[2]",
                },
                "task": {"type": "string"},
                "size": {"type": "integer", "description": "bytes of the task event"},
                "limit": {"type": "integer", "description": "the producer's message.max.bytes"},
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["task_id", "status"],
            "properties": {"task_id": {"type": "string"}, "status": {"const": "PENDING"}},
        },
        "BatchRequest": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "items": _ref("BatchItem")}},
        },
        "BatchItem": {
            "type": "object",
            "required": ["args"],
            "additionalProperties": False,
            "properties": {
                "args": {"type": "object"},
                "key": KEY_SCHEMA,
                "queue": {"type": "string"},
                "idempotency_key": KEY_SCHEMA,
                "priority": PRIORITY_SCHEMA,
            },
        },
        "BatchResponse": {
            "type": "object",
            "required": ["accepted", "items"],
            "properties": {
                "accepted": {"type": "integer"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {"type": "integer"},
                            "task_id": {"type": "string"},
                            "error": _ref("ErrorDetail"),
                        },
                    },
                },
            },
        },
        "Revoked": {
            "type": "object",
            "required": ["task_id", "revoked", "terminate", "known"],
            "properties": {
                "task_id": {"type": "string"},
                "revoked": {"const": True},
                "terminate": {"type": "boolean"},
                # a stored outcome or accepted here lately; null: the store could not be read
                "known": {"type": ["boolean", "null"]},
            },
        },
        "TaskStatus": {
            "type": "object",
            "required": ["task_id", "status"],
            "properties": {
                "task_id": {"type": "string"},
                "task": {"type": "string"},
                "status": {
                    "enum": ["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
                },
                "attempt": {"type": "integer"},
                "key": nullable_str,
                "worker": nullable_str,
                "enqueued_at": nullable_str,
                "started_at": nullable_str,
                "finished_at": nullable_str,
                "result": {"description": "the return value as JSON (by the result schema)"},
                "error": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["type", "message", "traceback"],
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                                "traceback": {"type": "string"},
                            },
                        },
                    ]
                },
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks"],
            "properties": {
                "tasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "queue", "args_schema", "result_schema"],
                        "properties": {
                            "name": {"type": "string"},
                            "queue": {"type": "string"},
                            "args_schema": {"description": "the Avro schema of the arguments"},
                            "result_schema": {"description": "the Avro schema of the result"},
                            "args_json_schema": {"type": "object"},
                            "result_json_schema": {"type": "object"},
                        },
                    },
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
        },
    }


def _workflow_paths(security: list[Any], auth: bool) -> dict[str, Any]:
    """GET /v1/groups/{group_id} (taskstream.producer.http.workflows). POST /v1/workflows is
    not described here: what a step's arguments may be depends on its place in the workflow
    (a step after another leaves out its first argument) and on the typed canvas check, which
    a JSON Schema cannot state, so a schema-valid workflow could still be refused."""
    return {
        "/v1/groups/{group_id}": {
            "get": {
                "operationId": "get group",
                "summary": "each member's status, the join's state, a chord's result",
                "security": security,
                "parameters": [
                    {
                        "name": "group_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json({"type": "object"}, "the group"),
                    **_errors(404, auth=auth),
                },
            }
        },
    }


def build(catalog: Catalog, *, auth: bool, max_wait_s: float) -> dict[str, Any]:
    """The OpenAPI document; `auth` adds the bearer scheme to every /v1 operation."""
    schemas = JsonSchemas(REF)
    components = _common_schemas()
    paths: dict[str, Any] = {}
    security: list[dict[str, list[str]]] = [{"bearer": []}] if auth else []
    for name, spec in catalog.tasks.items():
        body = schemas.convert(spec.args.schema)
        queue_param = {
            "name": "queue", "in": "query", "required": False,
            "description": f"queue (default {spec.queue}); one of {', '.join(catalog.queues)}",
            "schema": {"type": "string", "enum": catalog.queues},
        }  # fmt: skip
        paths[f"/v1/tasks/{name}"] = {
            "post": {
                "operationId": f"send {name}",
                "summary": (spec.doc or f"send {name}").strip().splitlines()[0],
                "security": security,
                "parameters": [
                    {
                        "name": "key",
                        "in": "query",
                        "required": False,
                        "schema": KEY_SCHEMA,
                        "description": "ordering key: one key, one partition, in order",
                    },
                    queue_param,
                    {
                        "name": "priority",
                        "in": "query",
                        "required": False,
                        "schema": PRIORITY_SCHEMA,
                        "description": "0 (lowest) to 9 (highest, served first); default the "
                        "task's",
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": KEY_SCHEMA,
                        "description": "same key: same task id, no second event",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {
                    "202": _json(
                        _ref("Accepted"), "accepted: the broker acknowledged the event", _LOCATION
                    ),
                    "503": _json(
                        _ERROR, "broker unreachable or too slow; nothing was accepted", _RETRY_AFTER
                    ),
                    **_errors(400, 403, 409, 413, 415, 422, auth=auth),
                },
            }
        }
        paths[f"/v1/tasks/{name}:batch"] = {
            "post": {
                "operationId": f"send {name} batch",
                "summary": f"send many {name} tasks; each item is answered",
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BatchRequest")}},
                },
                "responses": {
                    "202": _json(_ref("BatchResponse"), "every item accepted"),
                    "207": _json(_ref("BatchResponse"), "some items not accepted: see each item"),
                    "503": _json(_ERROR, "no item accepted: broker unreachable", _RETRY_AFTER),
                    **_errors(400, 403, 413, 415, 422, auth=auth),
                },
            }
        }
    paths["/v1/tasks"] = {
        "get": {
            "operationId": "list tasks",
            "summary": "the tasks this service accepts, with their argument schemas",
            "security": security,
            "responses": {"200": _json(_ref("TaskList"), "the tasks"), **_errors(auth=auth)},
        }
    }
    paths["/v1/tasks/{task_id}"] = {
        "get": {
            "operationId": "get task",
            "summary": "a task's status, result or error",
            "security": security,
            "parameters": [
                {"name": "task_id", "in": "path", "required": True, "schema": TASK_ID_SCHEMA},
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "description": f"long-poll up to this many seconds (at most {max_wait_s:g})",
                    "schema": {"type": "number", "minimum": 0},
                },
                {
                    "name": "change",
                    "in": "query",
                    "required": False,
                    "description": "with wait: answer on any change of status, state or meta "
                    "(update_state progress), not only on a final outcome",
                    "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                },
            ],
            "responses": {
                "200": _json(
                    _ref("TaskStatus"), "the stored outcome, or PENDING for a task accepted here"
                ),
                "503": _json(_ERROR, "the lookup store is unreachable", _RETRY_AFTER),
                **_errors(404, 422, auth=auth),
            },
        }
    }
    paths["/v1/tasks/{task_id}:revoke"] = {
        "post": {
            "operationId": "revoke task",
            "summary": "revoke a task: it never starts; with terminate, a run in progress stops",
            "security": security,
            "parameters": [
                {"name": "task_id", "in": "path", "required": True, "schema": TASK_ID_SCHEMA},
                {
                    "name": "terminate",
                    "in": "query",
                    "required": False,
                    "schema": {"enum": ["true", "false", "1", "0"]},
                },
            ],
            "responses": {
                "202": _json(_ref("Revoked"), "the revocation is acknowledged by the broker"),
                "503": _json(_ERROR, "the broker did not acknowledge it", _RETRY_AFTER),
                **_errors(403, 422, auth=auth),
            },
        }
    }
    paths.update(_workflow_paths(security, auth))
    plain = {"description": "ok", "content": {"application/json": {"schema": _ref("Health")}}}
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "the process is alive",
            "responses": {"200": plain},
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "readyz",
            "summary": "broker and store reachable",
            "responses": {"200": plain, "503": _json(_ref("Health"), "not ready", _RETRY_AFTER)},
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    components.update(schemas.defs)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "taskstream",
            "version": "1",
            "description": "Send tasks and read their results over HTTP.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
