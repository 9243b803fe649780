"""Pre-fork workers for ``ivr serve --workers N``: every core runs its own gevent hub.

One Python process uses one core, so the server forks N worker processes, each
running the ESL server, its own media server and the HTTP API in its own hub.

**Listening sockets: bound once by the parent, inherited across fork** (not one
``SO_REUSEPORT`` socket per worker). Why:

- a worker that stops (drain, crash) takes no connections with it: with
  ``SO_REUSEPORT`` each socket has its own accept queue and connections the
  kernel already hashed to a closing socket are reset, i.e. callers sent to the
  dialplan fallback in the middle of a rolling restart;
- the parent keeps the sockets, so a crashed worker is replaced without a
  window in which the port is closed, and ``port 0`` (tests, load tests) just
  works: every worker shares the one ephemeral port;
- balance: every idle worker is woken for a new connection and the least busy
  one wins the ``accept`` (with two or more workers each accepts one connection
  per wake-up, ``max_accept = 1``; a single worker takes a burst at once); with
  2–8 workers the wake-ups cost nothing measurable.

**Media routing is shared-nothing.** A call's audio must reach the process that
owns its ESL connection (its controller, VAD state and recogniser live there).
So no media port is shared: worker *i* binds its private media port
``media_port + 1 + i`` (or an ephemeral one when ``media_port`` is 0) and the
call engine puts *that* address in the ``uuid_audio_fork`` URL —
:func:`esl_app.runtime.wiring.start_media_for_calls` is called inside the
worker, so the URL it builds is already the worker's own. Other code asks
:func:`media_address` / :func:`current_worker`. Firewalls must open
``media_port + 1 … media_port + N`` (FreeSWITCH connects to them).

**Stop**: SIGTERM/SIGINT to the parent closes its copy of the listeners and is
forwarded to the workers, which stop accepting (the port closes once the last
worker closed it, so FreeSWITCH's ``socket`` fails fast to the dialplan
fallback), let live calls finish for up to ``drain_timeout`` seconds, then end
what is left and exit. The parent reaps them and exits 0. A worker that dies
otherwise is restarted (with a back-off if it keeps dying). SIGHUP is forwarded
(each worker re-reads the tenants from the database at once; an import reaches the
next call without it).

The parent never starts a gevent hub: it forks with the original ``os.fork``
and waits for signals with ``sigtimedwait``; each child calls
``gevent.reinit()`` before anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from esl_app.config.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_PROFILE,
    DEFAULT_TENANTS,
    database_url,
    env,
    env_int,
    parse_hostport,
    tenants_path,
)

__all__ = [
    "WorkerConfig",
    "WorkerInfo",
    "bind_listener",
    "current_worker",
    "main",
    "media_address",
    "media_port_for",
    "run_workers",
]

log = logging.getLogger(__name__)

READY_PREFIX = "ivr ready "
SOCKETS_PER_CALL = 2  # the ESL connection and the audio fork
MAX_QUICK_FAILURES = 5  # a worker dying this often within 5 s of its start stops the server
_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything ``ivr serve`` needs; validated by the CLI, shared by all workers."""

    esl: tuple[str, int] = ("127.0.0.1", 8084)
    media: tuple[str, int] | None = ("127.0.0.1", 8085)
    http: tuple[str, int] | None = ("127.0.0.1", 8086)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    db_url: str = DEFAULT_DATABASE_URL
    tenants_path: str = DEFAULT_TENANTS
    max_calls: int = 2000
    drain_timeout: float = 30.0
    profile: str = field(default_factory=lambda: env("IVR_PROFILE", DEFAULT_PROFILE))
    profile_seed: int | None = field(default_factory=lambda: env_int("IVR_PROFILE_SEED"))
    backlog: int = 1024


@dataclass(frozen=True)
class WorkerInfo:
    """Who this process is: worker index, pid and its private media address."""

    index: int
    pid: int
    media: tuple[str, int] | None


_current: WorkerInfo | None = None


def current_worker() -> WorkerInfo | None:
    """The identity of the calling worker (None in the parent or an in-process server)."""
    return _current


