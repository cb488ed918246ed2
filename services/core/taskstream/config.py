"""Settings: the one place that reads the environment.

Each setting comes from, in rising precedence: its default, a ``TASKSTREAM_<NAME>`` environment
variable, an explicit keyword argument. librdkafka settings pass through untouched: any
``TASKSTREAM_KAFKA_<NAME>`` variable (``TASKSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` becomes
``security.protocol``) or the ``kafka`` mapping, so SASL/TLS need no code here.

When no bootstrap servers are given at all, the address that ``taskstream dev`` wrote to
``.taskstream/dev.json`` in the working directory is used, so ``taskstream send`` in a second
terminal finds the embedded broker.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskstream.errors import ConfigError
from taskstream.kafka.topics import DELAY_TIERS_S

ENV_PREFIX = "TASKSTREAM_"
KAFKA_ENV_PREFIX = "TASKSTREAM_KAFKA_"
DEV_STATE_FILE = Path(".taskstream") / "dev.json"
AT_LEAST_ONCE = "at-least-once"
EXACTLY_ONCE = "exactly-once"


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = None  # "host:port,host:port"; None: the dev broker, if running
    # Lookup store URL. Not in repr(), nor are tokens and librdkafka extras: they may hold
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
    shared_queues: str = ""
    # Results and revocations (Celery's result_expires and REVOKE_EXPIRES):
    result_expires: float | None = 86_400.0  # s; outcomes older are deleted; None or 0: kept
    revoke_expires_s: float = 10_800.0  # s revocations are kept: >= the largest delay tier
    revokes_max: int = 50_000  # revoked ids a worker keeps (Celery's REVOKES_MAX); oldest go
    schemas_dir: str = "schemas"  # where `taskstream schemas export/check` write and read
    # The HTTP service (`taskstream serve`, taskstream.producer.http):
    http_tokens: str = field(default="", repr=False)  # comma-separated bearer tokens; "": none
    http_session_s: float = 43_200.0  # a console login lasts this long (its cookie's expiry)
    # No token needed (with tokens set). /metrics holds counts and timings by route, no
    # secret; /openapi.json lists every task and schema, so it is guarded like /v1/tasks.
    http_open_paths: str = "/healthz,/readyz,/metrics"
    # Host names served, comma-separated ("*": any); empty: loopback only without tokens,
    # any with tokens (taskstream.producer.http.origins: DNS rebinding).
    http_allowed_hosts: str = ""
    http_max_body_bytes: int = 1_048_576  # larger request bodies get 413
    http_batch_max_items: int = 10_000  # items per :batch request
    http_publish_timeout_s: float = 5.0  # wait for the broker's ack before answering 503
    http_idempotency_ttl_s: float = 86_400.0  # how long an Idempotency-Key keeps its task id
    http_recent_ids: int = 200_000  # accepted ids remembered per process (PENDING, not 404)
    http_max_wait_s: float = 60.0  # upper bound of GET ?wait=
    # An oversize body is read and dropped, up to these bounds, before its 413 is sent: a
    # client that reads only after sending everything then sees the 413, not a reset.
    http_drain_max_bytes: int = 16_777_216  # beyond this the connection is closed instead
    http_drain_timeout_s: float = 5.0  # as nginx's lingering_timeout
    # The server's own bounds (taskstream.producer.http.protocol), before any route or token:
    http_max_header_bytes: int = 16_384  # request line and headers, in bytes; beyond: 431
    http_max_headers: int = 100  # header fields per request; beyond: 431
    http_header_timeout_s: float = 10.0  # a request's line and headers, from its first byte
    # (and a new connection's first byte); beyond: 408 and the connection closes
    http_body_timeout_s: float = 30.0  # a request's whole body, after its headers; then 408
    http_keepalive_timeout_s: float = 5.0  # an idle connection between requests is closed
    http_max_connections: int = 1_000  # per process; beyond: 503 (uvicorn's limit_concurrency)
    # Open connections from one client address, per process; beyond, new ones are closed at
    # once. 0: no such cap (behind a proxy every client has the proxy's address).
    http_max_connections_per_client: int = 0
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
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "kafka":
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, f.type, raw)
        kafka = {
            name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
            for name, value in env.items()
            if name.startswith(KAFKA_ENV_PREFIX)
        }
        kafka.update(overrides.pop("kafka", None) or {})
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("shared_queues"), list | tuple | set | frozenset):
            values["shared_queues"] = ",".join(values["shared_queues"])  # App(shared_queues=[...])
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
        return frozenset(q.strip() for q in self.shared_queues.split(",") if q.strip())

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


def _parse(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from exc
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
