"""Kafka-protocol brokers the test session can start, beside an external cluster.

``TASKSTREAM_TEST_BROKER=tansu`` (the default) starts Tansu, the broker ``taskstream dev``
uses; ``noida`` starts noida-db (``pip install -e '.[noida]'``), which gets right what Tansu
gets wrong (queried watermarks, compaction, retention, read_committed) but never expires a
consumer that died without closing, so crash-failover tests skip on it. Running the suite on
both shows that the code is not tuned to one broker's quirks.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from taskstream.cli.embedded_broker import EmbeddedBroker


class NoidaBroker(EmbeddedBroker):
    """noida-db with only its Kafka protocol, in a fresh data directory."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.data_dir = data_dir

    def command(self) -> list[str]:
        binary = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
        return [binary, "start", "--data-dir", str(self.data_dir), "--only", "kafka",
                "--kafka-port", str(self.port)]  # fmt: skip

    def start(self, timeout: float = 60.0) -> NoidaBroker:
        super().start(timeout)
        return self
