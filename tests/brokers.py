"""Kafka-protocol brokers the test session can start, beside an external cluster.

``TASKSTREAM_TEST_BROKER=tansu`` (the default) starts Tansu, the broker ``taskstream dev``
uses; ``noida`` starts noida-db (``pip install -e '.[noida]'``), which gets right what Tansu
gets wrong (queried watermarks, compaction, retention, read_committed) but never expires a
consumer that died without closing, so crash-failover tests skip on it. Running the suite on
both shows that the code is not tuned to one broker's quirks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from taskstream.embedded_broker import EmbeddedBroker, free_port


class NoidaBroker:
    """noida-db with only its Kafka protocol, in a fresh data directory."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> NoidaBroker:
        binary = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [binary, "start", "--data-dir", str(self.data_dir), "--only", "kafka",
                 "--kafka-port", str(self.port)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        # The same readiness wait as the embedded broker's.
        EmbeddedBroker._wait_until_listening(self, 60)  # type: ignore[arg-type]
        return self

    def suspend(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)  # its whole process group: it may fork a server

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        # The noida-db command is a launcher: the server is its child, in its process group.
        process, self._process = self._process, None
        if process is None:
            return
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
