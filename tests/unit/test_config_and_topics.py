"""Settings from the environment and topic naming."""

from __future__ import annotations

import pytest

from taskstream.config import Settings
from taskstream.errors import ConfigError
from taskstream.kafka.clients import consumer_config, incremental_assignment, producer_config
from taskstream.kafka.topics import dead_letter_topic, results_topic, task_topic, topic_specs


def test_environment_variables_fill_settings_and_arguments_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKSTREAM_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("TASKSTREAM_PARTITIONS", "6")
    monkeypatch.setenv("TASKSTREAM_TOPIC_PREFIX", "env")
    s = Settings.load(topic_prefix="arg")
    assert (s.bootstrap_servers, s.partitions, s.topic_prefix) == ("kafka:9092", 6, "arg")


def test_librdkafka_settings_pass_through_and_explicit_ones_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    s = Settings.load(bootstrap_servers="k:1", kafka={"linger.ms": 50, "acks": "1"})
    config = producer_config(s, acks="all")
    assert config["security.protocol"] == "SASL_SSL"
    assert config["linger.ms"] == 50  # the user's extra beats the default
    assert config["acks"] == "all"  # the explicit argument beats the user's extra
    assert config["enable.idempotence"] is True


def test_producers_keep_one_request_in_flight_per_broker_unless_told_otherwise() -> None:
    # More lets a fresh producer lose a refused first batch reported delivered (clients.py).
    name = "max.in.flight.requests.per.connection"
    assert producer_config(Settings.load(bootstrap_servers="k:1"))[name] == 1
    assert producer_config(Settings.load(bootstrap_servers="k:1", kafka={name: 5}))[name] == 5


def test_producers_compress_with_gzip_which_every_kafka_client_reads() -> None:
    config = producer_config(Settings.load(bootstrap_servers="k:1"))
    assert (config["compression.type"], config["compression.level"]) == ("gzip", 1)
    # Part of the wire contract too: a key's partition is CRC-32(key) mod partitions.
    assert config["partitioner"] == "consistent_random"


@pytest.mark.parametrize("name", ["compression.type", "compression.codec"])
def test_a_codec_of_the_user_s_choice_keeps_its_own_default_level(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("TASKSTREAM_KAFKA_" + name.upper().replace(".", "_"), "zstd")
    config = producer_config(Settings.load(bootstrap_servers="k:1"))
    assert config[name] == "zstd"
    assert "compression.level" not in config
    assert producer_config(Settings.load(bootstrap_servers="k:1"), **{name: "lz4"})[name] == "lz4"


def test_a_consumer_never_auto_commits() -> None:
    config = consumer_config(Settings.load(bootstrap_servers="k:1"), "g")
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False


def test_a_malformed_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKSTREAM_PARTITIONS", "many")
    with pytest.raises(ConfigError, match="TASKSTREAM_PARTITIONS"):
        Settings.load()


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="partitons"):
        Settings.load(partitons=3)


def test_missing_bootstrap_servers_say_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("TASKSTREAM_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="taskstream dev"):
        Settings.load().require_bootstrap()


def test_topic_names_share_the_prefix() -> None:
    assert task_topic("ts", "emails") == "ts.tasks.emails"
    assert results_topic("ts") == "ts.results"
    assert dead_letter_topic("ts") == "ts.dead-letter"
    with pytest.raises(ValueError):
        task_topic("ts", "no spaces")


def test_the_results_topic_is_compacted() -> None:
    specs = {s.name: s for s in topic_specs("ts", ["default"], 12, 3)}
    assert specs["ts.results"].config == {"cleanup.policy": "compact"}
    assert specs["ts.tasks.default"].partitions == 12
    assert specs["ts.dead-letter"].replication_factor == 3


def test_group_protocol_consumer_leaves_session_heartbeat_and_assignor_to_the_broker() -> None:
    classic = consumer_config(Settings.load({}, bootstrap_servers="k:9092"), "g", strategy="range")
    assert classic["session.timeout.ms"] == 6000
    assert classic["partition.assignment.strategy"] == "range"
    assert "group.protocol" not in classic and not incremental_assignment(classic)
    settings = Settings.load({"TASKSTREAM_GROUP_PROTOCOL": "consumer"}, bootstrap_servers="k:9092")
    kip848 = consumer_config(settings, "g", strategy="range")
    assert kip848["group.protocol"] == "consumer" and incremental_assignment(kip848)
    assert not {
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "partition.assignment.strategy",
    } & set(kip848)
    with pytest.raises(ConfigError, match="group_protocol"):
        Settings.load({"TASKSTREAM_GROUP_PROTOCOL": "eager"}, bootstrap_servers="k:9092")
