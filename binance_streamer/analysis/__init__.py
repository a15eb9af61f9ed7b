"""Offline analysis of recorded files with pandas.

    from binance_streamer import analysis
    trades = analysis.load("data", "BTCUSDT", "aggTrade", start="2026-11-25")
    bars = analysis.ohlcv(trades, "1min")
    book = analysis.book_at("data", "BTCUSDT", time="2026-11-25 12:00", depth=20)

Nothing here runs in the recorder's write path.
"""

from .helpers import gaps, ohlcv, spread
from .load import LoadError, day_files, load, load_file
from .replay import BookView, book_at, replay

__all__ = ["BookView", "LoadError", "book_at", "day_files", "gaps", "load", "load_file", "ohlcv", "replay",
           "spread"]
