"""What we know about each kind of stream, in one table. Pure.

Read this first to learn the streams. Every other module (the worker, the
writer and its sequencer, the endpoints, the verifier, the loader, the
simulator's audit) asks :data:`KINDS` instead of naming a stream itself.

Names: a subscription (``depth@100ms``, ``kline_1m``) is recorded in a
*file stream* (``depth``, ``kline_1m``), which is of a *kind* (``depth``,
``kline``). Files that are not streams (``depthSnapshot``, ``orderbook``,
``gaps``) are their own kind and have no entry.

Continuity rules, one per kind:

* ``CONSECUTIVE``: ids count up by a fixed step; a jump is a hole.
* ``CHAINED``: each depth event names the one before it (USD-M: ``pu`` is
  the previous event's ``u``; spot: ``U`` is the previous ``u`` + 1).
* ``INCREASING``: ids only grow, with holes in between that mean nothing;
  only a reconnect can lose an event.
* ``PERIODIC``: the exchange pushes the stream on a clock (markPrice: every
  3 s, or every 1 s for ``markPrice@1s``); events carry no update id, so
  the event time ``E`` is the id. E only grows, and a step longer than
  :data:`PERIODIC_HOLE` periods is a hole (continuity.periodic): the verifier
  can find such a hole in the file alone, after a reconnect or anywhere.

Streams without an update id (markPrice, forceOrder) use the event time
``E`` as their id: Binance pushes at most one event per stream per
millisecond (markPrice one per period, forceOrder at most the latest
liquidation per symbol per 1000 ms), so E names an event, and a handover's
overlap or a restart's first events are dropped by it like any duplicate.
forceOrder is ``INCREASING``: it is pushed only when something is
liquidated, so a long pause means nothing and only a reconnect can lose an
event (the first event after it gets the ledger row, as bookTicker's does);
a handover cannot prove an overlap on it (the new socket may see no
liquidation for hours), so it needs none (``overlap=None``, as klines): the
other streams of its connection prove that the old socket has read up to
the new one's start (one TCP stream carries them all in order).

To add a stream: a row here, a parser in ``binance/parse.py``, its columns
in ``csvfiles.SCHEMAS``, and tests (see CONTRIBUTING.md).
"""

from typing import Callable, NamedTuple

from .binance import parse

CONSECUTIVE, CHAINED, INCREASING = "consecutive", "chained", "increasing"
PERIODIC = "periodic"
# A PERIODIC stream's subscriptions -> the period (ms) Binance pushes them at;
# the file stream is the name before "@" (markPrice@1s -> markPrice).
PERIODS_MS = {"markPrice": 3000, "markPrice@1s": 1000}
PERIODIC_HOLE = 1.5      # a step of more than this many periods between two events is a hole
# subscriptions only futures markets have (config.check_streams refuses them on spot)
FUTURES_STREAMS = (*PERIODS_MS, "forceOrder")
INTERVAL = "interval"     # a step: the candle's length in ms, from the stream name
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class Kind(NamedTuple):
    name: str
    id_field: str            # where an event holds its id ("k.t": field t of the object k)
    id_column: str           # the CSV column holding that id
    rule: str                # CONSECUTIVE, CHAINED, INCREASING or PERIODIC (above)
    step: object             # CONSECUTIVE: ids between two events (1 or INTERVAL); else None
    backfill: object         # the REST endpoint that fetches the rows of a hole; None: none can
    usdm_group: str          # the USD-M connection serving it: "public" or "market"
    parse: Callable          # binance/parse.py: (market, event, recv_us) -> (id, line or lines) or None
    overlap: object          # handover: the new socket's first id <= last + overlap; None: no overlap needed
    time_field: str          # the exchange's time of the event: the ledger's times (in the CSV: time_columns[0])
    day_field: str           # the time that dates a row, so names its day file (absent: receive time)
    time_columns: tuple      # CSV columns a loaded file is indexed by, in order of preference
    link_columns: tuple = ()  # further CSV columns the verifier's continuity check reads
    per_level: bool = False  # one row per price level: the rows of an event share its id
    recorded_if: str = ""    # a flag an event needs to be recorded (klines: the candle is closed)
    fields: frozenset = frozenset()   # every field an event may carry; others are counted
    feeds_book: bool = False  # an INCREASING kind whose events also go to the book manager (bookTicker)
    quiet: bool = False      # pushed only when something happens: a silent hour or a day without a file is normal


