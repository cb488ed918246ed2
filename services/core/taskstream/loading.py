"""Finding an app from a ``module:attribute`` string, as the CLI takes it.

In core rather than the CLI because ``taskstream serve``'s application (the HTTP service's
``taskstream.producer.http.server`` and the console's server) loads the app too, in its
uvicorn worker processes, and only the CLI may import the CLI.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from taskstream.app import App
from taskstream.errors import ConfigError

log = logging.getLogger(__name__)


def load_app(spec: str) -> App:
    """``package.module:app`` (or ``package.module``, finding its one App)."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the project's modules are importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for app {spec!r}: {exc}") from exc
    if attribute:
        app = getattr(module, attribute, None)
    else:
        found = [v for v in vars(module).values() if isinstance(v, App)]
        app = found[0] if len(found) == 1 else None
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} does not name a taskstream App (use module:attribute)")
    for name in app.include:  # Celery's include=: the modules that define the tasks
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import {name!r} (in {spec!r}'s include): {exc}") from exc
    if not app.tasks:
        log.warning(
            "app %r (%s) defines no tasks: import the modules that define them in %s, or "
            "list them as App(..., include=[...]) (Celery's include=)",
            app.name, spec, module_name,
        )  # fmt: skip
    return app
