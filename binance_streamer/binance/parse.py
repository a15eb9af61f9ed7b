"""Binance events -> CSV lines. Pure; no clock, no I/O.

Every price and quantity is copied as the string Binance sent, after a check
that it is one: a decimal number written with digits and at most one point
(``num``), never an exponent, a sign, a word or a kilobyte of digits; ids and
times must be non-negative integers (``uint``), flags booleans. Each function
returns ``(id, line)`` (``depth``: ``(id, text, rows, bids, asks)``) where ``id`` is the row's sequence id (see
streams.KINDS) and ``line`` ends with a newline; the column order is
csvfiles.SCHEMAS. A payload with a missing field raises KeyError, one of the
wrong shape TypeError or ValueError, one with a value that is not what
Binance sends BadValue (a ValueError): the caller counts the event as
malformed and drops it before it changes any state.
"""

import re
from decimal import Decimal

from ..markets import BOOLEANS as _BOOL
MAX_NUMBER = 40          # characters of a price or quantity; Binance's have about 20


class BadValue(ValueError):
    """A field whose value is not what Binance sends."""


# Everything a malformed event or answer raises in these functions (and in
# the code that reads such an event's fields): callers count and drop it.
MALFORMED = (KeyError, TypeError, ValueError, IndexError, ArithmeticError, AttributeError)


def num(s):
    """``s`` if it is a non-negative decimal number as Binance writes it."""
    if s.__class__ is str and 0 < len(s) <= MAX_NUMBER and s.isascii() and s.replace(".", "", 1).isdigit():
        return s
    raise BadValue(f"not a decimal number: {str(s)[:MAX_NUMBER]!r}")


def two_nums(p, q):
    """``num``'s checks of a price and a quantity at once, True or False:
    one call per price level instead of two (this runs for every level of
    every diff); on a False the caller calls ``num``, which says what is wrong."""
    return (p.__class__ is str and q.__class__ is str and 0 < len(p) <= MAX_NUMBER and 0 < len(q) <= MAX_NUMBER
            and p.isascii() and q.isascii() and p.replace(".", "", 1).isdigit() and q.replace(".", "", 1).isdigit())


def uint(x):
    """``x`` if it is a non-negative integer that fits 63 bits (ids, times)."""
    if x.__class__ is int and 0 <= x < 1 << 63:
        return x
    raise BadValue(f"not an id or a time: {str(x)[:MAX_NUMBER]!r}")


def sint(x):
    """``x`` if it is an integer that fits 63 bits (a futures ``pu`` may be -1)."""
    if x.__class__ is int and -(1 << 63) < x < 1 << 63:
        return x
    raise BadValue(f"not an integer: {str(x)[:MAX_NUMBER]!r}")


def rate(s):
    """A funding rate: a decimal number that may be negative (``"-0.00010000"``),
    or ``""`` as COIN-M's delivery contracts send (they have no funding)."""
    if s == "":
        return s
    if s.__class__ is str and s[:1] == "-":
        num(s[1:])
        return s
    return num(s)


def word(s):
    """A word Binance sends as a value (``"SELL"``, ``"LIMIT"``, ``"IOC"``,
    ``"FILLED"``): ASCII letters and underscores, nothing a CSV cell must quote."""
    if s.__class__ is str and 0 < len(s) <= MAX_NUMBER and s.isascii() and s.replace("_", "").isalpha():
        return s
    raise BadValue(f"not a word: {str(s)[:MAX_NUMBER]!r}")


def flag(x):
    if x is True or x is False:
        return x
    raise BadValue(f"not true or false: {str(x)[:MAX_NUMBER]!r}")


def opt_uint(d, key):
    """An optional time field: its value, or "" when absent."""
    x = d.get(key)
    return "" if x is None else uint(x)


def _agg_line(market, d, event_time, recv_us, backfilled):
    t = _BOOL[market]
    best = f'{t[flag(d.get("M", True))]},' if market == "spot" else ""
    a = uint(d["a"])
    return a, (f'{a},{num(d["p"])},{num(d["q"])},{uint(d["f"])},{uint(d["l"])},{uint(d["T"])},{t[flag(d["m"])]},'
               f'{best}{event_time},{recv_us},{backfilled}\n')


