"""A network namespace whose only way to the brokers is a relay that a test can cut.

A process started with :meth:`IsolatedNetwork.command` runs in its own network namespace
(``ip netns``, as root), where each broker's ``127.0.0.1:<port>`` is a socket of the relay
in this process; the relay passes bytes on to the same port on the host's loopback, where
the brokers listen, so the cluster's advertised addresses work as they are. :meth:`cut`
stops the relay passing bytes both ways, keeping every connection open (no reset: a pulled
cable, not a refused connection); :meth:`heal` lets them pass again.

The listening sockets are made inside the namespace by the thread that enters it
(``setns(2)``; Python 3.11 has no ``os.setns``), which then goes back to the host's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator

_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def unavailable() -> str | None:
    """Why a namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    probe = f"ts-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


class IsolatedNetwork:
    def __init__(self, ports: list[int]) -> None:
        self.name = f"ts-{uuid.uuid4().hex[:8]}"
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
                       check=True)  # fmt: skip
        listeners = self._listen(ports)
        for port, listener in zip(ports, listeners, strict=True):
            threading.Thread(target=self._accept, args=(listener, port), daemon=True).start()

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self._open.set()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def _listen(self, ports: list[int]) -> list[socket.socket]:
        host = os.open("/proc/self/ns/net", os.O_RDONLY)
        inside = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(inside)
            try:
                listeners = []
                for port in ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
                    s.listen(64)
                    listeners.append(s)
            finally:
                _setns(host)
        finally:
            os.close(host)
            os.close(inside)
        self._sockets += listeners
        return listeners

    def _accept(self, listener: socket.socket, port: int) -> None:
        while not self._closed:
            try:
                inner, _ = listener.accept()
            except OSError:
                return
            try:
                outer = socket.create_connection(("127.0.0.1", port))
            except OSError:
                inner.close()
                continue
            self._sockets += [inner, outer]
            for src, dst in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pass, args=(src, dst), daemon=True).start()

    def _pass(self, src: socket.socket, dst: socket.socket) -> None:
        """Bytes from ``src`` to ``dst`` while the link is up; while cut, what was read
        waits here and nothing more is read (the peers' buffers fill, as on a dead link)."""
        try:
            while True:
                self._open.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._open.wait()
                if self._closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Shut down first: the other direction's recv wakes (and ends) before the close.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            for s in (src, dst):
                s.close()


@contextlib.contextmanager
def isolated(ports: list[int]) -> Iterator[IsolatedNetwork]:
    network = IsolatedNetwork(ports)
    try:
        yield network
    finally:
        network.close()
