"""The REST series: what each is, its file, its rows, its schedule. Pure.

USD-M only. Seven series are polled over REST (the endpoints, their weights
and request pools: binance/endpoints.py; the worker's thread that polls
them: seriesjobs.py):

* ``openInterest``: a *sample* of the open interest now, taken every
  ``period``. The exchange keeps no history of it, so a poll missed (the
  recorder down) cannot be fetched again: the file simply has no sample
  there, and each row says when it was asked for (``request_time_us``), when
  the answer came (``local_time_us``) and the exchange's time (``time``). No
  ledger rows: its spacing is whatever the polls were.
* ``openInterestHist``, ``topLongShortAccountRatio``,
  ``topLongShortPositionRatio``, ``globalLongShortAccountRatio``,
  ``takerlongshortRatio``: one row per ``period`` (file stream
  ``<series>_<period>``, so two periods never share a file), of which the
  exchange keeps the latest 30 days.
* ``fundingRate``: one row per funding (every 8 hours), history since listing.

A series with history is *gapless*: each poll asks for what is new
(``startTime`` = the last time recorded + 1), paging, and after a restart
the last time comes from the files (:func:`last_recorded`), so the missed
rows are fetched. A time the exchange can no longer serve (older than its
history) is a gap-ledger row, one per hole.

The schedule runs on the local monotonic clock and the exchange's own
times only (never on the two clocks agreeing): a series is asked again
one ``period`` after its newest row arrived, then every ``poll_interval``
until the next row is there.
"""

import logging
from typing import NamedTuple

from . import compression, csvfiles
from .binance import parse
from .binance.endpoints import FUNDING_INTERVAL_MS, REQUEST_POOLS, SERIES_ENDPOINTS, SERIES_PERIODS

log = logging.getLogger(__name__)

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
FIRST_ROWS = 30          # a series with no file starts with the exchange's latest rows (this many)


class Series(NamedTuple):
    name: str
    time_field: str          # the exchange's time of a row (its id, the CSV's first column)
    fields: tuple            # the payload's values, in CSV order after the time
    periodic: bool           # asked with ``period`` (and its file named <name>_<period>)
    history: bool            # rows can be asked for again by startTime (False: a sample)
    optional: frozenset = frozenset()    # fields an answer may leave out (empty cell)


SERIES = {s.name: s for s in (
    Series("openInterest", "time", ("openInterest",), periodic=False, history=False),
    Series("openInterestHist", "timestamp", ("sumOpenInterest", "sumOpenInterestValue", "CMCCirculatingSupply"),
           periodic=True, history=True, optional=frozenset({"CMCCirculatingSupply"})),
    Series("topLongShortAccountRatio", "timestamp", ("longShortRatio", "longAccount", "shortAccount"),
           periodic=True, history=True),
    Series("topLongShortPositionRatio", "timestamp", ("longShortRatio", "longAccount", "shortAccount"),
           periodic=True, history=True),
    Series("globalLongShortAccountRatio", "timestamp", ("longShortRatio", "longAccount", "shortAccount"),
           periodic=True, history=True),
    Series("takerlongshortRatio", "timestamp", ("buySellRatio", "buyVol", "sellVol"), periodic=True, history=True),
    Series("fundingRate", "fundingTime", ("fundingRate", "markPrice"), periodic=False, history=True,
           optional=frozenset({"markPrice"})),
)}
DEFAULT_PERIOD = "5m"


def period_ms(period):
    return int(period[:-1]) * _UNIT_MS[period[-1]]


def parse_setting(entries, default_period):
    """``["openInterestHist", "fundingRate", "takerlongshortRatio:1h"]`` ->
    ``[(name, period)]``; ValueError with a one-line reason."""
    out = []
    for entry in entries:
        name, sep, period = entry.partition(":")
        if name not in SERIES:
            raise ValueError(f"unknown series {name!r}; known: {', '.join(SERIES)}")
        if sep and period not in SERIES_PERIODS:
            raise ValueError(f"series {name!r} takes a period of {', '.join(SERIES_PERIODS)}, not {period!r}")
        if sep and name == "fundingRate":
            raise ValueError("series 'fundingRate' has no period (funding is every 8 hours)")
        if any(n == name for n, _ in out):
            raise ValueError(f"series {name!r} is listed twice")
        out.append((name, period or default_period))
    return out


def file_stream(name, period):
    """The file stream of a series: ``openInterestHist_5m``, ``fundingRate``."""
    return f"{name}_{period}" if SERIES[name].periodic else name


def step_ms(name, period):
    """Time between two rows of a series with history; None for a sample."""
    if not SERIES[name].history:
        return None
    return FUNDING_INTERVAL_MS if name == "fundingRate" else period_ms(period)


def poll_every_ms(name, period):
    """How often a series gets a new row (the sample: how often it is taken)."""
    return step_ms(name, period) or period_ms(period)