def media_address() -> tuple[str, int] | None:
    """The media (audio-fork) address owned by this worker, for ``uuid_audio_fork`` URLs."""
    return _current.media if _current else None


PURGE_FIRST_DELAY = 60.0
PURGE_EVERY = 24 * 3600.0


def _purge_daily() -> None:
    """Remove call records and tickets past each tenant's retention, once a day."""
    import gevent

    from esl_app.scheduling.retention import purge

    gevent.sleep(PURGE_FIRST_DELAY)
    while True:
        try:
            report = purge(actor="system:serve")
            if report.total:
                log.info("retention purge removed %d row(s)", report.total)
        except Exception:  # noqa: BLE001 - a failed purge must not stop the server
            log.exception("retention purge failed")
        _sweep_interrupted()
        gevent.sleep(PURGE_EVERY)


def _reminder_loop(esl: tuple[str, int], source: Any) -> None:
    """Worker 0 places every reminder call of this host (claims keep hosts apart).

    FreeSWITCH sends an answered reminder call to ``IVR_REMINDER_BOT`` (default: this
    server's ESL address, 127.0.0.1 when it listens on every interface).
    """
    from esl_app.reminders.dialer import Dialer
    from esl_app.reminders.scheduler import INTERVAL_S, ReminderScheduler
    from esl_app.telephony.records import worker_tag

    host, port = esl
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    bot = env("IVR_REMINDER_BOT")
    if bot:  # a malformed address is ignored, as before
        with contextlib.suppress(ValueError):
            host, port = parse_hostport(bot, default_port=port)
    sched = ReminderScheduler(source.current, Dialer((host, port)), worker_tag())
    sched.run_forever(float(os.environ.get("IVR_REMINDER_INTERVAL", INTERVAL_S)))


def _sweep_interrupted() -> None:
    """Calls a dead worker never finished get the outcome ``interrupted``."""
    from esl_app.telephony.records import sweep_interrupted

    try:
        sweep_interrupted()
    except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop a worker
        log.warning("could not sweep interrupted call records: %s", exc)


def _start_checkpointer() -> None:
    """SQLite: fold the WAL back in a real OS thread, so no booking pays for a checkpoint."""
    from gevent import monkey

    from esl_app.db import checkpoint_forever, sqlite_path

    path = sqlite_path()
    if path is not None:
        start = monkey.get_original("_thread", "start_new_thread")
        start(checkpoint_forever, (path, 1.0))


def _start_outbox_sender() -> Any:
    """Deliver queued confirmations (SMS, e-mail) from a greenlet of this worker.

    Its providers (boto3 clients) are built here, before calls are accepted. One worker
    per server is enough; each message is claimed with a conditional UPDATE,
    so servers sharing a database never send one twice.
    """
    from esl_app.notify.sender import start_sender

    return start_sender(warm=True)


def media_port_for(base: int, index: int, avoid: tuple[int, ...] = ()) -> int:
    """Worker ``index``'s private media port, counting up from ``base`` (0 stays ephemeral).

    Ports in ``avoid`` (the ESL and HTTP ports) are skipped, so with the defaults worker 0
    listens on 8085 itself, worker 1 on 8087, worker 2 on 8088 …
    """
    if base == 0:
        return 0
    free = (port for port in itertools.count(base) if port not in avoid)
    return next(itertools.islice(free, index, None))


