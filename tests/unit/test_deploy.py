"""deploy/: what cannot run here (Docker, Kubernetes, Grafana) is checked for what it says.

Kubernetes manifests against the API schemas bundled with kubernetes-validate (offline,
strict: unknown fields fail), yamllint, the compose file's structure, Prometheus's config and
alert rules with promtool (its `check` and `test rules`), and the Grafana dashboard and alerts
against the metrics that taskstream.metrics defines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from yamllint import linter
from yamllint.config import YamlLintConfig

from taskstream import metrics
from taskstream.config import Settings
from taskstream.kafka.topics import task_topic, worker_group
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on
CRD_KINDS = {"ScaledObject", "PodMonitor"}  # no schema bundled: checked field by field below


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, recursively (what `kubectl apply -k` would send,
    less the name/label transformations, which change nothing validated here)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        docs.extend(kustomize(path) if path.is_dir() else load_all(path))
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


OVERLAYS = ["base", "keda", "hpa"]


# --- YAML ----------------------------------------------------------------------------------


def test_every_yaml_file_in_deploy_passes_yamllint() -> None:
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 10
    problems = [
        f"{path.relative_to(REPO)}:{p.line}:{p.column} {p.message}"
        for path in files
        for p in linter.run(path.read_text(), config, str(path))
    ]
    assert problems == []


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = kustomize(K8S / overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_manifest_file_is_part_of_a_kustomization_or_documented() -> None:
    listed = {
        (d / r).resolve()
        for d in (K8S / o for o in OVERLAYS)
        for r in yaml.safe_load((d / "kustomization.yaml").read_text())["resources"]
    }
    standalone = {K8S / "podmonitor.yaml"}  # applied by hand where the operator runs
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml" and path not in standalone:
            assert path.resolve() in listed, f"{path} is not in any kustomization"


def config_map(docs: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = by_kind(docs, "ConfigMap", "taskstream-config")["data"]
    return data


def pod_spec(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(docs, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def test_the_producer_service_probes_healthz_and_readyz_and_its_service_selects_it() -> None:
    docs = kustomize(K8S / "base")
    deployment = by_kind(docs, "Deployment", "taskstream-producer")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["args"][0] == "serve" and "8000" in container["args"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = by_kind(docs, "Service", "taskstream-producer")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_workers_get_more_time_to_stop_than_their_drain_and_every_pdb_selects_pods() -> None:
    docs = kustomize(K8S / "base")
    grace = float(config_map(docs)["TASKSTREAM_SHUTDOWN_GRACE_S"])
    assert grace == Settings().shutdown_grace_s
    worker = pod_spec(docs, "taskstream-worker")
    assert worker["terminationGracePeriodSeconds"] >= grace + 10  # drain, commit, leave
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        deployment = by_kind(docs, "Deployment", pdb["metadata"]["name"])
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_every_pod_is_configured_from_the_config_map_and_secret_and_scraped() -> None:
    docs = kustomize(K8S / "base")
    metrics_port = config_map(docs)["TASKSTREAM_METRICS_PORT"]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        template = deployment["spec"]["template"]
        container = template["spec"]["containers"][0]
        sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert sources == {"taskstream-config", "taskstream-secrets"}
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        ports = {str(p["containerPort"]) for p in container["ports"]}
        assert annotations["prometheus.io/port"] in ports
        if container["args"][0] != "serve":  # worker and materializer serve metrics alone
            assert annotations["prometheus.io/port"] == metrics_port
    secret = by_kind(docs, "Secret", "taskstream-secrets")
    assert secret["stringData"]["TASKSTREAM_STORE"].startswith("postgresql://")


def test_keda_scales_the_worker_group_on_its_own_lag_up_to_the_partition_count() -> None:
    docs = kustomize(K8S / "keda")
    settings = config_map(docs)
    scaled = by_kind(docs, "ScaledObject", "taskstream-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    by_kind(docs, "Deployment", spec["scaleTargetRef"]["name"])
    assert spec["maxReplicaCount"] == int(settings["TASKSTREAM_PARTITIONS"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    trigger, seconds = spec["triggers"]
    prefix = settings["TASKSTREAM_TOPIC_PREFIX"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == worker_group(prefix)
    assert trigger["metadata"]["topic"] == task_topic(prefix, "default")
    assert trigger["metadata"]["bootstrapServers"] == settings["TASKSTREAM_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    # Beside it, lag in time: the workers' own gauge, through Prometheus.
    assert seconds["type"] == "prometheus" and seconds["metricType"] == "Value"
    query = seconds["metadata"]["query"]
    assert referenced_names(query) == {"taskstream_consumer_lag_seconds"}
    assert f'topic="{task_topic(prefix, "default")}"' in query
    assert float(seconds["metadata"]["threshold"]) > 0


def test_the_hpa_alternative_scales_the_workers_on_the_lag_metric() -> None:
    docs = kustomize(K8S / "hpa")
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "taskstream-worker")["spec"]
    by_kind(docs, "Deployment", hpa["scaleTargetRef"]["name"])
    assert hpa["maxReplicas"] == int(config_map(docs)["TASKSTREAM_PARTITIONS"])
    assert hpa["metrics"][0]["external"]["metric"]["name"] == "taskstream_consumer_lag"


def test_the_pod_monitor_scrapes_ports_the_pods_name() -> None:
    (monitor,) = load_all(K8S / "podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    docs = kustomize(K8S / "base")
    named = {
        p["name"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in named and endpoint["path"] == "/metrics"


# --- compose and the image -----------------------------------------------------------------


def test_the_compose_file_runs_every_role_with_health_checks_and_scalable_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {
        "kafka", "postgres", "producer", "worker", "materializer", "beat", "prometheus",
        "grafana",
    }  # fmt: skip
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    worker = services["worker"]
    # `--scale worker=N` needs replicas that do not clash: no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][0] == "worker"
    grace = float(worker["environment"]["TASKSTREAM_SHUTDOWN_GRACE_S"])
    assert int(worker["stop_grace_period"].rstrip("s")) > grace
    producer = services["producer"]
    assert producer["command"][:2] == ["serve", "examples.app:app"]
    assert producer["command"][producer["command"].index("--port") + 1] == "8000"
    # Open without tokens (--allow-open), so published on the host's loopback only.
    assert "--allow-open" in producer["command"] and producer["ports"] == ["127.0.0.1:8000:8000"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert services["materializer"]["command"][0] == "materialize"
    assert services["beat"]["command"][0] == "beat"
    assert services["beat"]["deploy"]["replicas"] >= 2  # one leads, one stands by
    for role in ("producer", "worker", "materializer", "beat"):
        env = services[role]["environment"]
        assert env["TASKSTREAM_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["TASKSTREAM_STORE"].startswith("postgresql://")
        conditions = {dep: c["condition"] for dep, c in services[role]["depends_on"].items()}
        assert conditions == {"kafka": "service_healthy", "postgres": "service_healthy"}
        assert services[role]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def test_the_image_has_one_entry_point_for_every_role() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["taskstream"]' in dockerfile
    assert ".[postgres]" in dockerfile and "USER taskstream" in dockerfile


# --- Prometheus ----------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
    ids=["check config", "check rules", "test rules"],
)
def test_promtool_accepts_the_prometheus_files(args: list[str]) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def exposed_names() -> set[str]:
    """Every series name taskstream.metrics can expose."""
    names: set[str] = set()
    for metric in vars(metrics).values():
        if isinstance(metric, Counter):
            names.add(f"{metric._name}_total")
        elif isinstance(metric, Histogram):
            names.update(f"{metric._name}_{s}" for s in ("bucket", "sum", "count"))
        elif isinstance(metric, Gauge):
            names.add(metric._name)
    return names


def referenced_names(expr: str) -> set[str]:
    return set(re.findall(r"\btaskstream_[a-z_]+\b", expr))


def test_alert_rules_use_only_metrics_that_exist() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "TaskstreamConsumerLagGrowing", "TaskstreamDeadLetters", "TaskstreamNoWorkers",
        "TaskstreamResultDelayHigh", "TaskstreamConsumerLagSecondsHigh",
    } <= set(alerts)  # fmt: skip
    for name, expr in alerts.items():
        assert referenced_names(expr) <= exposed_names(), name


def test_the_grafana_dashboard_charts_the_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "taskstream.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*(referenced_names(e) for e in exprs))
    assert used <= exposed_names()
    # Throughput, failures, lag per partition, latency percentiles.
    assert {"taskstream_tasks_succeeded_total", "taskstream_tasks_failed_total"} <= used
    assert any("by (topic, partition)" in e and "taskstream_consumer_lag" in e for e in exprs)
    assert any("histogram_quantile(0.99" in e and "end_to_end" in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_readme_documents_every_metric() -> None:
    readme = (REPO / "docs" / "operations.md").read_text()  # the README's Operations moved here
    start = readme.index("\n## Metrics\n")
    operations = readme[start : readme.index("\n## ", start + 1)]
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            suffix = "_total" if isinstance(metric, Counter) else ""
            assert f"`{metric._name}{suffix}`" in operations, metric._name
