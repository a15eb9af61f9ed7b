"""cryptofeed as a CSV recorder built on it would use it: its Binance feed
(its own order book from the depth stream and REST snapshots, uvloop when
installed), pointed at the simulator by a subclass whose endpoints are the
simulator's, callbacks writing one line per event. Run by bench/peer.py
under the peers' own Python. With ``"plain"`` in its arguments (peer.py
--plain) it also lets cryptofeed's websocket connection open a ws://
address, which cryptofeed refuses (``WSAsyncConn.__init__`` raises
ValueError for an address not starting wss://): see allow_plain_websocket."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Sink, config, kind_of, ready  # noqa: E402


def allow_plain_websocket():
    """Wrap cryptofeed's ``WSAsyncConn.__init__`` in this process: its check
    is shown a wss:// address, then the connection keeps the real ws:// one,
    which ``_open`` hands to ``websockets.connect`` as it is."""
    from cryptofeed.connection import WSAsyncConn
    checked = WSAsyncConn.__init__

    def init(self, address, *args, **kwargs):
        plain = address.startswith("ws://")
        checked(self, "wss://" + address[len("ws://"):] if plain else address, *args, **kwargs)
        self.address = address
    WSAsyncConn.__init__ = init


def main():
    from cryptofeed import FeedHandler
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import CANDLES, L2_BOOK, TICKER, TRADES
    from cryptofeed.exchanges import Binance
    cfg = config()
    if cfg.get("plain"):
        allow_plain_websocket()
    sink = Sink(cfg)
    routes = Routes("/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}",
                    authentication="/api/v3/userDataStream")

    async def message_handler(self, msg, conn, timestamp):
        """Every frame counts as received; the callbacks below write a line
        for each event cryptofeed hands on (its book drops diffs older than
        its snapshot, which a replay at full speed makes many of)."""
        start = msg.find('"stream":"')
        if start >= 0:
            stream = msg[start + 10:msg.index('"', start + 10)]
            sink.received(kind_of(stream))
        await Binance.message_handler(self, msg, conn, timestamp)

    Simulated = type("Simulated", (Binance,), {"websocket_endpoints": [WebsocketEndpoint(cfg["ws"])],
                                               "rest_endpoints": [RestEndpoint(cfg["rest"], routes=routes)],
                                               "message_handler": message_handler})

    async def trade(t, receipt):
        sink.write("aggTrade", f"{t.id},{t.price},{t.amount},{t.side},{t.timestamp},{receipt}\n", False)

    async def ticker(t, receipt):
        sink.write("bookTicker", f"{t.symbol},{t.bid},{t.ask},{t.timestamp},{receipt}\n", False)

    async def book(b, receipt):
        delta = b.delta or {}
        sink.write("depth", f"{b.symbol},{b.sequence_number},{len(delta.get('bid', ()))},"
                            f"{len(delta.get('ask', ()))},{b.timestamp},{receipt}\n", False)

    async def candle(c, receipt):
        sink.write("kline", f"{c.symbol},{c.start},{c.open},{c.high},{c.low},{c.close},{c.volume},{c.closed},"
                            f"{receipt}\n", False)

    std = {exchange: name for name, exchange in Simulated.symbol_mapping().items()}      # from exchangeInfo
    symbols = [std[s] for s in cfg["symbols"] if s in std]
    handler = FeedHandler(config={"log": {"disabled": True}, "uvloop": True})
    handler.add_feed(Simulated(symbols=symbols, channels=[TRADES, TICKER, L2_BOOK, CANDLES],
                               callbacks={TRADES: trade, TICKER: ticker, L2_BOOK: book, CANDLES: candle},
                               max_depth=0))

    def watch():
        ready()
        sink.wait()
        sink.report()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    handler.run(install_signal_handlers=False)
    time.sleep(3600)


if __name__ == "__main__":
    main()
