"""Database engine, transactions and migrations (SQLite by default, PostgreSQL in production).

SQLite: WAL journal with ``synchronous=FULL`` so a commit that returned survives
a power cut; write transactions start with ``BEGIN IMMEDIATE`` so two writers
never both read a counter and then fight over the upgrade to a write lock.
Committed pages are copied from the WAL into the database file (checkpoints) on a
thread of their own, not in the committing writer (see :class:`_WalCheckpointer`).
PostgreSQL: READ COMMITTED plus explicit row locks (``SELECT … FOR UPDATE``) on
the serial counter and the audit head.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import ConfigurationError, YinxinError
from vault._batched_read import BatchedRead, LoopBatchedRead, batch_statement
from vault._rows import AnySelect, RowShape

__all__ = [
    "Database",
    "DatabaseConflict",
    "DatabaseError",
    "PreparedRead",
    "insert_rows",
    "normalise_database_url",
]

log = logging.getLogger("yinxin.vault")

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_CONNECT_TIMEOUT_SECONDS = 5
_THREAD_CACHE_KIB = 4096
WAL_BACKSTOP_PAGES = 4000  # SQLite: a writer checkpoints itself past this many WAL pages (16 MiB)
_CHECKPOINTER_IDLE_SECONDS = 30.0
READ_THREADS = 4  # per process and network database: batched_read's connections, read_executor's threads
MAX_READ_THREADS = 64


class DatabaseError(YinxinError):
    """The database could not be reached or refused the operation."""

    code = "database_error"
    http_status = 503
    exit_code = 3


class DatabaseConflict(DatabaseError):
    """A uniqueness or foreign-key constraint refused the write (e.g. a concurrent duplicate)."""

    code = "database_conflict"
    http_status = 409


def normalise_database_url(url: str) -> str:
    """Accept ``postgresql://`` / ``postgres://`` and pin the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_Batched = BatchedRead | LoopBatchedRead