def bind_listener(host: str, port: int, backlog: int = 1024, what: str = "") -> Any:
    """A listening TCP socket made with the *unpatched* socket module (no hub in the parent).

    A failure is an OSError whose message names the address and what it was for
    ("cannot listen on 127.0.0.1:8084 (--esl): address already in use"), so that the
    operator's one error line says which option to change.
    """
    from gevent import monkey

    sockmod = __import__("socket")
    raw_socket = monkey.get_original("socket", "socket")
    family = sockmod.AF_INET6 if ":" in host else sockmod.AF_INET
    sock = raw_socket(family, sockmod.SOCK_STREAM)
    try:
        sock.setsockopt(sockmod.SOL_SOCKET, sockmod.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise listen_error(host, port, what, exc) from None
    sock.set_inheritable(True)
    return sock


def listen_error(host: str, port: int, what: str, exc: OSError) -> OSError:
    """One line naming the address (and the option it came from) instead of ``[Errno 98]``."""
    # os.strerror: gevent's own bind appends the address to strerror ("…: ('h', p)")
    reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
    label = f" ({what})" if what else ""
    err = OSError(f"cannot listen on {host}:{port}{label}: {reason}")
    err.errno = exc.errno
    return err


def _gevent_socket(raw: Any) -> Any:
    """Re-wrap an inherited listener as a gevent socket (the child's hub watches it)."""
    from gevent import socket as gsocket

    family, type_, proto = raw.family, raw.type, raw.proto
    return gsocket.socket(family, type_, proto, fileno=raw.detach())


# -- the worker process ---------------------------------------------------------------


def _tenant_loader(path: str) -> Callable[[], Any]:
    """Tenants from the database (``ivr tenants import``); the file only while it holds none."""

    def load() -> Any:
        from esl_app.config.tenants import load_tenants
        from esl_app.scheduling.provisioning import load_tenant_set

        stored = load_tenant_set()
        if len(stored):
            return stored
        return load_tenants(path)

    return load


def _tenant_version(path: str) -> Callable[[], object]:
    """What :func:`_tenant_loader` would read, fingerprinted without parsing it."""

    def version() -> object:
        from esl_app.scheduling.provisioning import tenant_set_version

        stored = tenant_set_version()
        if stored[0] not in (None, "0"):
            return stored
        try:
            return ("file", os.stat(path).st_mtime_ns)
        except OSError:
            return ("file", None)

    return version


def _tenant_source(path: str) -> Any:
    """A worker's tenants: each new call gets what the last ``ivr tenants import`` committed.

    The fingerprint is checked for every call (well under a millisecond) and the set
    re-read in line when it changed, never behind the call: a first call after an
    import that got the old clinics would tell a new clinic's callers it is not in
    service.
    """
    from esl_app.telephony.server import TenantSource

    return TenantSource(loader=_tenant_loader(path), version=_tenant_version(path))


def _close_db() -> None:
    """Drop the parent's database connections so no SQLite/Postgres handle crosses fork."""
    with contextlib.suppress(Exception):
        from esl_app.db import database

        db = database()
        if hasattr(db, "close_all"):
            db.close_all()
        if not db.is_closed():
            db.close()


def _worker_main(index: int, cfg: WorkerConfig, esl_raw: Any, http_raw: Any,
                 report_fd: int) -> int:
    """Run one worker until SIGTERM/SIGINT; returns its exit status."""
    global _current
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    from esl_app.runtime.fds import reserve_fds

    # before any thread starts: a full fd table then never grows under the calls
    reserve_fds(SOCKETS_PER_CALL * cfg.max_calls)
    import gevent

    gevent.reinit()
    import gevent.event

    from esl_app.db import init_db
    from esl_app.runtime.wiring import SttCache, build_services, for_profile
    from esl_app.telephony.server import EslServer

    init_db(cfg.db_url, create=False)
    _start_checkpointer()
    _sweep_interrupted()
    source = _tenant_source(cfg.tenants_path)
    seed = None if cfg.profile_seed is None else cfg.profile_seed * 1000 + index
    stt = SttCache()
    providers, stt_for = for_profile(cfg.profile, seed, stt=stt)
    media = audio_source_for = None
    my_media: tuple[str, int] | None = None
    if cfg.media is not None:
        try:
            from esl_app.runtime.wiring import start_media_for_calls

            host, base = cfg.media
            avoid = tuple(p for p in (cfg.esl[1], cfg.http[1] if cfg.http else 0) if p)
            media, audio_source_for = start_media_for_calls(
                host, media_port_for(base, index, avoid), stt_for=stt_for, stt=stt)
            my_media = (host, media.address[1])
        except ImportError as exc:
            log.warning("audio mode unavailable (%s); calls use FreeSWITCH-side speech", exc)
    _current = WorkerInfo(index, os.getpid(), my_media)
    services = build_services(source, audio_source_for=audio_source_for, providers=providers)
    services.extra["worker"] = index
    _warm(services, source, audio_source_for)
    _freeze_heap()
    _time_full_collections()
    gevent.spawn(_pace_gc, index, cfg.workers)
    hub_watch = _start_hub_watch()  # also samples ivr_hub_lag_seconds
    outbox_sender = _start_outbox_sender() if index == 0 else None
    if index == 0:  # one worker keeps each clinic's retention promise, daily
        gevent.spawn(_purge_daily)
        # and places the reminder calls (sent back to the ESL port it really listens on)
        gevent.spawn(_reminder_loop, esl_raw.getsockname()[:2], source)
    server = EslServer(services, max_calls=cfg.max_calls,
                       listener=_gevent_socket(esl_raw))
    _accept_policy(server, cfg.workers)
    server.start()
    http = None
    if http_raw is not None:
        from esl_app.http.app import serve_http

        http = serve_http(listener=_gevent_socket(http_raw))
    stopping = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(source.reload, reason="SIGHUP"))
    os.write(report_fd, (json.dumps({"worker": index, "pid": os.getpid(),
                                     "media": list(my_media) if my_media else None})
                         + "\n").encode())
    os.close(report_fd)
    stopping.wait()
    log.info("worker %d: draining %d call(s)", index, server.active_calls)
    if http is not None:
        http.close()  # stop accepting API requests at once; in-flight ones finish below
    server.stop(timeout=cfg.drain_timeout)
    if outbox_sender is not None:  # after the calls: their last changes still go out
        outbox_sender.stop(timeout=5)
    if http is not None:
        http.stop(timeout=2)
    if media is not None:
        media.stop()
    if hub_watch is not None:
        hub_watch.stop()
    log.info("worker %d: stopped (%d call(s) served)", index, server.completed)
    return 0


