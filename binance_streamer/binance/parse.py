"""Binance events -> CSV lines. Pure; no clock, no I/O.

Every price and quantity is copied as the string Binance sent. Each function
returns ``(id, line)`` where ``id`` is the row's sequence id (see
csvfiles.ID_COLUMN) and ``line`` ends with a newline; the column order is
csvfiles.SCHEMAS. A payload missing a field raises KeyError or TypeError,
which the caller counts as malformed.
"""

from decimal import Decimal

_BOOL = {"spot": ("False", "True"), "usdm": ("false", "true")}

# Fields each event may carry; anything else is counted as unexpected.
KNOWN_FIELDS = {
    "aggTrade": {"e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m", "M", "st"},
    "trade": {"e", "E", "s", "t", "p", "q", "T", "m", "M", "b", "a"},
    "kline": {"e", "E", "s", "k", "ps", "st"},
    "bookTicker": {"e", "E", "T", "s", "u", "b", "B", "a", "A", "ps", "st"},
    "depth": {"e", "E", "T", "s", "U", "u", "pu", "b", "a", "ps", "st"},
}


def unexpected_fields(kind, data):
    known = KNOWN_FIELDS[kind]
    return [k for k in data if k not in known]


def _agg_line(market, d, event_time, recv_us, backfilled):
    t = _BOOL[market]
    best = f'{t[d.get("M", True)]},' if market == "spot" else ""
    return d["a"], (f'{d["a"]},{d["p"]},{d["q"]},{d["f"]},{d["l"]},{d["T"]},{t[d["m"]]},{best}'
                    f'{event_time},{recv_us},{backfilled}\n')


def agg_trade(market, d, recv_us):
    return _agg_line(market, d, d["E"], recv_us, 0)


def agg_trade_rest(market, d, recv_us):
    """A row of REST ``aggTrades`` (no event time), marked backfilled."""
    return _agg_line(market, d, "", recv_us, 1)


def quote_qty(price, qty):
    """price * qty, exact, without trailing zeros (Binance's quoteQty column)."""
    return format((Decimal(price) * Decimal(qty)).normalize(), "f")


def trade(market, d, recv_us):
    t = _BOOL[market]
    return d["t"], (f'{d["t"]},{d["p"]},{d["q"]},{quote_qty(d["p"], d["q"])},{d["T"]},{t[d["m"]]},'
                    f'{t[d.get("M", True)]},{d["E"]},{recv_us}\n')


def kline(market, d, recv_us):
    """Closed candles only: ``None`` for an update of the open candle."""
    k = d["k"]
    if not k["x"]:
        return None
    return k["t"], (f'{k["t"]},{k["o"]},{k["h"]},{k["l"]},{k["c"]},{k["v"]},{k["T"]},{k["q"]},{k["n"]},'
                    f'{k["V"]},{k["Q"]},{k["B"]},{k["f"]},{k["L"]},{d["E"]},{recv_us},0\n')


def kline_rest(row, recv_us):
    """A row of REST ``klines`` (12 columns), marked backfilled."""
    return row[0], ",".join(str(v) for v in row) + f",,,,{recv_us},1\n"


def book_ticker(market, d, recv_us):
    return d["u"], f'{d["u"]},{d["b"]},{d["B"]},{d["a"]},{d["A"]},{d.get("T", "")},{d.get("E", "")},{recv_us}\n'


def depth(market, d, recv_us):
    """One row per price level; an event without levels still gets one row,
    so the update ids stay provably continuous in the file."""
    head = f'{d["E"]},{d.get("T", "")},{d["U"]},{d["u"]},{d.get("pu", "")},'
    tail = f",{recv_us}\n"
    lines = [f"{head}bid,{p},{q}{tail}" for p, q in d["b"]]
    lines += [f"{head}ask,{p},{q}{tail}" for p, q in d["a"]]
    if not lines:
        lines.append(f"{head},,{tail}")
    return d["u"], lines


def event_time(kind, d, recv_us):
    """Exchange time of an event in ms (spot bookTicker has none: receive time)."""
    if kind == "bookTicker" and "E" not in d:
        return recv_us // 1000
    return d["E"]


def first_event_time(messages, look=8):
    """The exchange's event time ``E`` (ms) of the first of ``messages`` (raw
    frames of one socket read) that has one, looking at the first ``look``;
    None when none does (spot bookTickers carry no time). The oldest frame
    of a read is the one that waited longest: its receive time less ``E`` is
    how far behind the connection is. One search per read, not per message."""
    for data in messages[:look]:
        i = data.find(b'"E":')
        if i < 0:
            continue
        start = end = i + 4
        while end < len(data) and 48 <= data[end] <= 57:
            end += 1
        if end > start:
            return int(data[start:end])
    return None
