"""Settings: the one place that reads the environment.

Each setting comes from, in rising precedence: its default, a ``TASKSTREAM_<NAME>`` environment
variable, an explicit keyword argument. librdkafka settings pass through untouched: any
``TASKSTREAM_KAFKA_<NAME>`` variable (``TASKSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` becomes
``security.protocol``) or the ``kafka`` mapping, so SASL/TLS need no code here.

:func:`load_fields` reads the same way the settings of a service outside core, which keeps
them in a dataclass of its own (taskstream.producer.http.HttpSettings, ``TASKSTREAM_HTTP_*``).

When no bootstrap servers are given at all, the address that ``taskstream dev`` wrote to
``.taskstream/dev.json`` in the working directory is used, so ``taskstream send`` in a second
terminal finds the embedded broker.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskstream.errors import ConfigError
from taskstream.kafka.topics import DELAY_TIERS_S

ENV_PREFIX = "TASKSTREAM_"
KAFKA_ENV_PREFIX = "TASKSTREAM_KAFKA_"
# The HTTP service's settings were the app's once (http_tokens=...): such a keyword now says
# where they went (taskstream.producer.http.HttpSettings, read from TASKSTREAM_HTTP_*).
MOVED_HTTP_PREFIX = "http_"
DEV_STATE_FILE = Path(".taskstream") / "dev.json"
AT_LEAST_ONCE = "at-least-once"
EXACTLY_ONCE = "exactly-once"


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = None  # "host:port,host:port"; None: the dev broker, if running
    # Lookup store URL. Not in repr(), nor are secrets and librdkafka extras: they may hold
    # passwords (logs show taskstream.store.base.redacted_url(store)).
    store: str = field(default="sqlite:///.taskstream/results.db", repr=False)
    topic_prefix: str = "taskstream"  # every topic name starts with it (see topics.py)
    partitions: int = 12  # partitions of topics created on start
    replication_factor: int = 1  # of topics created on start (3 on a real cluster)
    session_timeout_ms: int = 6000  # consumer group session; failover time after a crash
    heartbeat_interval_ms: int = 1000
    # Consumer group protocol: "classic" or "consumer" (KIP-848, Apache Kafka 4.0+: the broker
    # assigns partitions incrementally; session, heartbeat and assignor are then the broker's
    # group.consumer.* settings, not the client's).
    group_protocol: str = "classic"
    max_poll_interval_ms: int = 300_000  # a stuck consumer loop (never a task) leaves the group
    fetch_wait_max_ms: int = 10  # broker-side fetch wait: bounds task pick-up latency
    linger_ms: int = 2  # producer batching delay
    delivery_timeout_ms: int = 30_000  # after this an unacknowledged event is a DeliveryFailed
    # How often a worker commits finished offsets, in ms; None: 200 at least once (an async
    # commit), 100 exactly once (a transaction's commit: Kafka Streams' default).
    commit_interval_ms: int | None = None
    # "at-least-once" (a crash runs a task again and publishes its outcome again) or
    # "exactly-once": outcomes and the offsets they answer in one Kafka transaction (Quix
    # Streams' names; docs/reliability.md, Exactly-once).
    processing_guarantee: str = "at-least-once"
    shutdown_grace_s: float = 30.0  # SIGTERM: time for in-flight tasks before exit
    revoke_grace_s: float = 5.0  # rebalance: time for a revoked partition's tasks to finish
    concurrency: int = 1  # worker threads (and async tasks) running at once
    max_tasks_in_flight: int = 1000  # fetched but unfinished tasks before fetching pauses
    worker_lost_max_deliveries: int = 3  # runs lost to a dying worker before a dead letter; 0: off
    # Queues served through a Kafka share group (KIP-932), comma-separated: any number of
    # workers per partition, no per-key order (README, "Ordered and shared queues"). The
    # others are ordered.
    shared_queues: frozenset[str] = frozenset()
    # Results and revocations (Celery's result_expires and REVOKE_EXPIRES):
    result_expires: float | None = 86_400.0  # s; outcomes older are deleted; None or 0: kept
    revoke_expires_s: float = 10_800.0  # s revocations are kept: >= the largest delay tier
    revokes_max: int = 50_000  # revoked ids a worker keeps (Celery's REVOKES_MAX); oldest go
    schemas_dir: str = "schemas"  # where `taskstream schemas export/check` write and read
    metrics_port: int | None = None  # Prometheus /metrics port of worker/materializer; None: off
    # Periodic tasks (`taskstream beat`, taskstream.periodic):
    timezone: str = "UTC"  # IANA name; crontab times are wall-clock times there (Celery's)
    beat_catch_up: str = "once"  # long outage: "once" (latest missed tick) or "skip" (none)
    beat_catch_up_window_s: float = 300.0  # missed ticks this recent all fire (a failover)
    # Keys the periodic ticks' task ids (the same in every beat replica); "": ids anyone can
    # compute in advance (taskstream.periodic.tick_id).
    beat_id_secret: str = field(default="", repr=False)
    # Workers you can see (taskstream.worker_directory): a beat this often, in seconds; 0: none.
    # A worker is shown as lost after MISSED_BEATS of its beats failed to come.
    worker_heartbeat_s: float = 2.0
    kafka: Mapping[str, str] = field(default_factory=dict, repr=False)  # librdkafka extras

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then TASKSTREAM_* variables of `environ` (default: the process's
        environment), then ``overrides``."""
        env = os.environ if environ is None else environ
        kafka = {
            name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
            for name, value in env.items()
            if name.startswith(KAFKA_ENV_PREFIX)
        }
        kafka.update(overrides.pop("kafka", None) or {})
        moved = sorted(name for name in overrides if name.startswith(MOVED_HTTP_PREFIX))
        if moved:
            raise ConfigError(
                f"{', '.join(moved)}: the HTTP service's settings are not the app's: set "
                "TASKSTREAM_HTTP_<NAME> (TASKSTREAM_HTTP_TOKENS=...), or build the service "
                "with taskstream.producer.http.HttpSettings.load(tokens=...)"
            )
        values = load_fields(cls, ENV_PREFIX, env, overrides, skip={"kafka"})
        if isinstance(values.get("shared_queues"), list | tuple | set):
            values["shared_queues"] = frozenset(values["shared_queues"])  # App(shared_queues=[])
        values["kafka"] = kafka
        if not values.get("bootstrap_servers"):
            values["bootstrap_servers"] = read_dev_bootstrap()
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.group_protocol not in ("classic", "consumer"):
            raise ConfigError(
                f"group_protocol={self.group_protocol!r}: 'classic' or 'consumer' (KIP-848)"
            )
        if self.processing_guarantee not in (AT_LEAST_ONCE, EXACTLY_ONCE):
            raise ConfigError(
                f"processing_guarantee={self.processing_guarantee!r}: "
                f"{AT_LEAST_ONCE!r} or {EXACTLY_ONCE!r}"
            )
        if self.exactly_once and self.kafka.get("isolation.level") == "read_uncommitted":
            raise ConfigError(
                "processing_guarantee='exactly-once' reads read_committed: "
                "TASKSTREAM_KAFKA_ISOLATION_LEVEL=read_uncommitted would run aborted tasks"
            )
        if self.exactly_once and self.shared:
            raise ConfigError(
                f"processing_guarantee='exactly-once' cannot serve shared queues "
                f"({', '.join(sorted(self.shared))}): a share group acknowledges records "
                "outside Kafka transactions (at least once); serve them from ordered queues"
            )
        if self.commit_interval_ms is not None and self.commit_interval_ms < 1:
            raise ConfigError("commit_interval_ms must be >= 1 (ms)")
        if self.partitions < 1 or self.replication_factor < 1 or self.concurrency < 1:
            raise ConfigError("partitions, replication_factor and concurrency must be >= 1")
        if self.max_tasks_in_flight < self.concurrency:
            raise ConfigError("max_tasks_in_flight must be >= concurrency")
        if self.revoke_expires_s < DELAY_TIERS_S[-1]:
            # A delayed task meets the revocations at each hop, at most a tier apart.
            raise ConfigError(
                f"revoke_expires_s must be >= {DELAY_TIERS_S[-1]} (the largest delay tier)"
            )
        if self.result_expires is not None and self.result_expires < 0:
            raise ConfigError("result_expires must be >= 0 seconds (0 or None: kept forever)")
        if self.worker_heartbeat_s < 0:
            raise ConfigError("worker_heartbeat_s must be >= 0 (0: no heartbeats)")
        if self.worker_lost_max_deliveries < 0:
            raise ConfigError("worker_lost_max_deliveries must be >= 0 (0: not counted)")
        if self.beat_catch_up not in ("once", "skip"):
            raise ConfigError(f"beat_catch_up must be 'once' or 'skip', not {self.beat_catch_up!r}")
        self.time_zone()  # an unknown timezone fails here, not at the first tick

    @property
    def shared(self) -> frozenset[str]:
        """The queues served through a share group (``shared_queues``)."""
        return self.shared_queues

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == EXACTLY_ONCE

    @property
    def commit_every_s(self) -> float:
        """``commit_interval_ms`` in seconds, or its default for the processing guarantee."""
        ms = self.commit_interval_ms
        if ms is None:
            ms = 100 if self.exactly_once else 200
        return ms / 1000

    def time_zone(self) -> tzinfo:
        """The ``timezone`` setting as a tzinfo."""
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"unknown timezone {self.timezone!r}") from exc

    def require_bootstrap(self) -> str:
        if not self.bootstrap_servers:
            raise ConfigError(
                "no Kafka bootstrap servers: set TASKSTREAM_BOOTSTRAP_SERVERS, pass "
                "bootstrap_servers=..., or run `taskstream dev` in this directory"
            )
        return self.bootstrap_servers

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_fields(
    cls: type[Any],
    prefix: str,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
    skip: Collection[str] = (),
) -> dict[str, Any]:
    """The values that `environ` (default: the process's environment) and then `overrides`
    give the fields of the dataclass `cls`, by name, for ``cls(**values)``.

    A field ``name`` is read from the variable ``<prefix><NAME>`` (unset or empty: its
    default), parsed by its annotation: ``int``, ``float``, ``frozenset[str]`` (comma-separated,
    blanks dropped) or ``str``. Fields in `skip` have no variable. An override of None leaves
    the field as the environment has it; a string for a ``frozenset[str]`` field is split as
    its variable would be. An unknown override is a ConfigError.
    """
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        raw = env.get(prefix + name.upper())
        if name not in skip and raw is not None and raw != "":
            values[name] = _parse(prefix + name.upper(), f.type, raw)
    for name, value in overrides.items():
        if isinstance(value, str) and str(fields[name].type).startswith("frozenset"):
            value = _comma_separated(value)
        if value is not None:
            values[name] = value
    return values


