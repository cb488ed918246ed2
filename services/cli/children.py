"""Child processes that die with their parent, however the parent ends.

A supervisor that is SIGKILLed runs no cleanup, so its children must notice by themselves.
On Linux each child asks the kernel for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, set between fork and exec, kept across exec). The kernel sends
it when the *thread* that forked the child exits: spawn from the main thread. Elsewhere
(macOS) the children outlive a killed parent; an orderly stop still ends them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive `sig` when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not after
    parent = os.getpid()

    def set_death_signal() -> None:
        if sig is not signal.SIGKILL:
            # Until exec the parent's Python handler would swallow the signal: the default.
            signal.signal(sig, signal.SIG_DFL)
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_death_signal


def spawn(
    command: Sequence[str], *, death_signal: signal.Signals = signal.SIGTERM, **options: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(command, **options)`` whose process gets `death_signal` when we die."""
    process: subprocess.Popen[bytes] = subprocess.Popen(
        command, preexec_fn=die_with_parent(death_signal), **options
    )
    return process