def agg_trade(market, d, recv_us):
    return _agg_line(market, d, uint(d["E"]), recv_us, 0)


def agg_trade_rest(market, d, recv_us):
    """A row of REST ``aggTrades`` (no event time), marked backfilled."""
    return _agg_line(market, d, "", recv_us, 1)


def quote_qty(price, qty):
    """price * qty, exact, without trailing zeros (Binance's quoteQty column)."""
    return format((Decimal(price) * Decimal(qty)).normalize(), "f")


def trade(market, d, recv_us):
    t = _BOOL[market]
    tid, p, q = uint(d["t"]), num(d["p"]), num(d["q"])
    return tid, (f'{tid},{p},{q},{quote_qty(p, q)},{uint(d["T"])},{t[flag(d["m"])]},'
                 f'{t[flag(d.get("M", True))]},{uint(d["E"])},{recv_us}\n')


def kline(market, d, recv_us):
    """Closed candles only: ``None`` for an update of the open candle."""
    k = d["k"]
    if not flag(k["x"]):
        return None
    t = uint(k["t"])
    return t, (f'{t},{num(k["o"])},{num(k["h"])},{num(k["l"])},{num(k["c"])},{num(k["v"])},{uint(k["T"])},'
               f'{num(k["q"])},{uint(k["n"])},{num(k["V"])},{num(k["Q"])},{num(k["B"])},{sint(k["f"])},'
               f'{sint(k["L"])},{uint(d["E"])},{recv_us},0\n')


KLINE_REST = (uint, num, num, num, num, num, uint, num, uint, num, num, num)


def kline_rest(row, recv_us):
    """A row of REST ``klines`` (12 columns), marked backfilled."""
    if row.__class__ is not list or len(row) != len(KLINE_REST):
        raise BadValue(f"a kline is a list of {len(KLINE_REST)} values: {str(row)[:80]!r}")
    return uint(row[0]), ",".join(str(check(v)) for check, v in zip(KLINE_REST, row)) + f",,,,{recv_us},1\n"


def book_ticker(market, d, recv_us):
    u = uint(d["u"])
    return u, (f'{u},{num(d["b"])},{num(d["B"])},{num(d["a"])},{num(d["A"])},{opt_uint(d, "T")},'
               f'{opt_uint(d, "E")},{recv_us}\n')


def mark_price(market, d, recv_us):
    """A ``markPriceUpdate`` (futures): its id is its event time ``E``.
    Delivery contracts send ``r`` "" and ``T`` 0: kept as sent."""
    e = uint(d["E"])
    return e, (f'{e},{num(d["p"])},{num(d["i"])},{num(d["P"])},{rate(d["r"])},{uint(d["T"])},{recv_us}\n')


def force_order(market, d, recv_us):
    """A ``forceOrder`` (futures liquidation order, in ``o``): its id is its
    event time ``E`` (at most one event per symbol per 1000 ms)."""
    e, o = uint(d["E"]), d["o"]
    return e, (f'{e},{word(o["S"])},{word(o["o"])},{word(o["f"])},{num(o["q"])},{num(o["p"])},{num(o["ap"])},'
               f'{word(o["X"])},{num(o["l"])},{num(o["z"])},{uint(o["T"])},{recv_us}\n')


def levels(side):
    """A list of ``[price, quantity]`` pairs, each checked."""
    if side.__class__ is not list:
        raise BadValue(f"price levels must be a list: {str(side)[:80]!r}")
    for level in side:
        if level.__class__ is not list or len(level) != 2:
            raise BadValue(f"a price level is [price, quantity]: {str(level)[:80]!r}")
        num(level[0])
        num(level[1])
    return side


def snapshot(d):
    """A REST depth snapshot, checked: ``(lastUpdateId, bids, asks)``."""
    if d.__class__ is not dict:
        raise BadValue(f"a depth snapshot is an object: {str(d)[:80]!r}")
    return uint(d["lastUpdateId"]), levels(d["bids"]), levels(d["asks"])


