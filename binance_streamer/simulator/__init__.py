"""A local exchange that speaks Binance's public market-data protocol.

Every test, the offline demo and the benchmarks run the recorder against it
through the same code path as production; only the endpoints differ."""

from .config import SimConfig
from .server import Simulator, control

__all__ = ["SimConfig", "Simulator", "control"]
