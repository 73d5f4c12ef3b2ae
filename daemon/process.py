"""What every process of the daemon does: prepared at start, frozen once ready.

The daemon (daemon/app.py) and its worker processes (daemon/workers.py) both
start this way; here rather than in app.py so that workers.py need not import
the daemon's lifecycle that imports it.
"""
from __future__ import annotations

import ctypes
import faulthandler
import gc

from daemon import logs
from daemon.config import LogSettings

M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter


def prepare_process(log_settings: LogSettings) -> None:
    """Log, allocator and crash reports, for the daemon and its worker processes."""
    _return_big_buffers_to_the_system()
    logs.configure(log_settings)
    faulthandler.enable()       # a crash, or systemd's SIGABRT on a missed watchdog: every thread's stack


def freeze_startup_objects() -> None:
    """Leave what startup made (modules, templates, settings) out of garbage collection.

    A full collection walks every object the process holds: in the daemon
    that took 13–28 ms, and the event loop, with every sender waiting on it,
    stood still meanwhile (in a worker, its write transaction stayed open,
    and the next commit of received mail waited). Objects alive once the
    process is ready live as long as it does; frozen, they are not walked,
    and a full collection takes 2–4 ms.
    """
    gc.collect()
    gc.freeze()


def _return_big_buffers_to_the_system() -> None:
    """Keep glibc from raising its mmap threshold after the first big mail.

    By default glibc serves a buffer freed once from the heap next time, and
    the heap is not given back: after one 25 MB mail the daemon would keep
    every later mail's copies resident. A fixed threshold keeps big buffers
    in their own mappings, returned to the system when freed.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):   # not glibc: nothing to tune
        pass