class Database:
    """An engine plus two session factories: ``write()`` and ``read()`` transactions."""

    def __init__(self, url: str, *, echo: bool = False, read_threads: int = READ_THREADS) -> None:
        if not 1 <= read_threads <= MAX_READ_THREADS:
            raise ConfigurationError(
                f"YINXIN_DB_READ_THREADS must be between 1 and {MAX_READ_THREADS}, not {read_threads}"
            )
        self.read_threads = read_threads
        url = normalise_database_url(url)
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(
                f"YINXIN_DATABASE_URL is not a database URL: {exc}; "
                "use e.g. sqlite:///var/yinxin.db or postgresql://user@host/dbname"
            ) from exc
        self.dialect = parsed.get_backend_name()
        # SQLite is a library in this process: a short read costs microseconds and never waits on a
        # network. Hot read paths may run it inline where a network database would need a thread.
        self.in_process = self.dialect == "sqlite"
        # JSON columns (face data, JWKs) serialised with orjson: compact UTF-8, like json.dumps
        # with ensure_ascii=False, and fast enough for bulk issuance; read back with orjson too
        # (what orjson wrote it reads: no NaN, integers within 64 bits).
        kwargs: dict[str, Any] = {
            "echo": echo,
            "json_serializer": _json_text,
            "json_deserializer": orjson.loads,
        }
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif self.dialect == "postgresql":
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
            if "connect_timeout" not in parsed.query:
                # libpq waits for ever by default: a database host that has gone silent (no reset,
                # no refusal) would hold a request thread per attempt. Fail in 5 s with a 503 instead.
                kwargs["connect_args"] = {"connect_timeout": _PG_CONNECT_TIMEOUT_SECONDS}
        else:
            raise ConfigurationError(f"database {self.dialect!r} is not supported: use SQLite or PostgreSQL")
        self.engine: Engine = create_engine(url, **kwargs)
        self.connect_args: dict[str, Any] = dict(kwargs.get("connect_args", {}))
        self._checkpointer: _WalCheckpointer | None = None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
            if parsed.database and parsed.database != ":memory:" and "memory" not in parsed.query.values():
                self._checkpointer = _WalCheckpointer(parsed.database)
        self._writer = sessionmaker(
            bind=self.engine.execution_options(yinxin_write=True), expire_on_commit=False
        )
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.url = parsed.render_as_string(hide_password=True)
        # Connections of their own for prepared reads (PreparedRead): per thread on SQLite, per
        # read thread on PostgreSQL; taken out of the pool once and closed by dispose().
        self._local = threading.local()
        self._held: list[Any] = []
        self._held_lock = threading.Lock()
        self._generation = 0
        self._read_executor: ThreadPoolExecutor | None = None
        self._write_executor: ThreadPoolExecutor | None = None
        # Batched reads on the event loop, per loop and statement (batched_read()).
        self._batched: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, _Batched]] = (
            weakref.WeakKeyDictionary()
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any exception."""
        with self._session(self._writer) as session:
            yield session
        if self._checkpointer is not None:
            self._checkpointer.poke()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._session(self._reader) as session:
            yield session

    def prepare(self, statement: AnySelect) -> PreparedRead:
        """*statement* compiled once for this database, to run with :meth:`PreparedRead.first`."""
        return PreparedRead(self, statement)

    def batched_read(self, statement: AnySelect, key: Any) -> _Batched:
        """*statement*'s rows by its column *key*, for coroutines of the running event loop, many
        keys in one statement: on PostgreSQL one round trip per free connection
        (:class:`BatchedRead`, ``read_threads`` connections per loop), on SQLite one statement per
        turn of the loop (:class:`LoopBatchedRead`). One reader per loop and statement.
        """
        loop = asyncio.get_running_loop()
        readers = self._batched.get(loop)
        if readers is None:
            readers = self._batched[loop] = {}
        reader = readers.get(statement)
        if reader is None:
            if self.in_process:
                reader = LoopBatchedRead(self, statement, key)
            else:
                reader = BatchedRead(
                    self, batch_statement(statement, key), key_column=key.key, connections=self.read_threads
                )
            readers[statement] = reader
        return reader

    async def aclose_batched_reads(self) -> None:
        """Close the running event loop's batched-read connections (an app's shutdown)."""
        readers = self._batched.pop(asyncio.get_running_loop(), {})
        for reader in readers.values():
            await reader.aclose()

    @contextmanager
    def _session(self, factory: sessionmaker[Session]) -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except YinxinError:
            _rollback(session)
            raise
        except SQLAlchemyError as exc:
            _rollback(session)
            raise self._translated(exc) from exc
        except BaseException:
            _rollback(session)
            raise
        finally:
            session.close()

    def _translated(self, exc: SQLAlchemyError) -> YinxinError:
        """Our error for a database failure: what went wrong and what to do, never the URL's secrets."""
        if isinstance(exc, IntegrityError):
            log.warning("database constraint refused a write: %s", exc.orig if exc.orig else exc)
            return DatabaseConflict(
                "the database refused the write because it conflicts with existing data; retry the request"
            )
        if isinstance(exc, OperationalError):
            return self._unreachable(exc.orig if exc.orig else exc)
        log.error("database error: %s", exc)
        return DatabaseError("the database refused the operation; the details are in the log")

    def _unreachable(self, cause: BaseException) -> DatabaseError:
        log.error("database operation failed: %s", cause)
        return DatabaseError(
            f"the database at {self.url} did not answer or refused the operation; "
            "check that it is running and reachable"
        )

    # ---- migrations -------------------------------------------------------

    def _alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        return cfg

    def migrate(self) -> str:
        """Bring the schema to the newest revision; returns that revision."""
        cfg = self._alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise DatabaseError(f"migrating the database at {self.url} failed: {exc}") from exc
        head = ScriptDirectory.from_config(cfg).get_current_head()
        return head or ""

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def is_current(self) -> bool:
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        return self.current_revision() == head

    def thread_connection(self) -> Any:
        """This thread's own DBAPI connection for short reads (opened and configured once).

        Used by :class:`PreparedRead` on SQLite on any thread, and on PostgreSQL on the threads of
        :meth:`read_executor`. A pool checkout and check-in cost more than the read itself on the
        verification hot path: on SQLite about 25 µs against 20; on PostgreSQL a ``SELECT 1``
        (pre-ping), the transaction's ``BEGIN`` and the ``ROLLBACK`` on check-in, three round trips
        besides the query. The connection is in autocommit mode, so every statement reads the newest
        committed data, as through the pool, and psycopg prepares a statement it sees repeated on it.
        It is detached from the pool, so threads holding one never starve the pool's sessions.
        """
        local = self._local
        if getattr(local, "generation", None) == self._generation:
            return local.connection
        fairy = self.engine.raw_connection()
        fairy.detach()
        connection: Any = fairy.dbapi_connection
        if self.in_process:
            # A look-up reads a handful of pages: a small page cache of its own (the pool's
            # connections keep 64 MiB for bulk writes), so a thread pool of readers stays small.
            connection.execute(f"PRAGMA cache_size=-{_THREAD_CACHE_KIB}")
        else:
            connection.autocommit = True  # psycopg: no BEGIN, no ROLLBACK; idle between reads
        with self._held_lock:
            self._held.append(connection)
        local.connection, local.generation = connection, self._generation
        return connection

    def read_executor(self) -> Executor:
        """PostgreSQL: the few threads that run verification's blocking reads (created once).

        Verification awaits its look-ups on :meth:`batched_read`'s connections; what it cannot await
        (a trust store re-read, the rare verdicts that read more) it hands to one of these threads
        rather than to the server's general thread pool, so the connections they hold stay few and
        known (``read_threads`` per process, ``YINXIN_DB_READ_THREADS``) whatever the pool's size.
        """
        with self._held_lock:
            if self._read_executor is None:
                self._read_executor = ThreadPoolExecutor(
                    max_workers=self.read_threads,
                    thread_name_prefix="yinxin-read",
                    initializer=self._mark_reader,
                )
            return self._read_executor

    def write_executor(self) -> Executor:
        """The two threads that run the event loop's issuance transactions (``Vault.issue_async``).

        A group of issuances commits on one of them while the other signs the previous group's
        presentation tokens; the callers wait on the event loop, holding no thread (created once).
        """
        with self._held_lock:
            if self._write_executor is None:
                self._write_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="yinxin-write")
            return self._write_executor

    def _mark_reader(self) -> None:
        self._local.reader = True

    def on_own_connection(self) -> bool:
        """Whether reads on this thread go to :meth:`thread_connection` rather than the pool."""
        return self.in_process or getattr(self._local, "reader", False)

    def drop_thread_connection(self) -> None:
        """Forget (and close) this thread's connection after it failed; the next read opens one."""
        connection = getattr(self._local, "connection", None)
        self._local.generation = None
        self._local.connection = None
        if connection is not None:
            with self._held_lock:
                if connection in self._held:
                    self._held.remove(connection)
            with suppress(Exception):
                connection.close()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._held_lock:
            held, self._held = self._held, []
            self._generation += 1  # threads holding a connection open a new one next time
            executors = [self._read_executor, self._write_executor]
            self._read_executor = self._write_executor = None
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=True)
        for connection in held:
            with suppress(Exception):
                connection.close()
        self.engine.dispose()


