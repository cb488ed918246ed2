"""The HTTP service's settings, loaded from a given environment; its error table."""

from __future__ import annotations

import dataclasses

import pytest

from taskstream import App
from taskstream.config import Settings
from taskstream.errors import (
    ConfigError,
    InvalidArguments,
    MessageTooLarge,
    ResultTooLarge,
    StoreError,
    TaskstreamError,
    UnknownTask,
)
from taskstream.producer.http import HttpSettings
from taskstream.producer.http.errors import answer_of, error_detail

ENVIRON = {
    "TASKSTREAM_HTTP_TOKENS": "s3cret, other,",
    "TASKSTREAM_HTTP_OPEN_PATHS": "/healthz",
    "TASKSTREAM_HTTP_MAX_WAIT_S": "2.5",
    "TASKSTREAM_HTTP_MAX_BODY_BYTES": "4096",
    "TASKSTREAM_KAFKA_MESSAGE_MAX_BYTES": "2000000",
}


def test_http_settings_load_from_the_environ_given_not_the_processs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKSTREAM_HTTP_MAX_WAIT_S", "99")
    http = HttpSettings.load(environ=ENVIRON)
    assert http.tokens == frozenset({"s3cret", "other"})
    assert http.open_paths == frozenset({"/healthz"})
    assert (http.max_wait_s, http.max_body_bytes) == (2.5, 4096)
    assert http.max_event_bytes == 2_000_000  # the producer's message.max.bytes
    assert HttpSettings.load(environ={}, max_wait_s=1.0).max_wait_s == 1.0
    assert HttpSettings.load().max_wait_s == 99  # default: the process's environment


def test_http_settings_keep_the_defaults_and_librdkafkas_limit() -> None:
    http = HttpSettings.load(environ={}, settings=Settings.load(environ={}))
    assert http.tokens == frozenset() and "/metrics" in http.open_paths
    assert (http.max_body_bytes, http.max_event_bytes) == (1_048_576, 1_000_000)
    assert (http.drain_max_bytes, http.drain_timeout_s) == (16_777_216, 5.0)
    explicit = Settings.load(environ={}, kafka={"message.max.bytes": 5000})
    assert HttpSettings.load(environ={}, settings=explicit).max_event_bytes == 5000


def test_settings_load_reads_only_the_environ_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKSTREAM_TOPIC_PREFIX", "from-process")
    monkeypatch.setenv("TASKSTREAM_KAFKA_SASL_MECHANISM", "PLAIN")
    s = Settings.load(environ={"TASKSTREAM_TOPIC_PREFIX": "given"}, partitions=3)
    assert (s.topic_prefix, s.partitions, dict(s.kafka)) == ("given", 3, {})
    assert Settings.load().topic_prefix == "from-process"
    with pytest.raises(ConfigError, match="not a number"):
        HttpSettings.load(environ={"TASKSTREAM_HTTP_MAX_WAIT_S": "soon"})


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MessageTooLarge("t", 2, 1), 413, "message_too_large"),
        (ResultTooLarge("t", 2, 1), 413, "message_too_large"),  # a subclass: its base's answer
        (UnknownTask("t"), 404, "unknown_task"),
        (InvalidArguments("t", "args.a", "expected int"), 422, "invalid_arguments"),
        (StoreError("down"), 503, "store_unavailable"),
        (ConfigError("no"), 500, "error"),  # not listed: a 500
    ],
)
def test_each_taskstream_error_has_one_status(
    error: TaskstreamError, status: int, code: str
) -> None:
    assert answer_of(error)[:2] == (status, code)


def test_an_error_detail_carries_the_errors_fields() -> None:
    status, detail = error_detail(MessageTooLarge("billing.charge", 1_500_000, 1_000_000))
    assert status == 413
    assert {k: detail[k] for k in ("code", "task", "size", "limit")} == {
        "code": "message_too_large", "task": "billing.charge",
        "size": 1_500_000, "limit": 1_000_000,
    }  # fmt: skip
    _, invalid = error_detail(InvalidArguments("add", "args.a", "expected int"))
    assert (invalid["message"], invalid["path"]) == ("expected int", "args.a")
    assert error_detail(UnknownTask("nope"))[1]["task"] == "nope"


def test_the_http_settings_are_not_the_apps_and_an_app_given_one_says_where_it_went() -> None:
    assert not [f.name for f in dataclasses.fields(Settings) if f.name.startswith("http_")]
    with pytest.raises(ConfigError, match=r"http_tokens: .*TASKSTREAM_HTTP_<NAME>"):
        App("moved", http_tokens="s3cret")
    with pytest.raises(ConfigError, match="unknown setting"):
        HttpSettings.load(environ={}, http_tokens="s3cret")


def test_a_list_given_as_a_keyword_is_split_as_its_variable_would_be() -> None:
    http = HttpSettings.load(environ={}, tokens="s3cret, other,", allowed_hosts="a.example")
    assert http.tokens == frozenset({"s3cret", "other"})  # never a string: "s3" in "s3cret"
    assert http.allowed_hosts == frozenset({"a.example"})
