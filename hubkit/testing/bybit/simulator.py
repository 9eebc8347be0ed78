"""``BybitSimulator``: a ByBit v5 public API (REST + WebSocket) on 127.0.0.1, for tests and demos.

Use it on its own thread and loop::

    with BybitSimulator(seed=1, trades_per_second=50) as sim:
        httpx.get(f"{sim.rest_url}/v5/market/time")
        ws_connect(f"{sim.ws_url}/linear")        # ws_url is the base; append the category
        sim.faults.http_5xx_next = 2              # fault switches act at once
        trades = sim.ground_truth("trades")      # Polars frame of every trade produced
        sim.list_symbol("linear", "NEWUSDT", like="BTCUSDT")   # listings change at run time
        sim.set_status("linear", "ETHUSDT", "Closed"); sim.delist("linear", "ADAUSDT")

or on the caller's event loop (``async with BybitSimulator() as sim:``), or from the command
line (``python -m hubkit.testing.bybit --port 9000``). One port serves REST and WebSocket.

Promises: the same ``seed`` (and ``start_time_ms``) gives the same instruments and the same
trade sequence per symbol; REST ``recent-trade`` and ``kline`` serve exactly the trades the
WebSocket pushed; ``stop()`` closes every connection and task (no warnings).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, TypeVar

from hubkit.testing.bybit.faults import Faults
from hubkit.testing.bybit.hub import Hub, HubOptions
from hubkit.testing.bybit.instruments import Instrument, listed_like, load_catalog, with_status
from hubkit.testing.bybit.market import Market
from hubkit.testing.bybit.pricing import SimClock
from hubkit.testing.bybit.server import SimServer

if TYPE_CHECKING:
    import polars as pl

__all__ = ["DEFAULT_SYMBOLS", "BybitSimulator"]

T = TypeVar("T")
STARTUP_SLICE = 20_000  # trades of back history made between two looks at the event loop

DEFAULT_SYMBOLS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "linear": ("BTCUSDT", "ETHUSDT"),
        "spot": ("BTCUSDT",),
        "inverse": ("BTCUSD",),
        "option": ("BTC",),
    }
)


class BybitSimulator:
    """A local ByBit v5 public market-data server with ground truth and fault injection.

    Args:
        seed: seeds every generator (prices, trades, books).
        port: TCP port on 127.0.0.1; 0 picks a free one (read it back from ``rest_url``).
        trades_per_second: mean trades per simulated second per trade stream, or a mapping
            from symbol (or ``"category:symbol"``, option base coin, ``"*"``) to a rate.
        symbols: symbols that trade from the start: a mapping category -> symbols (option:
            base coins), or a list of symbols started in every category that lists them.
            Default ``DEFAULT_SYMBOLS``. Other symbols start when a client first names them.
        faults: initial fault switches (``sim.faults`` stays the live object).
        history_seconds: each symbol's trade history starts this long before it starts trading.
        start_time_ms: simulated time at start (default: the wall clock).
        time_scale: simulated ms per wall ms (e.g. 60 makes a 1-minute kline close every second).
        tick: seconds between publishing rounds (trades are grouped per round).
        kline_push_interval: seconds between pushes of an open kline (closes push at once).
        ws_max_buffer: bytes a WebSocket client may fall behind (unsent data buffered for it)
            before it is dropped as a slow consumer: close code 1008, counted as
            ``ws_slow_consumer`` in ``fault_counts``.
        ip_limit: (requests, window seconds, ban seconds) of ByBit's HTTP 403 IP rule, or None.
        api_keys: key -> secret accepted by ``/v5/private`` auth (empty: any signature).
        datasets: folder with the instrument lists (default: ``instruments.locate_datasets()``).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        port: int = 0,
        trades_per_second: float | Mapping[str, float] = 10.0,
        symbols: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        faults: Faults | None = None,
        history_seconds: float = 60.0,
        start_time_ms: int | None = None,
        time_scale: float = 1.0,
        tick: float = 0.02,
        kline_push_interval: float = 1.0,
        ws_max_buffer: int = 8 * 2**20,
        ip_limit: tuple[int, float, float] | None = (600, 5.0, 600.0),
        api_keys: Mapping[str, str] | None = None,
        datasets: Path | None = None,
    ) -> None:
        self.seed = seed
        self.host = "127.0.0.1"
        self.port = port
        self.trades_per_second = trades_per_second
        self.symbols = symbols
        self.faults = faults if faults is not None else Faults()
        self.history_seconds = history_seconds
        self.start_time_ms = start_time_ms
        self.time_scale = time_scale
        self.options = HubOptions(
            tick=tick,
            kline_push_interval=kline_push_interval,
            ws_max_buffer=ws_max_buffer,
            ip_limit=ip_limit,
            api_keys=dict(api_keys or {}),
        )
        self.catalog = load_catalog(datasets)
        self._hub: Hub | None = None
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopped = False

    # -- addresses ------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT`` (after start)."""
        return f"http://{self.host}:{self._bound_port()}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT/v5/public``; append ``/linear``, ``/spot``, ... (after start)."""
        return f"ws://{self.host}:{self._bound_port()}/v5/public"

    def ws_endpoint(self, category: str) -> str:
        """The full WebSocket URL of one category (``private`` gives ``/v5/private``)."""
        if category == "private":
            return f"ws://{self.host}:{self._bound_port()}/v5/private"
        return f"{self.ws_url}/{category}"

    def _bound_port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running; use start() or a with block")
        return self._server.port

    # -- lifecycle ------------------------------------------------------------------------------

    def _symbol_plan(self) -> list[tuple[str, str]]:
        symbols = self.symbols if self.symbols is not None else DEFAULT_SYMBOLS
        plan: list[tuple[str, str]] = []
        if isinstance(symbols, Mapping):
            for category, names in symbols.items():
                plan += [(category, name) for name in names]
        else:
            for name in symbols:
                for category in ("linear", "spot", "inverse", "option"):
                    if self.catalog.get(category, name) is not None:
                        plan.append((category, name))
        return plan

    async def _astart_here(self) -> None:
        clock = SimClock(self.start_time_ms, self.time_scale)
        market = Market(
            self.catalog,
            seed=self.seed,
            clock=clock,
            trades_per_second=self.trades_per_second,
            history_seconds=self.history_seconds,
        )
        for category, name in self._symbol_plan():
            if market.activate(category, name) is None:
                raise ValueError(f"unknown {category} symbol {name!r}")
        # the back history, in slices: the loop (and a stop request) is served meanwhile
        while not market.advance(clock.now_ms(), max_trades=STARTUP_SLICE):
            if self._stopped:
                raise RuntimeError("the simulator was stopped while starting")
            await asyncio.sleep(0)
        hub = Hub(market, self.catalog, clock, self.faults, self.options)
        server = SimServer(hub, self.host, self.port)
        await server.start()
        self._hub, self._server = hub, server

    async def astart(self) -> BybitSimulator:
        """Start serving on the running event loop."""
        if self._server is not None or self._stopped:
            raise RuntimeError("a simulator starts once")
        await self._astart_here()
        return self

    async def astop(self) -> None:
        """Stop serving (on the loop that ``astart`` ran on)."""
        if self._thread is not None:
            await asyncio.to_thread(self.stop)
            return
        if self._server is not None and not self._stopped:
            self._stopped = True
            await self._server.stop()

    def start(self) -> BybitSimulator:
        """Start serving on a new daemon thread with its own event loop; returns when ready."""
        if self._server is not None or self._stopped:
            raise RuntimeError("a simulator starts once")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._stop_event = asyncio.Event()
                loop.run_until_complete(self._astart_here())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_until_complete(self._stop_event.wait())
                assert self._server is not None
                loop.run_until_complete(self._server.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="bybit-simulator", daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:  # e.g. Ctrl-C / SIGTERM while the back history is being made
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the simulator started with ``start()``; idempotent."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if self._stopped:
            return
        self._stopped = True
        if thread is None or loop is None or event is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed already (failed start)
                loop.call_soon_threadsafe(event.set)
            thread.join(timeout=30)

    def __enter__(self) -> BybitSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> BybitSimulator:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- reading state (safe from any thread) ----------------------------------------------

    @property
    def hub(self) -> Hub:
        """The running hub (internal state; prefer the accessors below)."""
        if self._hub is None:
            raise RuntimeError("the simulator is not running")
        return self._hub

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the simulator's loop thread when called from another thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or threading.current_thread() is thread:
            return fn()
        if not thread.is_alive():
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=60)

    def now_ms(self) -> int:
        """The simulator clock (ms since the epoch)."""
        return self.hub.clock.now_ms()

    def ground_truth(self, kind: str) -> pl.DataFrame:
        """Everything produced of ``kind``: "trades", "klines" or "tickers" (see groundtruth)."""
        return self._call(lambda: self.hub.truth.frame(kind))

    @property
    def fault_counts(self) -> dict[str, int]:
        """How often each fault fired, by counter name (see ``faults``)."""
        return dict(self.hub.counter.snapshot())

    @property
    def requests(self) -> dict[str, int]:
        """HTTP requests (including WebSocket handshakes) received, by path."""
        return self._call(lambda: dict(self.hub.requests))

    @property
    def request_count(self) -> int:
        """Total HTTP requests received (including WebSocket handshakes)."""
        return sum(self.requests.values())

    @property
    def request_log(self) -> list[tuple[str, dict[str, str]]]:
        """Every request as (path, query parameters), oldest first."""
        return self._call(lambda: [(p, dict(q)) for p, q in self.hub.request_log])

    @property
    def messages_sent(self) -> int:
        """WebSocket data messages written so far (all connections)."""
        return self.hub.messages_out

    @property
    def slow_consumers_dropped(self) -> int:
        """WebSocket clients dropped for falling more than ``ws_max_buffer`` bytes behind."""
        return self.hub.counter.snapshot().get("ws_slow_consumer", 0)

    @property
    def trades_made(self) -> int:
        """Trades made so far (history included), all streams."""
        return self._call(lambda: sum(s.count for s in self.hub.market.streams.values()))

    @property
    def ws_connections(self) -> int:
        """WebSocket connections open now."""
        return self._call(lambda: sum(1 for c in self.hub.conns if not c.closed))

    @property
    def ws_connections_total(self) -> int:
        """WebSocket connections accepted since start."""
        return self.hub.ws_connections_total

    @property
    def tcp_connections_total(self) -> int:
        """TCP connections accepted since start (keep-alive clients reuse one)."""
        return self.hub.tcp_connections_total

    def subscribers(self, category: str, topic: str) -> int:
        """How many connections are subscribed to ``topic`` in ``category``."""
        return self._call(lambda: len(self.hub.subs.get((category, topic), ())))

    def disconnect_all(self) -> int:
        """Drop every WebSocket connection now (counted as ``ws_drop_manual``)."""
        return self._call(self.hub.disconnect_all)

    # -- listings (applied on the simulator's loop) ---------------------------------------------

    def list_symbol(
        self, category: str, symbol: str, *, like: str, status: str = "Trading"
    ) -> None:
        """List a new instrument ``symbol`` shaped like the listed ``like`` (same filters and
        coins), launched now; ``instruments-info`` serves it from the next request on."""

        def apply() -> None:
            model = self._listed(category, like)
            if self.catalog.get(category, symbol) is not None:
                raise ValueError(f"{category} {symbol} is already listed")
            launch = self._hub.clock.now_ms() if self._hub is not None else model.launch_time
            self.catalog.put(listed_like(model, symbol, status, launch))

        self._call(apply)

    def set_status(self, category: str, symbol: str, status: str) -> None:
        """Change a listed instrument's ``status`` (``"Trading"``, ``"PreLaunch"``,
        ``"Delivering"``, ``"Closed"``); ``instruments-info`` shows it from the next request
        on (without a ``status`` parameter it lists only what ByBit lists by default)."""
        self._call(lambda: self.catalog.put(with_status(self._listed(category, symbol), status)))

    def delist(self, category: str, symbol: str) -> None:
        """Take ``symbol`` off ``instruments-info`` altogether (it is gone from every list)."""
        self._call(lambda: self.catalog.remove(self._listed(category, symbol).category, symbol))

    def _listed(self, category: str, symbol: str) -> Instrument:
        inst = self.catalog.get(category, symbol)
        if inst is None:
            raise ValueError(f"no {category} instrument {symbol!r} is listed")
        return inst

    def __repr__(self) -> str:
        state = "running" if self._server is not None and not self._stopped else "stopped"
        where = f" {self.rest_url}" if state == "running" else ""
        return f"<BybitSimulator seed={self.seed} {state}{where}>"