class PreparedRead:
    """A read-only SELECT compiled once for one database and run straight on a DBAPI connection.

    For the one look-up per request of the verification hot path, on the calling thread's own
    connection (Database.thread_connection) on SQLite and on PostgreSQL's read threads
    (Database.read_executor), on a pooled connection elsewhere.
    SQLAlchemy still writes the SQL (in the dialect's parameter style) and its column types still
    convert the values (JSON, dates, UTC timestamps); what is skipped is Core's per-call machinery
    (connection events, cache-key generation, result objects), which cost about 45 of the 65 µs of
    a Core execute on SQLite. A single statement reads one consistent snapshot on both databases:
    no transaction is begun around it (SQLite runs it in an implicit one; the pool rolls back
    psycopg's on return).
    """

    def __init__(self, db: Database, statement: AnySelect) -> None:
        dialect = db.engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._db = db
        self._sql = compiled.string
        self._compiled = compiled
        self._positions = tuple(compiled.positiontup) if compiled.positiontup else None
        self._shape = RowShape(statement, dialect)
        self._dbapi_error: Any = dialect.loaded_dbapi.Error  # the driver's own base class (PEP 249)

    def first(self, **params: Any) -> dict[str, Any] | None:
        """The first row as a dict by column name (labels as given), or None."""
        rows = self._rows(params, all_rows=False)
        return rows[0] if rows else None

    def all(self, **params: Any) -> list[dict[str, Any]]:
        """Every row, each a dict by column name."""
        return self._rows(params, all_rows=True)

    def _rows(self, params: dict[str, Any], *, all_rows: bool) -> list[dict[str, Any]]:
        values = self._compiled.construct_params(params)
        bound: Any = tuple(values[name] for name in self._positions) if self._positions else values
        if self._db.on_own_connection():
            rows = self._on_thread_connection(bound, all_rows)
        else:
            rows = self._on_pooled_connection(bound, all_rows)
        as_dict = self._shape.as_dict
        return [as_dict(row) for row in rows]

    def _on_thread_connection(self, bound: Any, all_rows: bool, *, retry: bool = True) -> Any:
        db = self._db
        try:
            connection = db.thread_connection()
        except SQLAlchemyError as exc:
            raise db._translated(exc) from exc
        try:
            return self._fetch(connection, bound, all_rows)
        except self._dbapi_error as exc:
            db.drop_thread_connection()
            # A connection the server closed while it sat idle (a restart, an idle timeout) is
            # what the pool's pre-ping catches: read once more on a new one.
            if retry and db.engine.dialect.is_disconnect(exc, connection, None):
                log.warning(
                    "a database read connection was closed by the server (%s): reading again on a new one",
                    type(exc).__name__,
                )
                return self._on_thread_connection(bound, all_rows, retry=False)
            raise db._unreachable(exc) from exc

    def _on_pooled_connection(self, bound: Any, all_rows: bool) -> Any:
        engine = self._db.engine
        try:
            conn = engine.raw_connection()
        except SQLAlchemyError as exc:
            raise self._db._translated(exc) from exc
        try:
            return self._fetch(conn, bound, all_rows)
        except self._dbapi_error as exc:
            if engine.dialect.is_disconnect(exc, conn.dbapi_connection, None):
                conn.invalidate(exc)
            raise self._db._unreachable(exc) from exc
        finally:
            conn.close()

    def _fetch(self, connection: Any, bound: Any, all_rows: bool) -> list[Any]:
        cursor = connection.cursor()
        try:
            cursor.execute(self._sql, bound)
            if all_rows:
                return cursor.fetchall()  # type: ignore[no-any-return]
            row = cursor.fetchone()
            return [] if row is None else [row]
        finally:
            cursor.close()


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert *rows* (dicts with the same keys) into *table* in the session's transaction.

    On SQLite the INSERT is compiled once per table and column set, each row becomes a tuple with
    the column types' own bind conversions (JSON, dates, UTC timestamps), and the driver's
    ``executemany`` gets them all: Core's per-row parameter processing cost more than SQLite's
    insert itself in bulk issuance (about 20 of 115 µs a licence). Driver errors still come
    back as SQLAlchemy's (a duplicate key is an ``IntegrityError``). Other databases take
    Core's insert, whose "insertmanyvalues" batching is what makes them fast.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "sqlite":
        session.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    cache = _PREPARED_INSERTS.get(dialect)
    if cache is None:
        cache = _PREPARED_INSERTS[dialect] = {}
    prepared = cache.get((table, columns))
    if prepared is None:
        prepared = cache[(table, columns)] = _PreparedInsert(table, columns, dialect)
    session.connection().exec_driver_sql(prepared.sql, prepared.parameters(rows))