def _warm(services: Any, source: Any, audio_source_for: Any = None) -> None:
    """Build every tenant's agent, TTS and recogniser before accepting.

    The first calls must not pay it: an import on the hub stops every call of the worker.
    """
    for tenant in source.current():
        with contextlib.suppress(Exception):
            services.agent_for(tenant)
            services.tts_for(tenant, tenant.tts)
        if audio_source_for is not None:
            with contextlib.suppress(Exception):
                audio_source_for.warm(tenant)


_GC_FREEZE_EVERY_S = 1.0
_GC_SWEEP_EVERY_S = 600.0


def _accept_policy(server: Any, workers: int) -> None:
    """How many queued connections a worker accepts per wake-up of its listener.

    With others beside it, one: every idle worker is woken for a new connection and
    the least busy takes it. Alone, all of them (gevent's default, 100): one per
    wake-up made the n-th call of a burst wait n loop iterations for its ``connect``,
    each of them longer as the calls just accepted start (issue #32: the accept wait
    p99 24 ms, max 46 ms, at 300 calls on one core; 4.8 and 7.2 ms without the cap).
    """
    if workers > 1:
        server.server.max_accept = 1


def _pace_gc(index: int = 0, workers: int = 1) -> None:
    """Keep full collections small: freeze the heap every second, sweep it every 10 min.

    With 500 live calls a worker tracks ~100k objects, and Python's full collection
    walks all of them: 50-80 ms (measured, 1000-call load) in which the hub runs
    nothing, twice a minute: set-ups and barge-ins caught in one wait it out.
    Frozen every second, an automatic collection only walks what the last second
    allocated. Reference counting still frees everything that is not in a cycle
    (a finished call leaves none: tests/test_call_memory.py); the rare cycle among
    frozen objects waits for the sweep, which unfreezes and collects everything
    (one such pause per 10 minutes instead of two per minute). Worker ``index`` of
    ``workers`` first sweeps after ``(index + 1) / workers`` of a period: they
    start together, and one sweep at a time keeps the other workers' calls (and the
    switch's view of all of them) moving.
    """
    import gc

    import gevent

    last_sweep = time.monotonic() - _GC_SWEEP_EVERY_S * (1 - (index + 1) / max(1, workers))
    while True:
        gevent.sleep(_GC_FREEZE_EVERY_S)
        if time.monotonic() - last_sweep >= _GC_SWEEP_EVERY_S:
            gc.unfreeze()
            gc.collect()
            last_sweep = time.monotonic()
        gc.freeze()


