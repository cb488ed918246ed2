"""The long-running roles: ``taskstream worker``, ``materialize``, ``serve`` and ``beat``."""

from __future__ import annotations

import argparse
import faulthandler
import io
import signal
import sys
from collections.abc import Callable

from taskstream.app import App
from taskstream.errors import ConfigError
from taskstream.loading import load_app


def _serve_metrics(flag: int | None, app: App) -> None:
    """Prometheus /metrics on --metrics-port, else TASKSTREAM_METRICS_PORT, else nowhere."""
    port = flag if flag is not None else app.settings.metrics_port
    if port is not None:
        from taskstream.metrics import serve_metrics

        serve_metrics(port)


def _state_on_sigusr1(describe: Callable[[], str]) -> None:
    """SIGUSR1 also prints ``describe()`` (where the records wait), after the threads'
    tracebacks (faulthandler's, which print even when the main thread is stuck in C)."""

    def state(_signum: int, _frame: object) -> None:
        try:
            print(f"taskstream state: {describe()}", file=sys.stderr, flush=True)
        except Exception as exc:  # a diagnosis never stops the process it describes
            print(f"taskstream state unknown: {exc!r}", file=sys.stderr, flush=True)

    faulthandler.unregister(signal.SIGUSR1)  # registered by main(): installed again below
    signal.signal(signal.SIGUSR1, state)
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)
    except (io.UnsupportedOperation, ValueError):
        pass  # stderr is no file (captured, as in a test): the state alone


def worker(args: argparse.Namespace) -> int:
    from taskstream.consumer.worker import Worker

    app = load_app(args.app)
    _serve_metrics(args.metrics_port, app)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    w = Worker(
        app,
        queues=queues,
        concurrency=args.concurrency,
        max_tasks_in_flight=args.max_tasks_in_flight,
    )
    w.install_signal_handlers()
    _state_on_sigusr1(w.describe)
    w.run()
    return 0


def materialize(args: argparse.Namespace) -> int:
    from taskstream.consumer.materializer import Materializer

    app = load_app(args.app) if args.app else App("taskstream")
    _serve_metrics(args.metrics_port, app)
    m = Materializer(app, rebuild=args.rebuild)

    def handle(_signum: int, _frame: object) -> None:
        m.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    _state_on_sigusr1(m.describe)
    m.run()
    app.close()
    return 0


def serve(args: argparse.Namespace) -> int:
    from taskstream.console.server import FACTORY
    from taskstream.producer.http.server import Source
    from taskstream.producer.http.server import serve as run
    from taskstream.producer.http.settings import HttpSettings

    if (args.app is None) == (args.schemas is None):
        raise ConfigError("serve takes an app (module:attribute) or --schemas DIR, one of them")
    queues = {}
    for pair in args.queue:
        task, sep, queue = pair.partition("=")
        if not sep or not task or not queue:
            raise ConfigError(f"--queue {pair!r}: use TASK=QUEUE")
        queues[task] = queue
    if queues and args.app:
        raise ConfigError("--queue applies to --schemas only (an app knows its queues)")
    _check_exposure(args.host, HttpSettings.load().tokens, args.allow_open)
    source = Source(args.app, args.schemas, queues)
    source.check()  # wrong credentials, an untrusted CA, no WRITE: exit 2 before listening
    what = args.app or f"the schemas in {args.schemas}"
    # uvicorn itself logs at WARNING only: say where we listen (a bind failure follows this
    # line as uvicorn's error).
    print(f"taskstream serve: {what} on http://{args.host}:{args.port}", flush=True)
    print(f"taskstream serve: the console on http://{args.host}:{args.port}/ui", flush=True)
    run(source, args.host, args.port, args.workers, FACTORY)
    return 0


MIN_TOKEN_CHARS = 16  # shorter bearer tokens are warned about: guessable


def _check_exposure(host: str, tokens: frozenset[str], allow_open: bool) -> None:
    """Refuse to serve without tokens beyond loopback unless `allow_open`; warn about that,
    and about short tokens, on stderr."""
    from taskstream.producer.http.origins import LOOPBACK

    local = host.strip("[]") in LOOPBACK or host.startswith("127.")
    if not tokens and not local:
        if not allow_open:
            raise ConfigError(
                f"taskstream serve --host {host} without TASKSTREAM_HTTP_TOKENS: anyone who "
                "reaches the port could send, read and revoke tasks. Set tokens, listen on "
                "127.0.0.1, or pass --allow-open (behind a proxy that authenticates)"
            )
        print(
            f"taskstream serve: WARNING: no TASKSTREAM_HTTP_TOKENS and listening on {host}: "
            "the API and the console are open to whoever reaches the port",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    short = [t for t in tokens if len(t) < MIN_TOKEN_CHARS]
    if short:
        print(
            f"taskstream serve: WARNING: {len(short)} of TASKSTREAM_HTTP_TOKENS shorter than "
            f"{MIN_TOKEN_CHARS} characters: use long random tokens (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')",
            file=sys.stderr, flush=True,
        )  # fmt: skip


def beat(args: argparse.Namespace) -> int:
    from taskstream.consumer.beat import Beat

    app = load_app(args.app)
    _serve_metrics(args.metrics_port, app)
    b = Beat(app)

    def handle(_signum: int, _frame: object) -> None:
        b.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    b.run()
    app.close()
    return 0
