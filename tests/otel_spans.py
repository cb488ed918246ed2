"""The OpenTelemetry SDK's in-memory exporter, as the tracer provider of the test process.

OpenTelemetry takes one global tracer provider per process, so the first test that asks
sets it up and every later one gets the same exporter, cleared."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter: InMemorySpanExporter | None = None


def span_exporter() -> InMemorySpanExporter:
    """The process's in-memory exporter, emptied."""
    global _exporter
    if _exporter is None:
        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _exporter = exporter
    _exporter.clear()
    return _exporter


def spans_of(exporter: InMemorySpanExporter, task_id: str) -> list[ReadableSpan]:
    """The finished spans about one task (by its id attribute), oldest first."""
    return sorted(
        (
            s
            for s in exporter.get_finished_spans()
            if (s.attributes or {}).get("taskstream.task_id") == task_id
        ),
        key=lambda s: s.start_time or 0,
    )


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None
