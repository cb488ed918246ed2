"""The ``taskstream`` command: worker, materialize, beat, dev, send, result, revoke, serve,
dlq, schemas, workers.

The front door, outside the core package: it imports the producer and the consumer services,
which core never does. Each subcommand lives in the module of its concept (``_MODULES``) and
is imported only when it runs, so ``taskstream --help`` stays fast.
"""

from __future__ import annotations

import faulthandler
import importlib
import io
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from taskstream.cli.parser import build_parser
from taskstream.errors import TaskFailed, TaskstreamError

__all__ = ["main"]

# subcommand -> the module (under taskstream.cli) with the function of the same name
_MODULES = {
    "worker": "roles",
    "materialize": "roles",
    "serve": "roles",
    "beat": "roles",
    "send": "tasks",
    "result": "tasks",
    "dlq": "dlq",
    "schemas": "schemas",
    "dev": "dev",
    "revoke": "control",
    "workers": "workers",
}


# The commands that run until stopped: SIGUSR1 makes them print where each thread is.
_LONG_RUNNING = {"worker", "materialize", "serve", "beat", "dev"}


def _tracebacks_on_sigusr1() -> None:
    """As Celery's worker: SIGUSR1 prints every thread's traceback (a stuck process, in place)."""
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (io.UnsupportedOperation, ValueError):
        pass  # stderr is no file (captured, as in a test): nowhere to print them


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    if args.command in _LONG_RUNNING:
        _tracebacks_on_sigusr1()
    module = importlib.import_module(f"taskstream.cli.{_MODULES[args.command]}")
    handler: Callable[..., int] = getattr(module, args.command)
    try:
        return handler(args)
    except TaskFailed as exc:
        print(json.dumps({"status": "FAILURE", "type": exc.exc_type, "message": exc.message}))
        print(exc.traceback, file=sys.stderr)
        return 1
    except (TaskstreamError, TimeoutError) as exc:
        print(f"taskstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
