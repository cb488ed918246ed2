"""The HTTP ingestion and results service: ``taskstream serve``.

from taskstream.producer.http import HttpService, create_app

asgi = create_app(HttpService.for_app(app))
asgi = create_app(HttpService.for_schemas("schemas", settings))  # without the task code
"""

from .api import create_app
from .service import HttpService
from .settings import HttpSettings

__all__ = ["HttpService", "HttpSettings", "create_app"]
