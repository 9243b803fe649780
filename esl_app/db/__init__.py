"""Storage: the database chosen by URL, bound to the peewee models.

``sqlite:///ivr.db`` (default; WAL mode, busy timeout) or
``postgresql://user@host:5432/db``. Connections are pooled so that thousands
of call greenlets share a handful of connections.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from esl_app.config.settings import DEFAULT_DATABASE_URL, database_url
from esl_app.db.models import ALL_MODELS, database_proxy

__all__ = [
    "DEFAULT_URL",
    "DatabaseError",
    "DatabaseUnavailable",
    "checkpoint_forever",
    "close_db",
    "database",
    "init_db",
    "one_line",
    "sqlite_path",
    "write_txn",
]

DEFAULT_URL = DEFAULT_DATABASE_URL
SQLITE_BUSY_MS = 5
WRITE_WAIT_SECONDS = 30.0


class DatabaseError(RuntimeError):
    """The database URL is unusable or the database cannot be reached."""


class DatabaseUnavailable(DatabaseError):
    """The database server refused or dropped the connection (not the operator's input)."""


def database() -> pw.Database:
    """The bound database (after :func:`init_db`)."""
    db = database_proxy.obj
    if db is None:
        raise DatabaseError("database not initialised (call init_db first)")
    return db


def init_db(url: str | None = None, *, create: bool = True, max_connections: int | None = None,
            must_exist: bool = False, make_dirs: bool = True) -> pw.Database:
    """Open the database at ``url`` (argument → IVR_DATABASE_URL → default) and bind the models.

    ``max_connections`` per process: argument → ``IVR_DB_POOL`` → 32 (size it to the
    Postgres server's ``max_connections`` divided by the number of workers).
    ``must_exist``: refuse a SQLite file that is not there (every operator command but
    ``ivr db init``, so that a mistyped path is an error, not a new empty database);
    ``make_dirs``: create missing parent folders (tests, the demo's scratch database).
    """
    url = database_url(url)
    if max_connections is None:
        raw = os.environ.get("IVR_DB_POOL", "32")
        if not raw.isdigit() or not 1 <= int(raw) <= 10000:
            raise DatabaseError(f"IVR_DB_POOL must be a whole number from 1 to 10000, not {raw!r}")
        max_connections = int(raw)
    parsed = urlparse(url)
    scheme = parsed.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise DatabaseError(f"database URL '{url}' has no file name")
        if path != ":memory:" and not path.startswith("file:"):
            _check_sqlite_path(path, must_exist=must_exist, make_dirs=make_dirs)
        db: pw.Database = PooledSqliteDatabase(
            path,
            max_connections=max_connections,
            stale_timeout=300,
            timeout=30,
            pragmas={
                "journal_mode": "wal",
                # Waiting in SQLite's C busy handler would freeze every greenlet of the
                # process; writers wait cooperatively in write_txn instead.
                "busy_timeout": SQLITE_BUSY_MS,
                "foreign_keys": 1,
                "synchronous": "normal",
                # Checkpoints belong off the request path (start_checkpointer); this
                # only bounds the WAL when no checkpointer runs (CLI, tests).
                "wal_autocheckpoint": 20000,
            },
            check_same_thread=False,
        )
    elif scheme in ("postgres", "postgresql"):
        db = PooledPostgresqlDatabase(
            (parsed.path or "/postgres").lstrip("/") or "postgres",
            user=parsed.username or None,
            password=parsed.password or None,
            host=parsed.hostname or None,
            port=parsed.port or None,
            max_connections=max_connections,
            stale_timeout=300,
            timeout=30,
        )
    else:
        raise DatabaseError(
            f"unsupported database URL '{url}' (use sqlite:///file.db or postgresql://…)")
    old = database_proxy.obj
    if old is not None and old is not db:
        with contextlib.suppress(Exception):
            old.close_all() if hasattr(old, "close_all") else old.close()
    database_proxy.initialize(db)
    if create:
        try:
            with db.connection_context(), db.atomic():
                if not isinstance(db, pw.SqliteDatabase):  # serialise concurrent workers
                    db.execute_sql("SELECT pg_advisory_xact_lock(7240011)")
                db.create_tables(ALL_MODELS, safe=True)
                _append_only_audit(db)
        except pw.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot open database '{_redact(url)}': {one_line(exc)}") from None
    return db


def _check_sqlite_path(path: str, *, must_exist: bool, make_dirs: bool) -> None:
    """Refuse (or prepare) the file of a SQLite URL before SQLite silently creates it."""
    absolute = os.path.abspath(path)
    if must_exist and not os.path.exists(absolute):
        raise DatabaseError(
            f"database '{path}' does not exist (create it with `ivr db init`, or check "
            "--db / IVR_DATABASE_URL)")
    if os.path.isdir(absolute):
        raise DatabaseError(f"database '{path}' is a directory, not a file")
    parent = os.path.dirname(absolute)
    if not os.path.isdir(parent):
        if not make_dirs:
            raise DatabaseError(f"cannot create database '{path}': folder '{parent}' "
                                "does not exist")
        os.makedirs(parent, exist_ok=True)


def one_line(exc: BaseException) -> str:
    """A driver error on one line.

    psycopg2's messages span several ("Is the server running…?"); a terminal or a log
    line wants one.
    """
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def _append_only_audit(db: pw.Database) -> None:
    """Make the audit table append-only in the database itself."""
    if isinstance(db, pw.SqliteDatabase):
        for op in ("UPDATE", "DELETE"):
            db.execute_sql(
                f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
    else:
        db.execute_sql(
            "CREATE OR REPLACE FUNCTION ivr_audit_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql")
        db.execute_sql(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = "
            "'audit_log_append_only') THEN CREATE TRIGGER audit_log_append_only BEFORE UPDATE "
            "OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION ivr_audit_append_only(); "
            "END IF; END $$")


def sqlite_path() -> str | None:
    """The file of the bound SQLite database, or None for Postgres / in-memory."""
    db = database_proxy.obj
    if isinstance(db, pw.SqliteDatabase) and db.database not in ("", ":memory:"):
        return str(db.database)
    return None


def checkpoint_forever(path: str, interval: float = 1.0,
                       stop: threading.Event | None = None) -> None:
    """Fold the WAL back into the database every ``interval`` seconds (PASSIVE).

    Meant for a real OS thread (it blocks in SQLite, releasing the GIL), so that no
    booking ever pays for a checkpoint. Uses its own connection; never raises.
    """
    import sqlite3

    conn = sqlite3.connect(path, timeout=0.1, check_same_thread=False)
    try:
        while not (stop is not None and stop.is_set()):
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if stop is not None:
                stop.wait(interval)
            else:
                time.sleep(interval)
    finally:
        conn.close()


def close_db() -> None:
    """Close every pooled connection (tests, shutdown)."""
    db = database_proxy.obj
    if db is not None:
        with contextlib.suppress(Exception):
            db.close_all() if hasattr(db, "close_all") else db.close()


_sqlite_writers: threading.RLock | None = None


def _sqlite_writer_lock() -> threading.RLock:
    """Created lazily, so under gevent it is the cooperative (patched) lock."""
    global _sqlite_writers
    if _sqlite_writers is None:
        _sqlite_writers = threading.RLock()
    return _sqlite_writers


@contextlib.contextmanager
def write_txn() -> Iterator[pw.Database]:
    """A write transaction that takes the write lock up front on SQLite.

    ``BEGIN IMMEDIATE`` avoids the deadlock-prone upgrade from a read to a
    write lock when many callers race for the same slot. Within one process,
    SQLite writers also queue on a lock first: under gevent every greenlet
    shares one OS thread, and a writer waiting in SQLite's C busy handler
    would stall the whole hub. Correctness still rests on the database (the
    conditional UPDATE); the lock only keeps waiting cooperative.
    """
    db = database()
    if not isinstance(db, pw.SqliteDatabase):
        with db.connection_context(), db.atomic():
            yield db
        return
    with _sqlite_writer_lock(), db.connection_context(), contextlib.ExitStack() as stack:
        # Another process may hold the write lock: retry BEGIN IMMEDIATE with short
        # sleeps (cooperative under gevent) instead of blocking in C.
        deadline = time.monotonic() + WRITE_WAIT_SECONDS
        delay = 0.001
        while True:
            try:
                stack.enter_context(db.atomic("IMMEDIATE"))
                break
            except pw.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield db


def _redact(url: str) -> str:
    p = urlparse(url)
    if p.password:
        return url.replace(f":{p.password}@", ":***@")
    return url