def _comma_separated(value: str) -> frozenset[str]:
    """``"a, b,"`` as ``{"a", "b"}``."""
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _parse(variable: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{variable}={raw!r} is not a number") from exc
    if kind.startswith("frozenset"):
        return _comma_separated(raw)
    return raw


def prometheus_multiproc_dir() -> str | None:
    """prometheus-client's ``PROMETHEUS_MULTIPROC_DIR`` (its own variable, not a setting):
    where the processes of one service share their metric values; None outside that mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def read_dev_bootstrap(state_file: Path = DEV_STATE_FILE) -> str | None:
    """The broker address a running ``taskstream dev`` recorded, if any.

    A file left by a dev that was killed (its pid no longer alive) is ignored: its broker
    died with it.
    """
    try:
        state = json.loads(state_file.read_text())
        os.kill(int(state["pid"]), 0)
    except PermissionError:
        pass  # alive, owned by another user
    except (OSError, ValueError, KeyError, TypeError):
        return None
    value = state.get("bootstrap_servers")
    return value if isinstance(value, str) else None


def write_dev_state(bootstrap_servers: str, state_file: Path = DEV_STATE_FILE) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"bootstrap_servers": bootstrap_servers, "pid": os.getpid()}))


def clear_dev_state(state_file: Path = DEV_STATE_FILE) -> None:
    state_file.unlink(missing_ok=True)
