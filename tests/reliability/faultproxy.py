"""A TCP fault proxy on 127.0.0.1 for the reliability tests (no toxiproxy or netem here).

Clients connect to :attr:`FaultProxy.address` instead of the server; each
connection is forwarded to ``target`` by an asyncio loop on a background
thread, and the test injects faults while traffic flows:

- :meth:`FaultProxy.latency` — every chunk waits ``delay_s`` ± ``jitter_s``
  (order within a connection is kept, as TCP keeps it);
- :meth:`FaultProxy.blackhole` — nothing moves either way and new connections
  hang (a dropped route): bytes are held, not lost, and flow again once the
  blackhole is lifted, unless a side gave up and closed first;
- :meth:`FaultProxy.reset_after` — each connection is reset (RST) once it has
  carried ``n`` bytes (both directions), cutting requests mid-way;
- :meth:`FaultProxy.down` / :meth:`FaultProxy.up` — every connection is reset
  and new ones are refused, until ``up``.

``affects`` narrows the faults to some clients (e.g. the worker's connections
but not the SDK's, when both talk to one broker): it gets each client's
``(host, port)`` when it connects; the others are forwarded untouched.

>>> import socket, threading
>>> server = socket.create_server(("127.0.0.1", 0))
>>> def echo() -> None:
...     conn, _ = server.accept()
...     with conn:
...         while data := conn.recv(4096):
...             conn.sendall(data)
>>> threading.Thread(target=echo, daemon=True).start()
>>> with FaultProxy(server.getsockname()) as proxy:
...     with socket.create_connection(("127.0.0.1", proxy.port)) as client:
...         client.sendall(b"ping")
...         client.recv(4)
b'ping'
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psutil

Peer = tuple[str, int]
CHUNK = 64 * 1024


def from_process(pid: int) -> Callable[[Peer], bool]:
    """``affects`` predicate: True for connections opened by process ``pid``.

    The proxy sees only the client's address; the process that owns that
    socket is looked up in the kernel's table (loopback, so it is this host).
    """
    def owned(peer: Peer) -> bool:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.laddr and (c.laddr.ip, c.laddr.port) == peer for c in conns)
    return owned


def not_from_process(pid: int) -> Callable[[Peer], bool]:
    """``affects`` predicate: True for connections of any process but ``pid``."""
    owned = from_process(pid)
    return lambda peer: not owned(peer)


class _Link:
    """One proxied connection: two pumps, a byte count, and how to reset it."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter,
                 faulty: bool) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.faulty = faulty
        self.carried = 0
        self.closed = False

    def reset(self) -> None:
        """Abort both sides with RST (SO_LINGER 0), like a peer that vanished."""
        if self.closed:
            return
        self.closed = True
        for w in (self.client, self.upstream):
            if w is None:
                continue
            sock = w.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.client, self.upstream):
            if w is not None:
                w.close()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction, applying the proxy's faults to each chunk."""
        p = self.proxy
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        due_last = 0.0
        try:
            while not self.closed:
                await p.flowing(self)
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.faulty and p.reset_bytes is not None:
                    room = p.reset_bytes - self.carried
                    if len(data) >= room:
                        if room > 0:
                            await queue.put((0.0, data[:room]))
                        await queue.put(None)
                        await sender
                        p.resets += 1
                        self.reset()
                        return
                self.carried += len(data)
                due = time.monotonic() + (p.delay_for() if self.faulty else 0.0)
                due_last = max(due, due_last)  # jitter never reorders a connection's bytes
                await queue.put((due_last, data))
        except (ConnectionError, OSError):
            pass
        await queue.put(None)
        with contextlib.suppress(ConnectionError, OSError):
            await sender
        self.close()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes] | None],
                    writer: asyncio.StreamWriter) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.proxy.flowing(self)
            if self.closed:
                return
            writer.write(data)
            await writer.drain()
            self.proxy.forwarded += len(data)


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``target`` with injectable faults (see the module).

    Parameters
    ----------
    target
        ``(host, port)`` of the real server.
    port
        Port to listen on (0: a free one; fixed ports let a server advertise it).
    seed
        Seed of the jitter, so a failing run can be repeated.
    affects
        Which clients the faults apply to (all when None), by their address.
    """

    def __init__(self, target: Peer, *, port: int = 0, seed: int = 0,
                 affects: Callable[[Peer], bool] | None = None) -> None:
        self.target = (str(target[0]), int(target[1]))
        self.port = port
        self.affects = affects
        self._rng = random.Random(seed)
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.reset_bytes: int | None = None
        self._flowing: asyncio.Event | None = None
        self._down = False
        self.links: set[_Link] = set()
        self.connections = 0
        self.resets = 0
        self.forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy",
                                        daemon=True)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Listen and forward on the background thread; returns self."""
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Close every connection and the listener; stop the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` clients should use."""
        return f"127.0.0.1:{self.port}"

    # -- faults (callable from any thread) -------------------------------------------
    def latency(self, delay_s: float, jitter_s: float = 0.0) -> None:
        """Delay every chunk by ``delay_s`` ± up to ``jitter_s`` (0, 0: none)."""
        self.delay_s, self.jitter_s = delay_s, jitter_s

    def blackhole(self, on: bool = True) -> None:
        """Stop (or let again) every byte; held bytes are delivered when lifted."""
        self._call(self._set_flowing(not on))

    def reset_after(self, n: int | None) -> None:
        """Reset each connection once it carried ``n`` bytes (None: never)."""
        self.reset_bytes = n
        if n is not None:
            self._loop.call_soon_threadsafe(self._reset_spent)

    def down(self) -> None:
        """Reset every connection and refuse new ones until :meth:`up`."""
        self._call(self._go_down())

    def up(self) -> None:
        """Accept connections again after :meth:`down`."""
        self._call(self._go_up())

    def clear(self) -> None:
        """No more faults (latency, blackhole, resets, down)."""
        self.latency(0.0, 0.0)
        self.reset_after(None)
        self.blackhole(False)
        if self._down:
            self.up()

    # -- the loop side -------------------------------------------------------------------
    def delay_for(self) -> float:
        if not self.delay_s and not self.jitter_s:
            return 0.0
        return max(0.0, self.delay_s + self._rng.uniform(-self.jitter_s, self.jitter_s))

    async def flowing(self, link: _Link) -> None:
        """Wait while a blackhole holds this link's bytes."""
        assert self._flowing is not None
        if link.faulty:
            await self._flowing.wait()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.close()
        assert self._flowing is not None
        self._flowing.set()  # let held pumps see the close and end

    async def _set_flowing(self, on: bool) -> None:
        assert self._flowing is not None
        if on:
            self._flowing.set()
        else:
            self._flowing.clear()

    def _reset_spent(self) -> None:
        for link in list(self.links):
            if link.faulty and self.reset_bytes is not None and link.carried >= self.reset_bytes:
                self.resets += 1
                link.reset()

    async def _go_down(self) -> None:
        self._down = True
        if self.affects is None and self._server is not None:
            self._server.close()  # refused, as by a host that is gone
            await self._server.wait_closed()
            self._server = None
        for link in list(self.links):
            if link.faulty:
                link.reset()

    async def _go_up(self) -> None:
        self._down = False
        if self._server is None:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        faulty = True
        if self.affects is not None:
            faulty = await asyncio.to_thread(self.affects, (peer[0], peer[1]))
        link = _Link(self, writer, faulty)
        self.connections += 1
        if faulty and self._down:
            link.reset()
            return
        self.links.add(link)
        try:
            await self.flowing(link)  # a blackhole: the connection hangs before it reaches out
            if link.closed:
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection(*self.target)
            except OSError:
                link.reset()  # the server is down: so is the proxied connection
                return
            await asyncio.gather(link.pump(reader, link.upstream), link.pump(up_reader, writer))
        finally:
            self.links.discard(link)
            link.close()
