"""Text from users, made storable, and the ids and keys the edges accept.

Python's ``str`` holds what no store does: a lone surrogate (U+D800..U+DFFF, which
``json.loads('"\\ud800"')`` returns) has no UTF-8 form, so Avro, SQLite and PostgreSQL all
refuse it, and PostgreSQL's text cannot hold NUL (U+0000) either. :func:`storable` replaces
those characters with U+FFFD (the replacement character) so that one task's exception text
or key never stops the results pipeline; the same mapping applies to lookups, so a record
stored that way is found by the id it was sent with.

:func:`id_problem` is what the HTTP edge (and ``apply_async(task_id=...)``) checks of task
ids, keys and Idempotency-Keys, and answers with a 422 naming the field.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
# Task ids, keys and Idempotency-Keys, in characters (at most 4 UTF-8 bytes each): 1 KiB is
# well below PostgreSQL's limit of one btree index entry (2704 bytes), which a longer key
# would exceed in the results_key index.
MAX_ID_CHARS = 256
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def storable(text: str, *, nul: bool = True) -> str:
    """`text` with each lone surrogate (and, with `nul`, each NUL) replaced by U+FFFD."""
    if nul and "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if text.isascii():
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def storable_or_none(text: str | None, *, nul: bool = True) -> str | None:
    return None if text is None else storable(text, nul=nul)


def id_problem(value: str, *, slash: bool = True) -> str | None:
    """Why `value` cannot be a task id (``slash=False``), a key or an Idempotency-Key; None
    if it can. Control characters (NUL included), lone surrogates and over
    :data:`MAX_ID_CHARS` characters are refused; a task id may not hold ``/`` either (it is a URL
    path segment: ``GET /v1/tasks/{id}``)."""
    if not value:
        return "must not be empty"
    if _CONTROL.search(value):
        return "must not contain control characters (NUL included)"
    if not value.isascii() and _SURROGATE.search(value):
        return "must not contain lone surrogates (it has no UTF-8 form)"
    if not slash and "/" in value:
        return "must not contain '/'"
    if len(value) > MAX_ID_CHARS:
        return f"must be at most {MAX_ID_CHARS} characters long"
    return None