def _time_full_collections() -> None:
    """Record every full collection's duration in ``ivr_gc_full_seconds``."""
    import gc

    from esl_app.http.metrics import GC_FULL

    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        elif started[0]:
            GC_FULL.observe(time.perf_counter() - started[0])
            started[0] = 0.0

    gc.callbacks.append(on_gc)


_LAG_EVERY_S = 0.02


def _watch_hub_lag() -> None:
    """Sample how late the hub runs a due timer, into ``ivr_hub_lag_seconds``.

    Every call of a worker shares its one hub: whatever runs long on it delays
    every set-up, barge-in and turn in the worker by as much. The end-to-end
    latencies mix that with the network's and the switch's; this is the worker's
    own part, and an overload signal for operators.
    """
    from esl_app.http.metrics import HUB_LAG
    from esl_app.support.bridge import watch_hub_lag

    watch_hub_lag(HUB_LAG.observe, _LAG_EVERY_S)


HUB_STOP_S = 0.25  # an event-loop stop this long is logged with its cause


def _start_hub_watch() -> Any:
    """Log (and count in ``ivr_hub_stops_total``) what held the hub whenever it stops.

    The lag histogram shows that the hub ran late; a stop of seconds (seen once under
    load, cause unknown then) needs its cause on record: code on the hub, a blocking
    system call, no free core, or the whole process not run (esl_app/runtime/hubwatch.py).
    The watch's heartbeat is the lag sampler, so one ticker serves both; if the watch
    cannot start, the sampler runs alone.
    """
    import gevent

    from esl_app.http.metrics import HUB_LAG, HUB_STOPS
    from esl_app.runtime.hubwatch import HubWatch

    try:
        return HubWatch(threshold_s=HUB_STOP_S, beat_every_s=_LAG_EVERY_S,
                        on_lag=HUB_LAG.observe,
                        observe=lambda found: HUB_STOPS.labels(found["kind"]).inc()).start()
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not stop the worker
        log.warning("event-loop watch not started: %s", exc)
        gevent.spawn(_watch_hub_lag)
        return None


def _freeze_heap() -> None:
    """Keep start-up objects (modules, tenants, providers) out of every later GC pass.

    A full collection walks every tracked object: with the start-up heap that is
    ~8 ms during which the hub runs nothing (no call set-up, no turn, no barge-in).
    Frozen, a collection only walks what the live calls allocated.
    """
    import gc

    gc.collect()
    gc.freeze()


# -- the parent -----------------------------------------------------------------------


@dataclass
class _Child:
    index: int
    pid: int
    started: float
    failures: int = 0


