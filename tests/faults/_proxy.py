"""A TCP proxy that breaks database connections on demand (for the fault tests).

It sits between the service and PostgreSQL (``127.0.0.1:5432``) and forwards bytes both ways
until told otherwise:

- :meth:`FaultProxy.drop_all` resets every open connection now (RST, as when the database restarts
  or a firewall between drops its state);
- :meth:`FaultProxy.refuse` resets every new connection as soon as it is accepted, until
  :meth:`FaultProxy.accept` (the database is down);
- :meth:`FaultProxy.arm` sets a one-shot :class:`Cut` that resets one connection in the middle of
  its conversation: when the client sends a given statement (``INSERT INTO licences``, the
  ``COMMIT``), optionally only on a connection that sent another one first, or after a number of
  bytes. With ``forward=True`` the triggering statement reaches the server and the connection is
  cut when the server answers: the server has done the work (committed), the client never hears
  so (the "commit outcome unknown" case).

Two threads per connection pump the bytes. A cut resets both sides with ``SO_LINGER`` 0, so
PostgreSQL sees a reset connection and rolls back whatever transaction was open on it (unless its
COMMIT went through), and the client's next read or write fails.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

__all__ = ["Cut", "FaultProxy"]

_CHUNK = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # on close: send RST, drop what is unsent


@dataclass
class Cut:
    """One connection cut, armed with :meth:`FaultProxy.arm`; it fires at most once.

    It triggers on a statement (*on*, client→server bytes; with *primed_by*, only on a connection
    that sent those bytes after the cut was armed, in an earlier read) or on the first connection
    to send anything once armed, after *after_bytes* of it have passed.
    """

    on: bytes | None = None
    primed_by: bytes | None = None
    after_bytes: int | None = None
    keep: int = 0  # bytes of the triggering read that still reach the server (half a message)
    forward: bool = False  # let the trigger through and cut when the server answers it
    fired: threading.Event = field(default_factory=threading.Event)
    _primed: set[int] = field(default_factory=set)  # connections that sent primed_by since arming
    _owner: int | None = None  # after_bytes: the connection it counts
    _passed: int = 0


def _reset(sock: socket.socket) -> None:
    """Close *sock* with a TCP RST; wakes a thread blocked in ``recv`` on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class _Connection:
    def __init__(self, proxy: FaultProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.tail = b""  # the last bytes the client sent (a statement may straddle two reads)
        self.cut_on_reply: Cut | None = None
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        for target in (self._client_to_server, self._server_to_client):
            threading.Thread(target=target, daemon=True, name="fault-proxy-pump").start()

    def reset(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        _reset(self.client)
        _reset(self.server)
        self.proxy._forget(self)

    def _client_to_server(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.client.recv(_CHUNK)
                if not data:
                    break
                cut, keep = self.proxy._match(self, data)
                if cut is not None and not cut.forward:
                    if keep:
                        self.server.sendall(data[:keep])  # half a message reaches the server
                    cut.fired.set()
                    break
                self.tail = data[-256:]
                if cut is not None:
                    self.cut_on_reply = cut
                self.server.sendall(data)
        except OSError:
            pass
        self.reset()

    def _server_to_client(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.server.recv(_CHUNK)
                if not data:
                    break
                cut = self.cut_on_reply
                if cut is not None:  # the server has answered the trigger: the client never hears it
                    cut.fired.set()
                    break
                self.client.sendall(data)
        except OSError:
            pass
        self.reset()


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to *upstream*; breaks connections when told to."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._cuts: list[Cut] = []
        self._refusing = False
        self._closing = False
        self.refused = 0  # connections reset on arrival
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")
        self._thread.start()

    # -- what the tests call -------------------------------------------------------------

    def url(self, database_url: str) -> str:
        """*database_url* (on the upstream address) redirected through this proxy."""
        host, port = self.upstream
        proxied = database_url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/", 1)
        assert proxied != database_url, f"{database_url} does not name {host}:{port}"
        return proxied

    def drop_all(self) -> int:
        """Reset every open connection; returns how many there were."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.reset()
        return len(connections)

    def refuse(self) -> None:
        """From now on, reset every new connection at once (the database is down)."""
        with self._lock:
            self._refusing = True

    def accept(self) -> None:
        """Forward new connections again (the database is back)."""
        with self._lock:
            self._refusing = False

    def arm(self, cut: Cut) -> Cut:
        """Cut the first connection that matches *cut*; ``cut.fired`` is set when it happened."""
        if (cut.on is None) == (cut.after_bytes is None):
            raise ValueError("a cut triggers on a statement or after a byte count, not both")
        with self._lock:
            self._cuts.append(cut)
        return cut

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._cuts.clear()
        _reset(self._listener)
        self.drop_all()
        self._thread.join(5)

    # -- inside ------------------------------------------------------------------------

    def _match(self, connection: _Connection, data: bytes) -> tuple[Cut | None, int]:
        """The cut *data* triggers on *connection*, and how many of its bytes still go through."""
        window = connection.tail + data
        with self._lock:
            for cut in self._cuts:
                if cut.on is not None:
                    if cut.primed_by is not None and id(connection) not in cut._primed:
                        if cut.primed_by in window:
                            cut._primed.add(id(connection))
                        continue
                    if cut.on not in window:
                        continue
                    keep = cut.keep
                else:
                    assert cut.after_bytes is not None
                    if cut._owner is None:
                        cut._owner = id(connection)
                    if cut._owner != id(connection):
                        continue
                    if cut._passed + len(data) <= cut.after_bytes:
                        cut._passed += len(data)
                        continue
                    keep = cut.after_bytes - cut._passed
                self._cuts.remove(cut)
                return cut, keep
        return None, 0

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                closing, refusing = self._closing, self._refusing
            if closing:
                _reset(client)
                return
            if refusing:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            connection = _Connection(self, client, server)
            with self._lock:
                self._connections.add(connection)
            connection.start()
