"""Who holds a claim on a row, and whether that process is gone.

Several processes share the work stored in the database — the worker
processes of one daemon, and daemons on several machines. A claim (received
mail being handled, an outbox row being sent, a scheduled run) names its
holder as `host:pid`. A claim whose holder ran on this host and runs no
longer is handed out again at once; one of another host is trusted until its
lease runs out (a process elsewhere cannot be asked whether it lives). So
each machine needs a host name of its own.
"""
from __future__ import annotations

import os
import socket


def claimant() -> str:
    """This host and process (read at call time: a worker may be a child)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claimant_gone(claimed_by: str) -> bool:
    """The claim's process ran on this host and runs no longer."""
    host, _, pid = claimed_by.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def this_host() -> str:
    """The start of every claim of this host's processes: `host:`."""
    return f"{socket.gethostname()}:"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
