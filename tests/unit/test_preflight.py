"""The start-up check's reading of librdkafka's error events (taskstream.kafka.preflight): each
refusal becomes the taskstream error that names its cause, never the password."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from taskstream.errors import AuthenticationFailed, BrokerError, NotAuthorized, TlsFailed
from taskstream.kafka.preflight import _raise_refusal

CONFIG = {
    "bootstrap.servers": "kafka:9096",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "app",
    "sasl.password": "s3cret-never-shown",
    "ssl.ca.location": "/etc/kafka/ca.crt",
}


def test_a_refused_password_is_an_authentication_error_naming_user_and_mechanism() -> None:
    event = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    with pytest.raises(AuthenticationFailed) as caught:
        _raise_refusal(event, CONFIG, "kafka:9096")
    text = str(caught.value)
    assert "'app'" in text and "SCRAM-SHA-512" in text and "kafka:9096" in text
    assert "s3cret" not in text
    assert isinstance(caught.value, BrokerError)


def test_an_untrusted_certificate_is_a_tls_error_naming_the_ca_file() -> None:
    event = KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed")
    with pytest.raises(TlsFailed, match=r"/etc/kafka/ca\.crt"):
        _raise_refusal(event, CONFIG, "kafka:9096")


def test_a_transport_error_is_not_a_refusal() -> None:
    _raise_refusal(KafkaError(KafkaError._TRANSPORT, "Connection refused"), CONFIG, "x:1")


def test_a_missing_acl_names_operation_resource_and_user() -> None:
    text = str(NotAuthorized("WRITE", "topic", "app.results", "app"))
    assert "user 'app' is not authorized to WRITE the topic 'app.results'" in text