def cells(side):
    """A depth event's side (``[[price, quantity], ...]``) checked, each
    level as one ``"price,quantity"`` string."""
    if side.__class__ is not list:
        raise BadValue(f"price levels must be a list: {str(side)[:80]!r}")
    out = []
    for level in side:
        if level.__class__ is not list or len(level) != 2:
            raise BadValue(f"a price level is [price, quantity]: {str(level)[:80]!r}")
        p, q = level
        if not two_nums(p, q):
            num(p), num(q)          # says which is wrong
        out.append(f"{p},{q}")
    return out


# The frames Binance sends most (depth, bookTicker, aggTrade), exactly as it
# writes them, are matched whole, so that their values need not be decoded,
# checked one by one and formatted back: a depth event's levels never become
# lists of strings, ids and times never become numbers and text again. Each
# value matched is one the general path (orjson, then the functions above)
# accepts and writes the same: an id or a time is an integer below 2**63 as
# JSON writes it (no leading zero), a price or a quantity a number as ``num``
# accepts it but never longer (at most 19 digits, a point, 20 digits). A
# frame that is anything else (spaces, escapes, another key order, a field
# more, a longer number) is not matched and takes the general path, which
# says what is wrong. Quantifiers are possessive: what follows each part can
# never be part of it, so the matcher keeps no places to back up to.
_ID = r'(0|[1-9][0-9]{0,17}+)'
_NUMBER = r'[0-9]{1,19}+(?:\.[0-9]{1,20}+)?+'
_TEXT = r'"(' + _NUMBER + r')"'
_FLAG = r'(true|false)'
_SYMBOL = r'"s":"[A-Z0-9_]{1,40}+",'
_LEVEL = r'\["' + _NUMBER + r'","' + _NUMBER + r'"\]'
_SIDE = r'((?:' + _LEVEL + r'(?:,' + _LEVEL + r')*+)?+)'


def _frame_patterns(futures):
    """{kind: pattern} of one market's frames.
    Spot's layouts are one each. Futures' differ between USD-M and COIN-M and
    over time (the pair "ps", a stream type "st", "nq", fields in another
    order): each optional part is matched where Binance has written it."""
    pair = r'(?:"ps":"[A-Z0-9_]{1,40}+",)?' if futures else ''
    end = r'(?:,"st":[0-9]{1,9}+)?\}\}' if futures else r'\}\}'
    opt = (lambda part: r'(?:' + part + r')?') if futures else (lambda part: '')
    bodies = (
        ("depth", r'"e":"depthUpdate","E":' + _ID + r',(?:"T":' + _ID + r',)?' + _SYMBOL + pair + r'"U":' + _ID
         + r',"u":' + _ID + r',(?:"pu":(-1|0|[1-9][0-9]{0,17}+),)?"b":\[' + _SIDE + r'\],"a":\[' + _SIDE + r'\]'
         + opt(r',"ps":"[A-Z0-9_]{1,40}+"')),
        ("bookTicker", r'(?:"u":' + _ID + r',)?(?:"e":"bookTicker",)?(?:"u":' + _ID + r',)?(?:"E":' + _ID + r',"T":'
         + _ID + r',)?' + _SYMBOL + pair + r'"b":' + _TEXT + r',"B":' + _TEXT + r',"a":' + _TEXT + r',"A":' + _TEXT
         + r'(?:,"T":' + _ID + r',"E":' + _ID + r')?'),
        ("aggTrade", r'"e":"aggTrade","E":' + _ID + r',' + (opt(_SYMBOL) if futures else _SYMBOL) + r'"a":' + _ID
         + r',' + opt(_SYMBOL) + r'"p":' + _TEXT + r',"q":' + _TEXT + r','
         + opt(r'"nq":"' + _NUMBER + r'",') + r'"f":' + _ID + r',"l":' + _ID + r',"T":' + _ID + r',"m":' + _FLAG
         + r'(?:,"M":' + _FLAG + r')?'))
    return {kind: re.compile(r'\{"stream":"[a-zA-Z0-9_@]{1,100}+","data":\{' + body + end) for kind, body in bodies}


