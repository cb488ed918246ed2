"""`taskstream dev --broker kafka`: the README's path on one Apache Kafka node instead of Tansu.

dev starts its own Kafka whatever the session's broker is (it needs java and mvn, as the
Apache Kafka test cluster does), and leaves neither the node nor its data behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.running import wait_until
from tests.integration.test_cli import dev_env, dev_running, send_add
from tests.integration.test_http_dev import alive, children_of

_MISSING = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(_MISSING), reason=f"dev --broker kafka needs {' and '.join(_MISSING)} on PATH"
    ),
]


def test_dev_on_apache_kafka_runs_a_task_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    env = dev_env(None)
    with dev_running(
        tmp_path, env, True, "examples.app:app", "--broker", "kafka", ready_s=240
    ) as output:
        assert send_add(tmp_path, env, 2, 3)[1] == "5"
        kafka = {
            pid: command
            for pid, command in children_of(_dev_pid(tmp_path)).items()
            if "kafka.Kafka" in command
        }
        assert len(kafka) == 1, kafka
        [(node_pid, command)] = kafka.items()
        data = Path(command.split()[-1]).parent.parent  # .../node-1/server.properties
        assert data.name.startswith("taskstream-kafka-") and data.is_dir()
    out = output[0]
    assert "(Apache Kafka, one node, data in a temporary directory)" in out
    assert "taskstream dev: stopped" in out
    wait_until(lambda: not alive(node_pid), 30, "the Kafka node to end")
    assert not data.exists()


def _dev_pid(cwd: Path) -> int:
    return int(json.loads((cwd / ".taskstream" / "dev.json").read_text())["pid"])