KINDS = {k.name: k for k in (
    Kind("aggTrade", id_field="a", id_column="agg_trade_id", rule=CONSECUTIVE, step=1, backfill="aggTrades",
         usdm_group="market", parse=parse.agg_trade, overlap=1, time_field="T", day_field="T",
         time_columns=("transact_time",), link_columns=("first_trade_id", "last_trade_id"),
         fields=frozenset({"e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m", "M", "st"})),
    Kind("trade", id_field="t", id_column="id", rule=CONSECUTIVE, step=1, backfill=None,
         usdm_group="market", parse=parse.trade, overlap=1, time_field="T", day_field="T",
         time_columns=("time",),
         fields=frozenset({"e", "E", "s", "t", "p", "q", "T", "m", "M", "b", "a"})),
    Kind("kline", id_field="k.t", id_column="open_time", rule=CONSECUTIVE, step=INTERVAL, backfill="klines",
         usdm_group="market", parse=parse.kline, overlap=None, time_field="k.t", day_field="k.t",
         time_columns=("open_time",), recorded_if="k.x",
         fields=frozenset({"e", "E", "s", "k", "ps", "st"})),
    Kind("depth", id_field="u", id_column="final_update_id", rule=CHAINED, step=None, backfill=None,
         usdm_group="public", parse=parse.depth, overlap=0, time_field="E", day_field="E",
         time_columns=("event_time",), link_columns=("first_update_id", "prev_final_update_id"),
         per_level=True,
         fields=frozenset({"e", "E", "T", "s", "U", "u", "pu", "b", "a", "ps", "st"})),
    Kind("bookTicker", id_field="u", id_column="update_id", rule=INCREASING, step=None, backfill=None,
         usdm_group="public", parse=parse.book_ticker, overlap=0, time_field="E", day_field="E",
         time_columns=("event_time", "transaction_time", "local_time_us"), feeds_book=True,
         fields=frozenset({"e", "E", "T", "s", "u", "b", "B", "a", "A", "ps", "st"})),
    # futures only (config.check_streams); on USD-M's /market root (PROTOCOL.md 4.3)
    Kind("markPrice", id_field="E", id_column="event_time", rule=PERIODIC, step=None, backfill=None,
         usdm_group="market", parse=parse.mark_price, overlap=0, time_field="E", day_field="E",
         time_columns=("event_time",),
         fields=frozenset({"e", "E", "s", "p", "i", "P", "r", "T", "ps"})),
    Kind("forceOrder", id_field="E", id_column="event_time", rule=INCREASING, step=None, backfill=None,
         usdm_group="market", parse=parse.force_order, overlap=None, time_field="E", day_field="E",
         time_columns=("event_time", "trade_time"), quiet=True,
         fields=frozenset({"e", "E", "o", "o.s", "o.S", "o.o", "o.f", "o.q", "o.p", "o.ap", "o.X", "o.l", "o.z",
                           "o.T", "o.ps"})),
)}


def file_stream(stream):
    """The stream part of a file name: every speed of a stream is recorded
    under its name (``depth@100ms`` as ``depth``, ``markPrice@1s`` as ``markPrice``)."""
    return stream.partition("@")[0]


def period_ms(stream):
    """The period (ms) of a PERIODIC subscription (``markPrice@1s`` -> 1000), else None."""
    return PERIODS_MS.get(stream)


def kind_of(stream):
    """``kline_1m`` -> ``kline``, ``depth@100ms`` -> ``depth``; other names are their own kind."""
    return "kline" if stream.startswith("kline_") else file_stream(stream)


def lookup(stream):
    """The :class:`Kind` of a stream or file stream, or None for files that are not streams."""
    return KINDS.get(kind_of(stream))


def periods_of(file):
    """The periods (ms) of the subscriptions recorded in a PERIODIC file stream (markPrice: 1000, 3000)."""
    return sorted(p for name, p in PERIODS_MS.items() if file_stream(name) == file)


def id_step(stream):
    """Distance between consecutive ids, or None when ids are not consecutive
    (kline_1M too: months differ in length)."""
    k = lookup(stream)
    if k is None or k.step != INTERVAL:
        return None if k is None else k.step
    interval = stream.partition("_")[2]
    unit = _UNIT_MS.get(interval[-1:])
    return int(interval[:-1]) * unit if unit and interval[:-1].isdigit() else None


def backfillable(stream):
    k = lookup(stream)
    return k is not None and k.backfill is not None


def usdm_group(stream):
    return lookup(stream).usdm_group


def field(d, path):
    """The value at ``path`` of an event: ``field(d, "k.t") == d["k"]["t"]``."""
    if "." not in path:
        return d[path]
    for key in path.split("."):
        d = d[key]
    return d


def event_id(k, d):
    return field(d, k.id_field)


def recorded(k, d):
    """Does this event become a row (klines: only closed candles do)?"""
    return not k.recorded_if or field(d, k.recorded_if) is True


def event_time(k, d):
    """The exchange's time of an event in ms, or "" when it has none (spot bookTicker)."""
    return d.get(k.time_field, "") if "." not in k.time_field else field(d, k.time_field)


def ledger_time(k, d, recv_us):
    """An event's time in the gap ledger (ms): the exchange's time, or the
    receive time where the event has none (spot bookTicker), like the index
    ``analysis.load`` gives the stream's rows."""
    t = event_time(k, d)
    return recv_us // 1000 if t == "" or t is None else t


def day_ms(k, d, recv_us):
    """The time that dates an event's rows (ms); the receive time when the event has none."""
    return day_getter(k, int)(d, recv_us)


def day_getter(k, day_of):
    """``f(event, recv_us)`` -> ``day_of`` (ms -> a UTC day) of the time that
    dates the event's rows, made once per stream for the hot path."""
    name = k.day_field
    if "." in name:
        return lambda d, recv_us: day_of(field(d, name))

    def day(d, recv_us):
        t = d.get(name)
        return day_of(recv_us // 1000 if t is None else t)
    return day


def unexpected_fields(k, d):
    """Fields of ``d`` that ``k.fields`` does not name; a dotted entry
    (``o.S``) names a field of an object in the event, whose other fields
    are unexpected too (``o.zz``)."""
    known = k.fields
    out = [f for f in d if f not in known]
    for head in {f.partition(".")[0] for f in known if "." in f}:
        inner = d.get(head)
        if isinstance(inner, dict):
            out += [f"{head}.{f}" for f in inner if f"{head}.{f}" not in known]
    return out