FRAMES = {"spot": _frame_patterns(False), "usdm": _frame_patterns(True), "coinm": _frame_patterns(True)}
LEVELS_APART = '"],["'       # between two levels of a side as the depth reader hands it on


def frame_reader(market, kind):
    """``read(text, recv_us)`` of one market's frames of ``kind`` as Binance
    writes them (``text``: the frame decoded as latin-1), checked whole:
    ``(d, ready)``, ``d`` the fields the recorder reads (ids and times as
    numbers, a bookTicker's prices and quantities), ``ready`` what the kind's
    function above makes of the event: for aggTrade and bookTicker ``(id,
    line)``; for depth ``(sides, head)`` for ``depth``: each side's levels as
    ``'price,quantity"],["price,quantity'`` ("" for none) and the first
    columns of its rows (``"E,T,U,u,pu,"``). None for a frame not matched
    (the general path reads it). No reader (None) for the other kinds."""
    pattern = FRAMES[market].get(kind)
    if kind == "depth":
        def read(text, recv_us):
            m = pattern.fullmatch(text)
            if m is None:
                return None
            e, t, first, final, pu, bids, asks = m.groups()
            d = {"E": int(e), "U": int(first), "u": int(final)}
            if t is not None:
                d["T"] = int(t)
            if pu is not None:
                d["pu"] = int(pu)
            return d, ((bids[2:-2].replace('","', ","), asks[2:-2].replace('","', ",")),
                       f"{e},{t or ''},{first},{final},{pu or ''},")
    elif kind == "aggTrade":
        flags = _BOOL[market]
        spot = market == "spot"

        def read(text, recv_us):
            m = pattern.fullmatch(text)
            if m is None:
                return None
            e, a, p, q, first, last, t, maker, best = m.groups()
            best = "" if not spot else "False," if best == "false" else "True,"
            ident = int(a)
            return {"a": ident, "T": int(t)}, (ident, f"{a},{p},{q},{first},{last},{t},{flags[maker == 'true']},"
                                                      f"{best}{e},{recv_us},0\n")
    elif kind == "bookTicker":
        def read(text, recv_us):
            m = pattern.fullmatch(text)
            if m is None:
                return None
            u, u2, e, t, b, bq, a, aq, t2, e2 = m.groups()
            if (u is None) == (u2 is None) or (e is not None and e2 is not None):
                return None          # no id, or a field twice: the general path decides as JSON does
            u, e, t = u or u2, e or e2, t or t2
            ident = int(u)
            d = {"u": ident, "b": b, "B": bq, "a": a, "A": aq}
            if t is not None:
                d["T"], d["E"] = int(t), int(e)
            return d, (ident, f"{u},{b},{bq},{a},{aq},{t or ''},{e or ''},{recv_us}\n")
    else:
        return None
    return read


def depth(market, d, recv_us, sides=None, head=None):
    """One row per price level, bids first; an event without levels still
    gets one row, so the update ids stay provably continuous in the file.
    Returns ``(u, text, rows, bids, asks)``: the CSV lines in one string
    and how many, and each side packed for the book (messages.Diff:
    ``"price,quantity,price,quantity"``). ``sides`` and ``head``: as
    the depth frame_reader found them in the frame; else read from ``d`` and checked."""
    if head is None:
        pu = d.get("pu")
        head = f'{uint(d["E"])},{opt_uint(d, "T")},{uint(d["U"])},{uint(d["u"])},{"" if pu is None else sint(pu)},'
    tail = f",{recv_us}\n"
    if sides is None:
        sides = LEVELS_APART.join(cells(d["b"])), LEVELS_APART.join(cells(d["a"]))
    text, rows = "", 0
    for name, side in zip(("bid,", "ask,"), sides):
        if side:
            prefix = head + name
            text += prefix + side.replace(LEVELS_APART, tail + prefix) + tail
            rows += side.count(LEVELS_APART) + 1
    if rows:
        return d["u"], text, rows, sides[0].replace(LEVELS_APART, ","), sides[1].replace(LEVELS_APART, ",")
    return d["u"], f"{head},,{tail}", 1, "", ""


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
