"""The outbound ESL server: FreeSWITCH's ``socket`` application connects here, one call each.

Built on gevent's ``StreamServer`` with a bounded ``Pool`` (greenswitch's own
server polls ``accept`` every 100 ms and has no drain). Each connection's
handler greenlet *is* the call's controller. ``stop()`` is graceful: stop
accepting, let live calls finish, then cut what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import gevent
from gevent.lock import RLock
from gevent.pool import Pool
from gevent.queue import Queue
from gevent.server import StreamServer

from esl_app.config.tenants import ConfigError, TenantSet, load_tenants
from esl_app.telephony.call import CallController, CallServices
from esl_app.telephony.esl import EslSession

__all__ = ["RELOAD_RETRY_S", "EslServer", "TenantSource"]

#: libev's highest watcher priority (EV_MAXPRI): see :class:`_CallListener`
_FIRST = 2

log = logging.getLogger(__name__)
# A tenant reload is news for the operator: the CLI shows this logger's INFO lines at
# the default level (esl_app.cli.ALWAYS_INFO), without -v.
reload_log = logging.getLogger(__name__ + ".reload")

#: After a reload failed for a passing reason (the database, not the configuration),
#: how long new calls keep the set in force before the same version is tried again.
RELOAD_RETRY_S = 30.0
_LOGGED_ERROR_CHARS = 300  # a failure's message in the log: one short line


class TenantSource:
    """The live tenant configuration: a new call gets what was committed before it arrived.

    A call takes the set once, at its start, and keeps it: runtime updates reach
    new calls only. With a ``version`` fingerprint (``ivr serve``: one aggregate query
    over the stored tenants) every new call checks it and, when it changed, re-reads
    the set before going on, so the first call after ``ivr tenants import`` already
    has the new clinics. A configuration that fails to load is reported and the
    previous, valid set stays in force.

    A failed version is remembered (issue #31): it is not re-read, nor re-logged, for
    every new call until it changes (an invalid configuration) or for
    :data:`RELOAD_RETRY_S` (anything else, e.g. the database). A reload that would
    leave no tenant at all (``{"tenants": []}``) is refused like an invalid one:
    ``ivr serve`` refuses to start on it, and every DID would be "not in service".
    """

    def __init__(self, tenants: TenantSet | None = None, path: str | Path | None = None,
                 loader: Callable[[], TenantSet] | None = None,
                 max_age: float | None = None,
                 version: Callable[[], object] | None = None) -> None:
        """``loader`` (e.g. from the database) is re-read when ``version`` changes.

        ``version`` is a cheap fingerprint of what ``loader`` reads (0.1-0.3 ms on
        SQLite, against 0.3 ms for 3 tenants and 10 ms for 200 to re-read them), checked
        for every new call; parsing happens only when it changed. Without it the loader
        is re-run, in line, once the set is older than ``max_age`` s.
        """
        self.path = Path(path) if path else None
        self._loader = loader
        self._version_of = version
        self._version: object = None
        self.max_age = max_age
        self._loaded_at = time.monotonic()
        self._mtime: float | None = None
        self._lock = RLock()  # concurrent call set-ups share one check and one reload
        self._probe_failing = False
        self._failed: object = None  # the version whose load failed last...
        self._retry_at: float | None = None  # ...and when to try it again (None: once changed)
        self.reloads = 0
        self.checks = 0
        if tenants is None:
            self._version = self._probe()
            tenants = self._load()
        self._tenants = tenants
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        if self.path is None:
            return None
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def _load(self) -> TenantSet:
        if self._loader is not None:
            return self._loader()
        if self.path is None:
            return TenantSet(())
        return load_tenants(self.path)

    def _probe(self) -> object:
        if self._version_of is None:
            return None
        try:
            version = self._version_of()
        except Exception as exc:  # noqa: BLE001 - a call goes on with the set in force
            if not self._probe_failing:
                log.warning("tenant version check failed, keeping the configuration in "
                            "force: %s", exc)
            self._probe_failing = True
            return None
        if self._probe_failing:
            log.info("tenant version check works again")
        self._probe_failing = False
        return version

    def refresh(self) -> bool:
        """Reload only if the source changed; True if it was reloaded."""
        with self._lock:
            self.checks += 1
            version = self._probe()
            if version is None and self._version_of is not None:
                return False  # cannot tell (reported): keep the set rather than fail the call
            if version is not None and version == self._version:
                return False
            if version is not None and version == self._failed and (
                    self._retry_at is None or time.monotonic() < self._retry_at):
                return False  # failed already: reported once, the set in force stays
            return self.reload(version=version, reason="source changed")

    def reload(self, *, version: object = None, reason: str = "requested") -> bool:
        """Re-read the configuration now (SIGHUP forces it); True on success.

        Logged at INFO on :data:`reload_log`, shown at the default level, with what
        changed (tenant counts only, no configuration).
        """
        with self._lock:
            mtime = self._stat()
            if version is None:
                version = self._probe()  # taken first: a change while loading shows next time
            try:
                tenants = self._load()
                if not len(tenants) and len(self._tenants):
                    raise ConfigError(f"it would remove all {len(self._tenants)} tenant(s) "
                                      "(no tenants in the new configuration)")
            except Exception as exc:  # noqa: BLE001 - bad file, database down: keep serving
                log.error("tenant reload (%s) failed, keeping the previous configuration: %s",
                          reason, _brief(exc))
                self._mtime = mtime
                self._loaded_at = time.monotonic()
                self._failed = version
                self._retry_at = (None if isinstance(exc, ConfigError)
                                  else time.monotonic() + RELOAD_RETRY_S)
                return False
            self._failed = None
            added, changed, removed = _diff(self._tenants, tenants)
            self._tenants = tenants
            self._mtime = mtime
            self._version = version
            self._loaded_at = time.monotonic()
            self.reloads += 1
        if changed or removed:  # the booking code's short cache must not outlive the import
            from esl_app.scheduling.service import forget_tenants

            forget_tenants()
        reload_log.info("tenants reloaded (%s): %d added, %d changed, %d removed, %d in force",
                 reason, added, changed, removed, len(tenants))
        return True

    def current(self) -> TenantSet:
        """The set for a new call, re-read first if its source changed since the last call."""
        if self.path is not None:
            if self._stat() != self._mtime:
                self.reload(reason="file changed")
        elif self._loader is not None and self._version_of is not None:
            self.refresh()
        elif (self._loader is not None and self.max_age is not None
              and time.monotonic() - self._loaded_at > self.max_age):
            self.reload(reason="max age")
        return self._tenants

    __call__ = current


def _brief(exc: BaseException) -> str:
    """An exception as one short log line, whatever it carries."""
    text = " ".join(str(exc)[:_LOGGED_ERROR_CHARS].split("\n", 1)[0].split())
    return text or type(exc).__name__


def _diff(old: TenantSet, new: TenantSet) -> tuple[int, int, int]:
    """How many tenants were added, changed and removed (by id)."""
    before = {t.id: t for t in old}
    after = {t.id: t for t in new}
    changed = sum(1 for tid, t in after.items() if tid in before and before[tid] != t)
    return len(after.keys() - before), changed, len(before.keys() - after)


class _CallListener(StreamServer):
    """A ``StreamServer`` whose new connection is served in the same loop iteration.

    Why: a call's set-up is on the caller's clock, and on a busy worker two waits
    made most of its tail (issue #32), and neither is work of ours:

    - the listening socket's watcher was one of many due at a poll, and libev runs
      those of one priority last in, first out: at the highest priority it runs
      before the calls' sockets of the same poll;
    - ``Pool.spawn`` only *schedules* the handler, which then ran after every other
      watcher of that iteration, at the next one's start. Switched into directly, it
      writes its ``connect`` and waits for the reply before the hub goes on: the
      same step as gevent's own socket waits, which are resumed from a watcher too.
    """

    def start_accepting(self) -> None:
        if self._watcher is None:
            self._watcher = self.loop.io(self.socket.fileno(), 1, priority=_FIRST)
            self._watcher.start(self._do_read)


def _spawn_now(pool: Pool) -> Callable[..., gevent.Greenlet]:
    """``pool.spawn`` that also runs the new greenlet at once when called on the hub.

    ``Greenlet.run`` cancels the start that ``pool.start`` scheduled, so the greenlet
    still runs exactly once; off the hub (a test calling the handler) it is plain
    ``pool.spawn``.
    """
    def spawn(func: Callable[..., object], *args: object) -> gevent.Greenlet:
        greenlet = pool.greenlet_class(func, *args)
        pool.start(greenlet)
        if gevent.getcurrent() is gevent.get_hub():
            greenlet.switch()
        return greenlet

    return spawn


class EslServer:
    """Accepts FreeSWITCH outbound-socket connections and runs one controller per call."""

    def __init__(self, services: CallServices, host: str = "127.0.0.1", port: int = 8084, *,
                 max_calls: int = 2000, backlog: int = 1024, listener=None) -> None:
        """``listener`` may be an already bound socket (pre-fork workers sharing a port)."""
        self.services = services
        self.pool = Pool(max_calls)
        if listener is not None:
            self.server = _CallListener(listener, self._handle, spawn=self.pool)
        else:
            self.server = _CallListener((host, port), self._handle, spawn=self.pool,
                                        backlog=backlog)
        # after the pool (set_spawn links "full" to it), only the spawn itself changes
        self.server._spawn = _spawn_now(self.pool)
        self.calls: dict[int, CallController] = {}
        self.completed = 0
        self.last_transcripts: list = []
        self.keep_transcripts = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> EslServer:
        """Bind and start accepting (non-blocking)."""
        self.server.start()
        log.info("ESL server listening on %s:%d", *self.address)
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_host, self.server.server_port

    @property
    def active_calls(self) -> int:
        """Calls whose controller is still running."""
        return len(self.calls)

    @property
    def connections(self) -> int:
        """Handler greenlets alive (a connection whose call already ended may linger)."""
        return len(self.pool)

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: close the listener, drain live calls, then end the rest."""
        self.server.close()
        if self.calls:
            log.info("draining %d live call(s)", len(self.calls))
        self.pool.join(timeout=timeout)
        if len(self.pool):
            log.warning("ending %d call(s) still live after %.0fs", len(self.pool), timeout)
            for controller in list(self.calls.values()):
                with contextlib.suppress(Exception):
                    controller.session.hangup()
            self.pool.join(timeout=2.0)
            self.pool.kill(block=True, timeout=2.0)
        self.server.stop(timeout=1)

    # -- one connection ------------------------------------------------------------

    def _handle(self, sock, address) -> None:
        queue: Queue = Queue()
        session: EslSession | None = None
        key = id(gevent.getcurrent())
        accepted = time.monotonic()
        try:
            session = EslSession(sock, address, sink=queue.put,
                                 command_timeout=self.services.command_timeout)
            controller = CallController(session, queue, self.services)
            controller.accepted_at = accepted
            self.calls[key] = controller
            transcript = controller.run()
            if controller.probe:  # a port probe (e.g. ivrctl health), not a call
                return
            self.completed += 1
            if self.keep_transcripts:
                self.last_transcripts.append(transcript)
                del self.last_transcripts[:-self.keep_transcripts]
        except Exception:
            log.exception("call handler crashed (the server carries on)")
        finally:
            self.calls.pop(key, None)
            if session is not None:
                with contextlib.suppress(Exception):
                    session.stop()
            with contextlib.suppress(Exception):
                sock.close()
