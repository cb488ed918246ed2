"""Property-based fuzz of the HTTP API from its own OpenAPI document (schemathesis):
whatever the generated request, no 5xx, and every answer matches the documented
status codes, content types and response schemas."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from examples.app import app as example_app
from taskstream.producer.http import create_app
from tests.unit.http_fakes import fake_service

# Long polls short; any Host: schemathesis calls its ASGI app as "testserver".
service, _publisher = fake_service(example_app, http={"max_wait_s": 0.05, "allowed_hosts": "*"})
# The test client runs the lifespan around every call: keep the service open across them.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(service, close_on_shutdown=False)
)


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_answers_5xx_and_keeps_to_its_openapi(
    case: schemathesis.Case[Any],
) -> None:
    case.call_and_validate()
