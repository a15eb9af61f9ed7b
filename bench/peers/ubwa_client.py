"""unicorn-binance-websocket-api as a CSV recorder built on it would use it:
a callback consumer writing one line per event (no book). Run by
bench/peer.py under the peers' own Python."""

import os
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Sink, config, kind_of, ready  # noqa: E402


def line(kind, d, now):
    if kind == "aggTrade":
        return f"{d['a']},{d['p']},{d['q']},{d['f']},{d['l']},{d['T']},{d['m']},{d['E']},{now}\n"
    if kind == "bookTicker":
        return f"{d['u']},{d['b']},{d['B']},{d['a']},{d['A']},{now}\n"
    if kind == "depth":
        return (f"{d['E']},{d['U']},{d['u']},{' '.join(p + ':' + q for p, q in d['b'])},"
                f"{' '.join(p + ':' + q for p, q in d['a'])},{now}\n")
    k = d["k"]
    return f"{k['t']},{k['o']},{k['h']},{k['l']},{k['c']},{k['v']},{k['x']},{d['E']},{now}\n"


def main():
    from unicorn_binance_websocket_api import BinanceWebSocketApiManager
    cfg = config()
    sink = Sink(cfg)

    def on_data(raw):
        msg = orjson.loads(raw)
        stream = msg.get("stream") if isinstance(msg, dict) else None
        if stream is None:
            return                  # answers to SUBSCRIBE
        kind = kind_of(stream)
        sink.write(kind, line(kind, msg["data"], time.time_ns() // 1000))

    manager = BinanceWebSocketApiManager(exchange="binance.com", websocket_base_uri=cfg["ws"] + "/",
                                         output_default="raw_data", enable_stream_signal_buffer=False)
    manager.create_stream(channels=cfg["channels"], markets=[s.lower() for s in cfg["symbols"]],
                          process_stream_data=on_data)
    ready()
    sink.wait()
    sink.report()
    os._exit(0)                     # stopping the manager takes seconds and measures nothing


if __name__ == "__main__":
    main()
