"""Look-ups by key from coroutines, many in one statement (the verification hot path).

Every verification reads one licence. Run one statement per request, that read costs more than
its SQL: on PostgreSQL, a network round trip that must not stall the event loop, it went to a
thread (``Database.read_executor``), and the hop into the thread and back, with the interpreter
lock passed between the event loop and the read threads, cost 110 µs of this process's CPU a
look-up (in process, 64 concurrent look-ups on 4 threads). On SQLite, with a statement of its own
for each request, a verification cost 0.44 ms of server CPU under load (wrk, 1 worker); with the
look-ups of each turn of the event loop in one statement, 0.33 ms.

:class:`BatchedRead` (PostgreSQL) runs the look-ups on the event loop on psycopg's asynchronous
connections: the look-ups of one turn of the loop go out together once that turn is done, and
those that arrive while every connection is busy wait for the next free one; each round trip is
one statement (``WHERE key = ANY(:keys)``) for all of them (same measurement: 7 µs a look-up, mean
batch 20-30). :class:`LoopBatchedRead` (SQLite) reads the keys of one turn of the event loop in
one ``IN (…)`` statement on the loop thread, once that turn is done. Requests whose bytes
arrived together start in the same turn and reach their look-up before any of them is answered,
so under load a turn holds several.

:class:`TurnCalls` is the general form: the calls of one function made during a turn of the
loop, run back to back once it is done. Verification checks its tokens that way (the CPU's caches
stay warm from one signature check to the next).

Each reader belongs to the event loop it was made on (a server worker has one; see
``Database.batched_read``). BatchedRead's connections are opened on first use, in autocommit mode
(each statement reads the newest committed data, as the pool's connections do), and closed by
:meth:`BatchedRead.aclose`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from itertools import islice
from typing import Any, Generic, TypeVar

from sqlalchemy import ARRAY, bindparam, func

from schemas.errors import YinxinError
from vault._rows import AnySelect, RowShape

__all__ = ["MAX_BATCH", "BatchedRead", "LoopBatchedRead", "TurnCalls", "batch_statement"]

log = logging.getLogger("yinxin.vault")

MAX_BATCH = 256  # keys in one statement; more waiting go in the next round trip


def batch_statement(statement: AnySelect, key: Any, name: str = "keys") -> AnySelect:
    """*statement* restricted to rows whose *key* column is in the bound list *name* (``= ANY``)."""
    return statement.where(key == func.any(bindparam(name, type_=ARRAY(key.type))))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Waiters(Generic[K, V]):
    """Coroutines waiting for a value by key, answered together once their turn of the loop is done."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False
        self.statements = 0  # batches answered (statements, for a reader), and their distinct keys:
        self.keys = 0  # for tests and profiles

    async def get(self, key: K) -> V | None:
        """The value for *key*, or None (a row not found); raises what computing it raised (a
        reader: the database's 503 error when it cannot be read)."""
        self._check_open()
        future: asyncio.Future[V | None] = self._loop.create_future()
        self._pending.setdefault(key, []).append(future)
        if not self._scheduled:
            # Once the other requests of this turn of the loop have reached this point too.
            self._scheduled = True
            self._loop.call_soon(self._turn_done)
        return await future

    def _check_open(self) -> None:
        """Raise if no more reads may start (a closed reader)."""

    def _turn_done(self) -> None:
        raise NotImplementedError

    def _take(self) -> dict[K, list[asyncio.Future[V | None]]]:
        """The next batch: up to MAX_BATCH waiting keys and their waiters."""
        return {key: self._pending.pop(key) for key in list(islice(self._pending, MAX_BATCH))}

    def _answer(self, batch: dict[K, list[asyncio.Future[V | None]]], values: dict[K, V]) -> None:
        self.statements += 1
        self.keys += len(batch)
        for key, futures in batch.items():
            value = values.get(key)
            for future in futures:
                if not future.done():  # a waiter may have been cancelled meanwhile
                    future.set_result(value)

    @staticmethod
    def _fail(batch: dict[K, list[asyncio.Future[V | None]]], error: BaseException) -> None:
        for futures in batch.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)


_Batch = dict[str, list[asyncio.Future[dict[str, Any] | None]]]


