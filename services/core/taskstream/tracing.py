"""Traces across Kafka with OpenTelemetry, when the ``otel`` extra is installed.

The W3C trace context (``traceparent``, and ``tracestate`` when set) travels in a task
event's Kafka headers: ``delay()`` / ``apply_async()`` and the HTTP service start a PRODUCER
span per event sent and inject its context; the worker continues the trace with a CONSUMER
span per run (``<task> process``: attributes task, id, attempt, partition, offset, outcome)
and puts that run's context on the next attempt of a retry, so the attempts of a task form
one trace. Delay tiers forward records with their headers, dead letters keep the original
record's headers and a replay sends them back, so those keep the trace too.

Spans go to the tracer provider the application configured (the OpenTelemetry SDK and an
exporter, in code or by ``opentelemetry-instrument``). Without OpenTelemetry installed,
:data:`ENABLED` is False, and callers check it (once at start, or one ``if`` per event) and
call nothing else here: no import, no work per task. Installed but with no provider set,
:func:`active` is False: a worker created then makes no spans, and ``delay()`` sends no
headers, as there is nowhere to send spans to.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskstream.envelope import TaskEvent
    from taskstream.kafka.clients import Headers

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # the otel extra is not installed: tracing is off, at no cost
    ENABLED = False
else:
    ENABLED = True

# The headers the W3C trace-context propagator writes and reads.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_TRACER_NAME = "taskstream"


def active() -> bool:
    """Whether spans go anywhere: OpenTelemetry is installed and a tracer provider is set."""
    if not ENABLED:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _tracer() -> Any:
    # Asked each time: a tracer provider the application sets after import is used (the
    # API's proxy tracer would defer too, but only for the global provider).
    return trace.get_tracer(_TRACER_NAME)


def inject(ctx: Any = None) -> Headers | None:
    """The trace context of ``ctx`` (default: the current one) as Kafka headers, None when
    there is no trace to carry."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    headers: Headers = [(k, v.encode()) for k, v in carrier.items() if k in TRACE_HEADERS]
    return headers or None


def extract(headers: list[tuple[str, Any]] | None) -> Any:
    """The trace context a record's headers carry (an empty context when they carry none)."""
    carrier = {
        name: value.decode("latin-1") if isinstance(value, bytes) else value
        for name, value in headers or ()
        if name in TRACE_HEADERS and value is not None
    }
    return propagate.extract(carrier)


def send_headers(event: TaskEvent, topic: str) -> Headers | None:
    """A PRODUCER span for sending ``event`` (a child of the current span, if any), and its
    context as the event's headers. The span ends at once: sending is asynchronous, and the
    run on the worker is its child."""
    span = _tracer().start_span(
        f"{event.task} send",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "taskstream.task": event.task,
            "taskstream.task_id": event.id,
            "taskstream.attempt": event.attempt,
        },
    )
    try:
        return inject(trace.set_span_in_context(span))
    finally:
        span.end()


@contextmanager
def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[Any]:
    """A SERVER span around an HTTP request, continuing the caller's ``traceparent`` if it
    sent one, and current while the request is served (so the events it sends are its
    children). Yields the span."""
    parent = propagate.extract(dict(headers))
    span = _tracer().start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


class RunSpan:
    """A worker's span for one run of a task event, current on the thread (or coroutine)
    that runs the task, so spans the task's code starts are its children."""

    __slots__ = ("_span", "_thread", "_token")

    def __init__(self, name: str, parent: Any, attributes: Mapping[str, Any]) -> None:
        self._span = _tracer().start_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self._token: Any = None
        self._thread = 0

    def enter(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._thread = threading.get_ident()

    def finish(self, outcome: str, error: str | None) -> Headers | None:
        """End the span with the run's outcome; returns its context as headers, for the
        event that continues the task (a retry's next attempt)."""
        span = self._span
        span.set_attribute("taskstream.outcome", outcome)
        if error is not None:
            span.set_status(StatusCode.ERROR, error)
        headers = inject(trace.set_span_in_context(span))
        span.end()
        token, self._token = self._token, None
        # Not from another thread: an abandoned run is finished by the watchdog's thread,
        # and its own thread is given up with its context.
        if token is not None and self._thread == threading.get_ident():
            otel_context.detach(token)
        return headers
