"""Records Binance spot and USD-M market data to CSV; see README.md."""

__version__ = "0.1.0"