def row(series, obj, recv_us):
    """``(time, CSV line)`` of one object of an answer; parse.MALFORMED when it
    is not the documented shape. Values stay the exact strings sent."""
    if obj.__class__ is not dict:
        raise parse.BadValue(f"expected an object, not {str(obj)[:60]!r}")
    t = obj.get(series.time_field)
    if t.__class__ is not int or t < 0:
        raise parse.BadValue(f"{series.time_field} is not a time in ms: {t!r}")
    cells = []
    for f in series.fields:
        value = obj.get(f)
        if value is None and f in series.optional:
            value = ""
        if value.__class__ is not str or "," in value or "\n" in value:
            raise parse.BadValue(f"{f} is not a decimal string: {value!r}")
        cells.append(value)
    return t, f"{t},{','.join(cells)},{recv_us}\n"


def sample_row(obj, request_us, recv_us):
    """``(time, line)`` of an openInterest answer (a sample)."""
    t, line = row(SERIES["openInterest"], obj, recv_us)
    head, _, tail = line.rpartition(",")
    return t, f"{head},{request_us},{tail}"


def spacing_ok(step, earlier, later):
    """Do two rows follow each other with no row missing between? Funding
    times may carry a few ms past the hour: 1% of a step is allowed."""
    return later - earlier <= step + step // 100


def last_recorded(data_dir, market, symbol, stream):
    """The exchange time of the last complete row of a series' files
    (newest day first, compressed days read through), or None."""
    days = sorted((day, path) for sym, st, day, path in csvfiles.day_files(data_dir, market, [symbol])
                  if st == stream)
    ncols = len(csvfiles.columns(market, stream))
    seen = set()
    for day, path in reversed(days):
        if day in seen:
            continue
        seen.add(day)
        plain = csvfiles.path(data_dir, market, symbol, stream, day)
        try:
            with compression.open_day(plain) as f:
                data = f.read()
        except OSError as exc:
            log.warning("%s: cannot read it for the last recorded time (%s)", plain, exc)
            continue
        found = last_time(data, ncols)
        if found is not None:
            return found
    return None


def last_time(data, ncols):
    """The first cell of the last complete row (``ncols`` cells, a newline at
    its end) in a day's bytes; None when there is none."""
    for line in reversed(data.split(b"\n")[:-1]):       # after the last newline: unfinished
        cells = line.split(b",")
        if len(cells) == ncols and cells[0].isdigit():
            return int(cells[0])
    return None


class State:
    """One series of one symbol as a worker polls it (times in seconds of the
    local monotonic clock; ``last``: the exchange time of the last row kept)."""

    __slots__ = ("symbol", "name", "period", "stream", "spec", "endpoint", "step", "every", "last", "due",
                 "rows", "gaps", "failures", "day", "empty_before", "locked")

    def __init__(self, symbol, name, period, last=None, now=0.0):
        self.symbol, self.name, self.period = symbol, name, period
        self.stream = file_stream(name, period)
        self.spec, self.endpoint = SERIES[name], SERIES_ENDPOINTS[name]
        self.step = step_ms(name, period)
        self.every = poll_every_ms(name, period) / 1000.0
        self.last = last
        self.due = now                  # asked at once at start: what was missed comes first
        self.rows = self.gaps = self.failures = 0
        self.day = csvfiles.DayOf()
        self.empty_before = False       # the last answer had no new row
        self.locked = False             # a new row was seen within poll_interval of its arrival

    def polled(self, now, new_rows, poll_interval, failed=False):
        """Schedule the next poll. A failed answer is asked again in
        ``poll_interval``; a sample is taken every period. A series with
        history is asked one period after its newest row came, and then every
        ``poll_interval`` until the next one is there. While it is not known
        how soon after its arrival a row was seen (it was there at the first
        ask), the next ask comes ``poll_interval`` earlier, until one finds
        nothing new: from then on a row is seen within ``poll_interval`` of
        its arrival, at about one request per period."""
        if failed:
            self.due = now + poll_interval
        elif not self.spec.history:
            self.due = now + self.every
        elif new_rows:
            self.locked = self.locked or self.empty_before
            self.empty_before = False
            self.due = now + (self.every if self.locked else max(self.every - poll_interval, poll_interval))
        else:
            self.empty_before = True
            self.due = now + poll_interval


def hourly_cost(plan, symbols):
    """The steady REST cost per hour of polling ``plan`` (``[(name, period)]``)
    for ``symbols`` symbols: ``{"weight": ..., pool: requests, ...}`` at one
    request per row (per sample); a row that comes late costs one more
    request per ``poll_interval`` it is waited for."""
    cost = {"weight": 0.0, **dict.fromkeys(REQUEST_POOLS, 0.0)}
    for name, period in plan:
        per_hour = 3_600_000 / poll_every_ms(name, period) * symbols
        endpoint = SERIES_ENDPOINTS[name]
        cost["weight"] += endpoint.weight * per_hour
        if endpoint.pool:
            cost[endpoint.pool] += per_hour
    return cost
