"""The operations console: ``taskstream serve`` (and so ``taskstream dev``) serves it at /ui.

Pages: overview (throughput and failures from the store, lag per queue from Kafka, workers
from a :class:`WorkerSource`), tasks (search and filters, keyset-paged), one task, dead
letters (list and replay), delay tiers. Server-rendered HTML with a little vanilla
JavaScript that refreshes each page's live part; the static files ship in the package.
"""

from .app import WithConsole, create_console, with_console
from .console import Console
from .workers import NoWorkers, WorkerSource

__all__ = ["Console", "NoWorkers", "WithConsole", "WorkerSource", "create_console", "with_console"]