class _PreparedInsert:
    def __init__(self, table: Table, columns: tuple[str, ...], dialect: Any) -> None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        order = tuple(compiled.positiontup or ())
        if sorted(order) != sorted(columns):
            raise ValueError(f"cannot prepare an insert into {table.name} for columns {columns}")
        self.sql = compiled.string
        getter = operator.itemgetter(*order)
        # itemgetter of one name gives the value, of several a tuple: always a tuple here.
        self._values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            (lambda row: (getter(row),)) if len(order) == 1 else getter
        )
        self._conversions = tuple(
            (position, processor)
            for position, name in enumerate(order)
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        )

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        values, conversions = self._values, self._conversions
        out: list[tuple[Any, ...]] = []
        for row in rows:
            if not conversions:
                out.append(values(row))
                continue
            bound = list(values(row))
            for position, process in conversions:
                bound[position] = process(bound[position])
            out.append(tuple(bound))
        return out


# Per dialect (its JSON serialiser is the engine's), dropped with the engine.
_PREPARED_INSERTS: weakref.WeakKeyDictionary[Any, dict[tuple[Table, tuple[str, ...]], _PreparedInsert]] = (
    weakref.WeakKeyDictionary()
)


def _rollback(session: Session) -> None:
    """Roll back after a failure without hiding it.

    When the connection died with the transaction (the database restarted, the network cut it),
    ROLLBACK fails too; the server has discarded the transaction already, and the error that
    matters is the one being handled (a key backend failure, say), not this one.
    """
    try:
        session.rollback()
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        log.warning("rollback failed, the connection is gone (%s)", type(cause).__name__)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit
        # transactions would start DEFERRED and cannot be made IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 64 MiB page cache: the idempotency and holder indexes take random keys, and bulk
        # imports of 100 000 licences otherwise spend their time re-reading index pages.
        cursor.execute("PRAGMA cache_size=-65536")
        # Checkpoints are _WalCheckpointer's work; a writer checkpoints only if the WAL grows this
        # large anyway (another process writing without one, or checkpoints failing).
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("yinxin_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class _WalCheckpointer:
    """SQLite: copies committed pages from the WAL into the database file on a thread of its own.

    By default SQLite checkpoints inside the commit that takes the WAL past 1 000 pages: the
    committing writer copies the pages and waits for the database file's fsync, with the write
    lock free but its own caller waiting. In bulk issuance that was 10-15 ms of a 500-licence
    batch's commit once the WAL had filled (commits of 5 ms grew to 15-20 ms), about a sixth of
    the issuing thread's time. Here every write transaction that commits wakes this thread, which
    runs a PASSIVE checkpoint on its own connection: it copies what no reader still needs and
    never blocks a writer or a reader. The commit itself is as durable as before (the WAL is
    synced on commit, ``synchronous=FULL``); a crash during a checkpoint loses nothing either
    (SQLite replays the WAL).

    The WAL starts over only when a writer begins after a complete checkpoint, which back-to-back
    writers may never do while this thread copies. So writers keep SQLite's own checkpoint in the
    commit, past ``WAL_BACKSTOP_PAGES`` (16 MiB), and once the WAL is past that this thread skips
    one turn: the writer's checkpoint then finds the lock free, copies the little that is left,
    and the next writer starts the WAL over. (A RESTART checkpoint here instead waited for a gap
    between writers that back-to-back writers never leave, holding the checkpoint lock meanwhile.)

    The thread starts with the first write, ends after 30 s without one, and
    :meth:`Database.dispose` stops it.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._warned: set[str] = set()
        self._give_way = False

    def poke(self) -> None:
        self._wake.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping:
                    self._thread = threading.Thread(
                        target=self._run, name="yinxin-wal-checkpoint", daemon=True
                    )
                    self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=10)
        with self._lock:
            self._stopping = False  # a database used again after dispose() starts a new one

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                if not self._wake.wait(_CHECKPOINTER_IDLE_SECONDS):
                    with self._lock:
                        if not self._wake.is_set():
                            self._thread = None  # idle: the next write starts a new one
                            return
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if connection is None:
                        # timeout=0: a checkpoint already running elsewhere (another process, or
                        # a writer's backstop) makes this one give way at once, not wait.
                        connection = sqlite3.connect(self._path, timeout=0, isolation_level=None)
                        # The copied pages are synced before the WAL can be reused (FULL).
                        connection.execute("PRAGMA synchronous=FULL")
                    self._checkpoint(connection)
                except sqlite3.Error as exc:
                    # A busy database is normal (another checkpoint holds the lock); anything else
                    # is worth one warning per kind of error: the writers' backstop still bounds
                    # the WAL, and the next commit tries again.
                    kind = f"{type(exc).__name__}: {exc}"
                    if "locked" not in kind and "busy" not in kind and kind not in self._warned:
                        self._warned.add(kind)
                        log.warning("SQLite WAL checkpoint failed (%s); writers will checkpoint", kind)
                    if connection is not None:
                        connection.close()
                        connection = None
        finally:
            if connection is not None:
                connection.close()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        if self._give_way:
            # The WAL was past the backstop: this commit's writer checkpoints it (SQLite's own
            # checkpoint, in the commit), and must not find ours holding the checkpoint lock.
            self._give_way = False
            return
        _busy, frames, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self._give_way = frames >= WAL_BACKSTOP_PAGES