class BatchedRead(_Waiters[str, dict[str, Any]]):
    """Rows of one SELECT by key, read for many coroutines at once on a few async connections.

    *statement* must select *key_column* (by that label) and take the key list as the bound
    parameter *param* (see :func:`batch_statement`). :meth:`get` returns the row as a dict by
    column label, with SQLAlchemy's result conversions applied, or None.
    """

    def __init__(
        self,
        db: Any,
        statement: AnySelect,
        *,
        key_column: str,
        param: str = "keys",
        connections: int,
    ) -> None:
        if connections < 1:
            raise ValueError("a batched read needs at least one connection")
        super().__init__()
        dialect = db.engine.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup:
            raise ValueError("BatchedRead runs on PostgreSQL's named parameters only")
        self._db = db
        self._sql = compiled.string
        self._compiled = compiled
        self._param = param
        self._shape = RowShape(statement, dialect)
        if key_column not in self._shape.names:
            raise ValueError(f"the statement does not select its key column {key_column!r}")
        self._key_index = self._shape.names.index(key_column)
        self._limit = connections
        self._idle: list[Any] = []
        self._busy = 0  # connections running a statement or being opened
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    @property
    def connections(self) -> int:
        """Connections open or being opened (never more than the *connections* it was given)."""
        return len(self._idle) + self._busy

    def _check_open(self) -> None:
        if self._closed:
            raise self._db._unreachable(RuntimeError("the database's read connections are closed"))

    def _turn_done(self) -> None:
        self._scheduled = False
        self._dispatch()

    def _dispatch(self) -> None:
        """Start a round trip for the waiting keys if a connection is free or may be opened."""
        while self._pending and (self._idle or self._busy < self._limit):
            batch = self._take()
            connection = self._idle.pop() if self._idle else None
            self._busy += 1
            task = self._loop.create_task(self._run(connection, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, connection: Any, batch: _Batch) -> None:
        keep = None
        try:
            rows, keep = await self._read(connection, list(batch))
        except YinxinError as exc:
            self._fail(batch, exc)
            return
        except BaseException as exc:  # never leave a request waiting for ever
            self._fail(batch, self._db._unreachable(exc))
            raise
        finally:
            self._busy -= 1
            if keep is not None:
                if self._closed:
                    await _close_quietly(keep)
                else:
                    self._idle.append(keep)
            if not self._closed:
                self._dispatch()
        self._answer(batch, rows)

    async def _read(self, connection: Any, keys: Sequence[str]) -> tuple[dict[str, Any], Any]:
        """The rows for *keys* by key, and the connection to keep (a new one if *connection* broke)."""
        import psycopg

        for attempt in (1, 2):
            if connection is None:
                connection = await self._connect()
            try:
                cursor = connection.cursor()
                try:
                    params = self._compiled.construct_params({self._param: list(keys)})
                    await cursor.execute(self._sql, params, prepare=True)
                    fetched = await cursor.fetchall()
                finally:
                    await cursor.close()
            except psycopg.Error as exc:
                await _close_quietly(connection)
                connection = None
                # A connection the server closed while it sat idle (a restart, an idle timeout):
                # read once more on a new one, as the pool's pre-ping would.
                if attempt == 1 and isinstance(exc, psycopg.OperationalError):
                    log.warning(
                        "a database read connection failed (%s): reading again on a new one",
                        type(exc).__name__,
                    )
                    continue
                raise self._db._unreachable(exc) from exc
            as_dict = self._shape.as_dict
            return {row[self._key_index]: as_dict(row) for row in fetched}, connection
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> Any:
        import psycopg

        engine = self._db.engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        # The engine's own arguments (the connect timeout) and its adapters (JSON with orjson).
        cparams = {**cparams, **self._db.connect_args, "autocommit": True}
        try:
            return await psycopg.AsyncConnection.connect(*cargs, **cparams)
        except psycopg.Error as exc:
            raise self._db._unreachable(exc) from exc

    async def aclose(self) -> None:
        """Close the idle connections; busy ones close when their statement is done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close_quietly(connection)


async def _close_quietly(connection: Any) -> None:
    try:
        await connection.close()
    except Exception as exc:  # a connection that broke may fail to close; nothing to do about it
        log.debug("closing a read connection failed: %s", exc)


class TurnCalls(_Waiters[K, V]):
    """The calls of one function made during one turn of the event loop, run back to back.

    ``await calls.get(key)`` returns ``run(keys)[key]``, where *run* gets every distinct key asked
    for during the turn (at most MAX_BATCH at a time) once the turn is done; a key *run* leaves out
    gets None, and an exception *run* raises goes to every waiter of its batch. *run* must be
    quick and must not block: it runs on the event loop.

    What it is for: verification's token checks (``Vault.verify_async``), and SQLite's look-ups
    (:class:`LoopBatchedRead`, whose *run* is one statement). Under load a worker
    starts about 20 verifications in one turn of its loop. Checked one by one, between the parsing,
    routing and answering of the requests around them, an ES256 token check cost 92-96 µs in
    process; 16 back to back cost 78 µs each, and 74 µs in a loop of nothing else (the curve's
    tables and the code stay in the CPU's caches).
    """

    def __init__(self, run: Callable[[list[K]], dict[K, V]]) -> None:
        super().__init__()
        self._run = run

    def _turn_done(self) -> None:
        self._scheduled = False
        while self._pending:
            batch = self._take()
            try:
                values = self._run(list(batch))
            except Exception as exc:
                self._fail(batch, exc)
                continue
            except BaseException as exc:
                self._fail(batch, exc)
                raise
            self._answer(batch, values)


class LoopBatchedRead(TurnCalls[str, dict[str, Any]]):
    """SQLite: the look-ups of one event-loop turn, read in one statement on the loop thread.

    Requests whose bytes arrived together start in the same turn of the event loop and reach
    their look-up before any of them is answered; each waits for a callback scheduled once for the
    turn, which reads every waiting key in one ``IN (…)`` statement (SQLite is in this process: no
    round trip, so nothing is gained by waiting longer than the turn).
    """

    def __init__(self, db: Any, statement: AnySelect, key: Any) -> None:
        super().__init__(self._read)
        self._db = db
        self._statement = statement
        self._key = key
        self._key_column = key.key
        self._reads: dict[int, Any] = {}  # PreparedRead per padded batch size

    async def aclose(self) -> None:
        """Nothing to close: the reads run on the loop thread's own connection."""

    def _read_for(self, size: int) -> Any:
        read = self._reads.get(size)
        if read is None:
            names: list[Any] = [bindparam(f"k{i}") for i in range(size)]
            read = self._reads[size] = self._db.prepare(self._statement.where(self._key.in_(names)))
        return read

    def _read(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        size = 1
        while size < len(keys):
            size *= 2
        padded = keys + [keys[0]] * (size - len(keys))
        rows = self._read_for(size).all(**{f"k{i}": key for i, key in enumerate(padded)})
        return {row[self._key_column]: row for row in rows}