class _Supervisor:
    """Forks, watches and stops the workers; never touches gevent."""

    def __init__(self, cfg: WorkerConfig, echo: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.echo = echo
        self.esl_sock = bind_listener(*cfg.esl, backlog=cfg.backlog, what="--esl")
        self.http_sock = (bind_listener(*cfg.http, backlog=cfg.backlog, what="--http")
                          if cfg.http is not None else None)
        self.children: dict[int, _Child] = {}
        self.failures: dict[int, int] = {}
        self.media: dict[int, Any] = {}
        self.pending_restart: dict[int, float] = {}
        self.stopping = False
        self.failed = False
        self.hard_deadline: float | None = None
        self.ready_r, self.ready_w = os.pipe()
        os.set_blocking(self.ready_r, False)
        self._buf = b""
        self._announced = False
        self.prom_dir: str | None = None

    @property
    def esl_address(self) -> tuple[str, int]:
        return self.esl_sock.getsockname()[:2]

    @property
    def http_address(self) -> tuple[str, int] | None:
        return self.http_sock.getsockname()[:2] if self.http_sock is not None else None

    def spawn(self, index: int) -> None:
        from gevent import monkey

        fork = monkey.get_original("os", "fork")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(self.ready_r)
                code = _worker_main(index, self.cfg, self.esl_sock, self.http_sock,
                                    self.ready_w)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent
                log.exception("worker %d crashed", index)
            finally:
                with contextlib.suppress(Exception):
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.children[pid] = _Child(index, pid, time.monotonic())

    def _read_reports(self) -> None:
        try:
            while True:
                chunk = os.read(self.ready_r, 65536)
                if not chunk:
                    break
                self._buf += chunk
        except BlockingIOError:
            pass
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                rep = json.loads(line)
                self.media[int(rep["worker"])] = rep.get("media")
        if not self._announced and len(self.media) >= self.cfg.workers:
            self._announced = True
            status = {
                "pid": os.getpid(), "esl": list(self.esl_address),
                "http": list(self.http_address) if self.http_address else None,
                "media": [self.media[i] for i in sorted(self.media)],
                "workers": [c.pid for c in sorted(self.children.values(),
                                                   key=lambda c: c.index)],
                "profile": self.cfg.profile,
            }
            media = ", ".join(f"{m[0]}:{m[1]}" for m in status["media"] if m) or "off"
            self.echo(f"ivr serving: esl {status['esl'][0]}:{status['esl'][1]}"
                      + (f", http {status['http'][0]}:{status['http'][1]}"
                         if status["http"] else "")
                      + f", media {media}, {self.cfg.workers} worker(s), "
                        f"profile {self.cfg.profile} (pid {os.getpid()})")
            self.echo(READY_PREFIX + json.dumps(status))

    def _reap(self) -> None:
        from gevent import monkey

        waitpid = monkey.get_original("os", "waitpid")
        while True:
            try:
                pid, status = waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._mark_dead(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            quick = time.monotonic() - child.started < 5.0
            fails = self.failures.get(child.index, 0) + 1 if quick else 1
            self.failures[child.index] = fails
            if fails >= MAX_QUICK_FAILURES:
                log.error("worker %d keeps failing at start-up: stopping", child.index)
                self.echo(f"error: worker {child.index} keeps failing at start-up "
                          f"(exit {code}); stopping")
                self.failed = True
                self._begin_stop()
                continue
            delay = min(10.0, 0.1 * (2 ** (fails - 1))) if quick else 0.0
            log.warning("worker %d (pid %d) exited with %s; restarting in %.1fs",
                        child.index, pid, code, delay)
            self.echo(f"worker {child.index} (pid {pid}) exited ({code}); restarting")
            self.media.pop(child.index, None)
            self.pending_restart[child.index] = time.monotonic() + delay

    def _mark_dead(self, pid: int) -> None:
        if self.prom_dir:
            with contextlib.suppress(Exception):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(pid)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.pending_restart.items()):
            if when <= now and not self.stopping:
                del self.pending_restart[index]
                self.spawn(index)

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _begin_stop(self) -> None:
        self.stopping = True
        self.hard_deadline = time.monotonic() + self.cfg.drain_timeout + 10.0
        self.pending_restart.clear()
        self.echo(f"stopping: draining live calls in {len(self.children)} worker(s)…")
        for sock in (self.esl_sock, self.http_sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._signal_children(signal.SIGTERM)

    def run(self) -> int:
        """Fork the workers and supervise them until stopped; the exit status."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(self.cfg.workers):
                self.spawn(index)
            killed = False
            while self.children or (self.pending_restart and not self.stopping):
                info = signal.sigtimedwait(_SIGNALS, 0.25)
                self._read_reports()
                if info is not None:
                    if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                        if not self.stopping:
                            self._begin_stop()
                        else:  # second request: stop waiting for calls
                            self._signal_children(signal.SIGKILL)
                            killed = True
                    elif info.si_signo == signal.SIGHUP:
                        self._signal_children(signal.SIGHUP)
                self._reap()
                self._restart_due()
                if self.hard_deadline is not None and time.monotonic() > self.hard_deadline:
                    log.error("workers still alive after the drain timeout: killing them")
                    self._signal_children(signal.SIGKILL)
                    killed = True
                    self.hard_deadline = None
            return 1 if killed or self.failed else 0
        finally:
            for sock in (self.esl_sock, self.http_sock):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            with contextlib.suppress(OSError):
                os.close(self.ready_r)
            with contextlib.suppress(OSError):
                os.close(self.ready_w)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _check_media_ports(cfg: WorkerConfig) -> None:
    """Fail before forking when a worker's media port is taken.

    The workers bind their own media ports; a clash there would only show as workers
    crashing at start-up.
    """
    if cfg.media is None:
        return
    host, base = cfg.media
    avoid = tuple(p for p in (cfg.esl[1], cfg.http[1] if cfg.http else 0) if p)
    for index in range(cfg.workers):
        port = media_port_for(base, index, avoid)
        if port:
            bind_listener(host, port, what="--media").close()


def _prepare(cfg: WorkerConfig) -> int:
    """Schema and tenant check once, in the parent; returns how many tenants are served."""
    from esl_app.db import init_db

    init_db(cfg.db_url, must_exist=True, make_dirs=False)  # only `ivr db init` creates one
    try:
        tenants = _tenant_loader(cfg.tenants_path)()
    finally:
        _close_db()
    return len(tenants)


def run_workers(cfg: WorkerConfig, echo: Callable[[str], None] | None = None) -> int:
    """Serve with ``cfg.workers`` processes until SIGTERM/SIGINT; returns the exit status.

    Raises ``OSError`` if a port cannot be bound and ``ValueError`` if there
    are no tenants (the CLI turns both into one line on stderr).
    """
    def _stderr(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    echo = echo or _stderr
    if cfg.profile != "local":  # a load test's server: fail on a bad name before forking
        from esl_app.sim.latency import get_profile

        get_profile(cfg.profile)
    prom_dir = None
    if cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # before anything imports prometheus_client: /metrics then sums every worker
        prom_dir = tempfile.mkdtemp(prefix="ivr-prom-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
    try:
        if not _prepare(cfg):
            raise ValueError(f"no tenants: import some with 'ivr tenants import' or create "
                             f"{cfg.tenants_path}")
        _check_media_ports(cfg)
        sup = _Supervisor(cfg, echo)
        sup.prom_dir = prom_dir
        return sup.run()
    finally:
        if prom_dir:
            import shutil

            shutil.rmtree(prom_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


# -- stand-alone entry (used by the load generator; `ivr serve` is the user-facing one) --


def _hostport(value: str) -> tuple[str, int]:
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -c 'import esl_app.__main__; …main()'``: the serve options, no click."""
    p = argparse.ArgumentParser(prog="ivr-workers", description=__doc__.split("\n")[0])
    p.add_argument("--db", default=database_url())
    p.add_argument("--tenants", default=tenants_path())
    p.add_argument("--esl", type=_hostport, default=("127.0.0.1", 8084))
    p.add_argument("--media", type=_hostport, default=("127.0.0.1", 8085))
    p.add_argument("--http", type=_hostport, default=("127.0.0.1", 8086))
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max-calls", type=int, default=2000)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--profile", default=env("IVR_PROFILE", DEFAULT_PROFILE))
    p.add_argument("--profile-seed", type=int, default=None)
    p.add_argument("-v", "--verbose", action="count", default=0)
    a = p.parse_args(argv)
    level = logging.WARNING - 10 * min(a.verbose, 2)
    logging.basicConfig(level=level,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    from esl_app.cli import ALWAYS_INFO, QUIET_LIBRARIES
    from esl_app.support.logmask import install

    install()  # as `ivr serve`: no personal data at any level (-vv included)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    for name in ALWAYS_INFO:
        logging.getLogger(name).setLevel(min(level, logging.INFO))
    cfg = WorkerConfig(esl=a.esl, media=a.media, http=None if a.no_http else a.http,
                       workers=max(1, a.workers), db_url=a.db, tenants_path=a.tenants,
                       max_calls=a.max_calls, drain_timeout=a.drain_timeout,
                       profile=a.profile, profile_seed=a.profile_seed)
    from esl_app.db import DatabaseError

    try:
        return run_workers(cfg)
    except (OSError, ValueError, DatabaseError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1

