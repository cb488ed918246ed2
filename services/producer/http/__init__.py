"""The HTTP ingestion and results service: ``taskstream serve``.

from taskstream.producer.http import HttpService, create_app

asgi = create_app(HttpService.for_app(app))
asgi = create_app(HttpService.for_schemas("schemas", settings))  # without the task code
"""

from taskstream.producer.http.api import create_app
from taskstream.producer.http.service import HttpService

__all__ = ["HttpService", "create_app"]
