"""Room for a process's sockets, made before the calls come: the fd limit and the fd table.

Why: a worker holds two sockets per call (ESL and the audio fork). Two things go
wrong on the way to a thousand of them if left to the kernel's defaults:

- the soft ``RLIMIT_NOFILE`` is often 1024, and ``accept`` then fails with
  ``EMFILE`` long before ``--max-calls``;
- the kernel grows a process's fd table by doubling it (64 → 128 → … → 2048) in the
  ``accept``/``socket`` call that needs the next slot, and in a process with more
  than one thread (ours have thread pools) that call waits for an RCU grace period
  (``expand_files`` → ``synchronize_rcu``): 4–17 ms on this project's 2-vCPU test
  box, idle or busy (``bench/bench_fdtable.py``). Each doubling stops the hub, so
  every call of the worker, during the ramp-up when call set-ups are being timed.

:func:`reserve_fds` raises the soft limit (never above the hard one) and sizes the
table once, at start-up, by duplicating a descriptor onto the highest number that
will be needed and closing it again: the kernel never shrinks a table. Done before
the process starts a thread, it costs no grace period at all. Linux keeps the table
at 8 bytes per slot plus two bitmaps: 2048 slots are ~17 kB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource

__all__ = ["fd_table_size", "reserve_fds"]

log = logging.getLogger(__name__)

SPARE_FDS = 256  # listeners, the database, log files, pipes, the prompt cache's files


def fd_table_size() -> int | None:
    """Slots in this process's fd table (``FDSize`` of /proc/self/status), or None."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("FDSize:"):
                    return int(line.split()[1])
    return None


def reserve_fds(sockets: int) -> int:
    """Make room for ``sockets`` descriptors (plus :data:`SPARE_FDS`); returns the room made.

    Call it before the process starts threads: it briefly occupies the top slot.

    The soft limit is raised toward the hard one when it is lower than needed; if
    the hard limit is lower still, the room is what it allows and a warning says
    how many calls that holds. Never raises: a process that cannot reserve runs as
    before, with the kernel growing the table on demand.
    """
    want = max(0, sockets) + SPARE_FDS
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 0
    limit = soft if soft != resource.RLIM_INFINITY else want
    if limit < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            limit = new
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, new, exc)
    if limit < want:
        log.warning("the open-file limit (%d, hard %s) leaves room for %d sockets, not %d; "
                    "raise it (ulimit -n / LimitNOFILE=)", limit, hard,
                    max(0, limit - SPARE_FDS), sockets)
    top = min(want, limit) - 1
    if top <= 2:
        return 0
    room = min(want, limit)
    table = fd_table_size()
    if (table is not None and table > top) or _is_open(top):
        return room  # already that large (an open ``top`` must not be replaced)
    opened = None
    try:
        if not _is_open(2):
            opened = os.open(os.devnull, os.O_RDONLY)
        os.dup2(2 if opened is None else opened, top, inheritable=False)
        os.close(top)
    except OSError as exc:
        log.debug("fd table not pre-sized (%s)", exc)
        return 0
    finally:
        if opened is not None:
            os.close(opened)
    return room


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
