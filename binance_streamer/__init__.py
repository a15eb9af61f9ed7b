"""Records Binance spot, USD-M and COIN-M futures market data to CSV; see README.md."""

__version__ = "0.1.0"
