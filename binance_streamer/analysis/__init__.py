"""Offline analysis of recorded files with pandas.

    from binance_streamer import analysis
    trades = analysis.load("data", "BTCUSDT", "aggTrade", start="2026-11-25")
    bars = analysis.ohlcv(trades, "1min")
    book = analysis.book_at("data", "BTCUSDT", time="2026-11-25 12:00", depth=20)

A lookup of something the data directory does not hold (a wrong directory,
market, symbol or stream) raises :class:`NotRecorded` (a ``LookupError``)
naming what it does hold; a file that cannot be read raises :class:`LoadError`.

Nothing here runs in the recorder's write path.
"""

from .catalog import NotRecorded, day_files
from .helpers import gaps, ohlcv, spread
from .load import LoadError, load, load_file
from .replay import BookView, book_at, replay

__all__ = ["BookView", "LoadError", "NotRecorded", "book_at", "day_files", "gaps", "load", "load_file", "ohlcv",
           "replay", "spread"]
