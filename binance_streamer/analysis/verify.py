"""``--verify``: is every recorded file complete, or is every hole explained?

Per symbol, stream and day: rows, time covered, id continuity (aggTrade ``a``
and ``f == previous l + 1``, trade ``t``, kline open times, depth ``U``/``u``
or ``pu``, markPrice event times a period apart; bookTicker and forceOrder
ids only repeat-free and growing), every discontinuity matched to a gap-ledger row, every
backfilled row inside a hole the ledger names (none filled silently), duplicates, the REST
series' spacing (seriescheck.py), and
the book rebuilt from snapshots plus diffs compared with the recorded
orderbook rows and bookTickers. A problem no ledger row explains fails it.
"""

import collections
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import csvfiles
from ..binance.parse import MALFORMED
from ..continuity import hole_after
from ..markets import futures
from ..streams import CHAINED, INCREASING, KINDS, PERIODIC, file_stream, id_step, lookup, periods_of
from .load import LoadError, file_stem, load_file, open_source
from . import seriescheck
from .replay import read_snapshots, walk

CONTINUOUS = tuple(name for name, k in KINDS.items() if k.rule != INCREASING)
SHOWN = 5                 # problems of one kind listed one by one
# what each check reads (big depth files are never read whole into memory)
_COLUMNS = {name: [k.id_column, *k.link_columns] + (["backfilled"] if k.backfill else []) for name, k in KINDS.items()}


@dataclass
class FileReport:
    symbol: str
    stream: str
    day: str
    rows: int = 0
    first: pd.Timestamp = None
    last: pd.Timestamp = None
    first_id: int = None
    last_id: int = None
    breaks: int = 0           # discontinuities found
    explained: int = 0        # of those, matched to a ledger row
    checked: int = 0          # book rows / tickers compared (orderbook, bookTicker)


@dataclass
class Problem:
    symbol: str
    stream: str
    day: str
    what: str

    def __str__(self):
        return f"{self.symbol} {self.stream} {self.day}: {self.what}"


@dataclass
class Report:
    files: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    unchecked_books: int = 0
    tickers_checked: int = 0

    @property
    def ok(self):
        return not self.problems


def names_hole(low, first, before, after):
    """Does a ledger row of ids ``low``, ``first`` (``last_good_id``,
    ``first_id_after``) name the break between the rows of ids ``before`` and ``after``?"""
    return low <= before and first >= after


class Ledger:
    """Gap-ledger rows of one symbol, by stream."""

    def __init__(self, frame):
        self.rows = {}          # stream -> [(last good id, first id after)] of holes still missing
        self.holes = {}         # stream -> the same of every hole (filled ones too)
        self.not_recorded = set()   # streams the recorder chose not to write for a while (the disk floor)
        for stream, last, first, action in zip(frame["stream"], frame["last_good_id"], frame["first_id_after"],
                                               frame["action"]):
            if action == "not recorded":
                self.not_recorded.add(str(stream))
            if first is pd.NA:
                continue
            low = -np.inf if last is pd.NA else int(last)
            self.holes.setdefault(str(stream), []).append((low, int(first)))
            if action != "backfilled":      # a filled hole explains nothing that is still missing
                self.rows.setdefault(str(stream), []).append((low, int(first)))

    def explains(self, stream, before, after):
        """Is the hole between ids ``before`` and ``after`` in the ledger?"""
        return any(names_hole(low, first, before, after) for low, first in self.rows.get(stream, ()))

    def fills(self, stream, lo, hi):
        """Do backfilled ids ``lo..hi`` lie in a hole the ledger names?"""
        return any(low < lo and hi < first for low, first in self.holes.get(stream, ()))


def _parse(name):
    """(symbol, stream, day) of a recorded file, compressed or not."""
    stem = file_stem(name)
    return csvfiles.parse_name(stem + ".csv") if stem else None


def _files(data_dir, market, symbol):
    """{stream: {day: path}} of one symbol's recorded files."""
    out = {}
    folder = os.path.join(data_dir, market, symbol)
    for name in sorted(os.listdir(folder)):
        parsed = _parse(name)
        if parsed and parsed[0] == symbol:
            days = out.setdefault(parsed[1], {})
            if parsed[2] not in days or csvfiles.codec_of(name):    # a compressed day over its plain name
                days[parsed[2]] = os.path.join(folder, name)
    return out


def _read_csv(path, **kw):
    """pandas.read_csv of a day file, compressed or not (late rows beside it included)."""
    with open_source(path) as f:
        return pd.read_csv(f, **kw)


def symbols_in(data_dir, market):
    folder = os.path.join(data_dir, market)
    try:
        return sorted(s for s in os.listdir(folder) if os.path.isdir(os.path.join(folder, s)))
    except OSError:
        return []


def expected_streams(streams, orderbook):
    """File streams a recording with these settings writes every day."""
    out = {file_stream(s) for s in streams}
    if orderbook and "depth" in out:
        out |= {"depthSnapshot", "orderbook"}
    return out


def verify(data_dir, market="spot", symbols=None, date=None, expected=None, progress=None):
    """Check the recording; returns a :class:`Report`.

    ``expected``: file streams each recorded day should have (from the
    config); ``progress(done, total, label)`` is called once per file."""
    report = Report()
    symbols = symbols or symbols_in(data_dir, market)
    plan = []
    for symbol in symbols:
        if not os.path.isdir(os.path.join(data_dir, market, symbol)):
            report.problems.append(Problem(symbol, "-", date or "-", f"no files in {data_dir}/{market}/{symbol}"))
            continue
        files = _files(data_dir, market, symbol)
        days = sorted({d for by_day in files.values() for d in by_day if date is None or d == date})
        if date is not None and not days:
            report.problems.append(Problem(symbol, "-", date, "nothing recorded that day"))
        plan.append((symbol, files, days))
    total = sum(len(days) * max(1, len(files)) for _, files, days in plan)
    done = 0

    def tick(label):
        nonlocal done
        done += 1
        if progress:
            progress(done, total, label)

    damaged = set()        # symbols with a file that is not what it should be: no book rebuild
    for symbol, files, days in plan:
        try:
            ledger = Ledger(_load_ledger(files.get("gaps", {}), days))
        except (LoadError, OSError, ValueError, KeyError) as exc:
            report.problems.append(Problem(symbol, "gaps", "-", f"the gap ledger cannot be read: {exc}"))
            ledger = Ledger(pd.DataFrame({"stream": [], "last_good_id": [], "first_id_after": [], "action": []}))
        for day in days:
            _missing_files(report, symbol, day, files, expected, ledger)
        for stream in sorted(files):
            kind = csvfiles.stream_kind(stream)
            previous = _previous_last_id(files[stream], days[0], market, stream) if days else None
            for day in days:
                path = files[stream].get(day)
                if path is None:
                    continue
                tick(f"{symbol} {stream} {day}")
                try:
                    df = load_file(path, market, stream, exact=True, columns=_wanted(path, kind))
                    bad = _bad_values(path)
                except (LoadError, OSError, ValueError) as exc:
                    report.problems.append(Problem(symbol, stream, day, f"cannot be read: {_located(path, exc)}"))
                    damaged.add(symbol)
                    continue
                if bad:
                    damaged.add(symbol)
                    _some(report, symbol, stream, [(day, b) for b in bad], "values that are not numbers")
                fr = FileReport(symbol, stream, day, rows=len(df))
                if len(df):
                    fr.first, fr.last = df.index.min(), df.index.max()
                report.files.append(fr)
                if kind in CONTINUOUS:
                    _continuity(report, fr, df, market, stream, ledger, previous)
                    previous = fr.last_id if fr.last_id is not None else previous
                elif kind in KINDS:
                    _no_repeats(report, fr, df[KINDS[kind].id_column])
                elif csvfiles.series_kind(stream):
                    report.problems += [Problem(symbol, stream, day, what)
                                        for what in seriescheck.check(fr, df, stream, ledger, previous)]
                    previous = fr.last_id if fr.last_id is not None else previous
        if "depth" in files and "depthSnapshot" in files:
            if symbol in damaged:
                report.problems.append(Problem(symbol, "orderbook", "-", "book not rebuilt: its files are damaged "
                                                                          "(see above)"))
                continue
            try:
                _books(report, symbol, market, files, days)
            except MALFORMED + (OSError,) as exc:
                report.problems.append(Problem(symbol, "orderbook", "-", f"book rebuild stopped: "
                                                                          f"{type(exc).__name__}: {exc}"))
    return report


def _wanted(path, kind):
    """The columns the checks read; ``backfilled`` only where the file has it."""
    wanted = _COLUMNS.get(kind, [])
    if "backfilled" in wanted and "backfilled" not in _read_csv(path, nrows=0).columns:
        wanted = [c for c in wanted if c != "backfilled"]
    return wanted


def _bad_values(path, chunk=1_000_000):
    """``line N, column C: 'value'`` of price and quantity cells that are not
    decimal numbers as Binance writes them (the first few)."""
    header = _read_csv(path, nrows=0).columns
    wanted = [c for c in header if csvfiles.is_decimal_column(c)]
    if not wanted:
        return []
    out = []
    with open_source(path) as source:
        for part in pd.read_csv(source, usecols=wanted, dtype=str, keep_default_na=False, chunksize=chunk):
            for column in wanted:
                cells = part[column]
                sign = "-?" if column in csvfiles.SIGNED_DECIMAL else ""
                bad = cells[(cells != "") & ~cells.str.fullmatch(sign + r"\d{1,40}(\.\d{1,40})?")]
                out += [f"line {i + 2}, column {column}: {v[:40]!r}" for i, v in bad.head(SHOWN).items()]
            if len(out) >= SHOWN:
                break
    return out[:SHOWN]


def _located(path, exc):
    """What failed, with the line and column of the first bad cell when it can be found."""
    text = str(exc)
    for line_no, row in enumerate(_rows(path), start=1):
        if line_no == 1:
            header = row
            continue
        if len(row) != len(header):
            return f"line {line_no} has {len(row)} columns, the header {len(header)}"
        for name, value in zip(header, row):
            if value and csvfiles.pandas_dtype(name) == "Int64" and not value.lstrip("-").isdigit():
                return f"line {line_no}, column {name}: {value[:40]!r} is not a whole number"
    return text


def _rows(path):
    import csv
    import io
    try:
        with io.TextIOWrapper(open_source(path), newline="", errors="replace") as f:
            yield from csv.reader(f)
    except (OSError, csv.Error):
        return


def _load_ledger(by_day, days):
    wanted = set(days)
    for day in days:          # a hole near midnight may be written the next day
        wanted.add((pd.Timestamp(day) + pd.Timedelta(days=1)).strftime("%Y-%m-%d"))
        wanted.add((pd.Timestamp(day) - pd.Timedelta(days=1)).strftime("%Y-%m-%d"))
    frames = [load_file(p, "spot", "gaps", exact=True) for d, p in sorted(by_day.items()) if d in wanted]
    if not frames:
        return pd.DataFrame({"stream": [], "last_good_id": [], "first_id_after": [], "action": []})
    return pd.concat(frames)


def _missing_files(report, symbol, day, files, expected, ledger):
    for stream in missing_streams(files, day, expected, ledger.not_recorded):
        report.problems.append(Problem(symbol, stream, day, "file missing (other streams were recorded that day)"))


def missing_streams(files, day, expected=None, not_recorded=()):
    """The file streams a day of one symbol (``files``: {stream: {day:
    path}}) should have and lacks: the ``expected`` ones and every one
    recorded some other day, unless the ledger says it was ``not_recorded``;
    none on a day with only REST series files."""
    present = {s for s, by_day in files.items() if day in by_day}
    series = {s for s in files if csvfiles.series_kind(s)}     # dated by the exchange: their history reaches
    if not present - series:                                     # back before the recording, their last row lags it
        return []
    wanted = (set(expected or ()) | {s for s in files if s not in ("gaps",) and not s.startswith("kline_")}) - series
    out = []
    for stream in sorted(wanted - present - set(not_recorded)):
        if stream.startswith("kline_") and not _spans_a_candle(files, day, stream):
            continue
        if lookup(stream) is not None and lookup(stream).quiet:      # forceOrder: a day without liquidation
            continue
        out.append(stream)
    return out


def _spans_a_candle(files, day, stream):
    """Did the day's recording last long enough to close two candles?"""
    step = id_step(stream)
    for s in (s for s in KINDS if s != csvfiles.stream_kind(stream)):      # every other stream's file
        path = files.get(s, {}).get(day)
        if path:
            local = _read_csv(path, usecols=["local_time_us"])["local_time_us"]
            if len(local):
                return step is None or (local.iloc[-1] - local.iloc[0]) / 1000 > 2 * step
    return True


def _previous_last_id(by_day, day, market, stream):
    """The last id of the stream's file before ``day`` (outside the days
    verified), to check the first day's boundary."""
    earlier = [d for d in by_day if d < day]
    kind = lookup(stream)
    column = kind.id_column if kind is not None else seriescheck.time_column(stream)
    if not earlier or column is None:      # orderbook, snapshots: no exchange ids
        return None
    ids = _read_csv(by_day[max(earlier)], usecols=[column])[column]
    return int(ids.max()) if len(ids) else None


def _continuity(report, fr, df, market, stream, ledger, previous):
    kind = lookup(stream)
    if kind.rule == CHAINED:
        events = df.drop_duplicates(["first_update_id", "final_update_id"])
        first = events["first_update_id"].astype("int64").to_numpy()
        final = events["final_update_id"].astype("int64").to_numpy()
        pu = events["prev_final_update_id"]
        if len(final) and np.any(np.diff(final) <= 0):
            report.problems.append(Problem(fr.symbol, stream, fr.day, "depth events out of order or repeated"))
        if futures(market):
            link = pu.astype("Int64").to_numpy(dtype="float64", na_value=np.nan)
            broken = np.nonzero(link[1:] != final[:-1])[0]
        else:
            broken = np.nonzero(first[1:] != final[:-1] + 1)[0]
        holes = [(int(final[i]), int(first[i + 1])) for i in broken]
        if previous is not None and len(first):
            linked = (link[0] == previous) if futures(market) else first[0] == previous + 1
            if not linked and first[0] > previous:
                holes.insert(0, (previous, int(first[0])))
        ids = final
    elif kind.rule == PERIODIC:
        ids, holes = _periodic_holes(report, fr, df[kind.id_column], previous)
    else:
        column = kind.id_column
        ids = np.sort(df[column].astype("int64").to_numpy())
        step = id_step(stream) or 1
        repeats = int(np.sum(np.diff(ids) == 0))
        if repeats:
            report.problems.append(Problem(fr.symbol, stream, fr.day, f"{repeats} duplicate ids"))
            ids = np.unique(ids)
        jumps = np.nonzero(np.diff(ids) != step)[0]
        holes = [(int(ids[i]), int(ids[i + 1])) for i in jumps]
        if previous is not None and len(ids) and ids[0] > previous + step:
            holes.insert(0, (previous, int(ids[0])))
        if kind.name == "aggTrade":       # its rows also cover consecutive trade ids
            _agg_trade_ids(report, fr, df)
        if "backfilled" in df.columns:
            _backfills(report, fr, df, ledger, step)
    if len(ids):
        fr.first_id, fr.last_id = int(ids[0]), int(ids[-1])
    fr.breaks = len(holes)
    for before, after in holes:
        if ledger.explains(stream, before, after):
            fr.explained += 1
        else:
            report.problems.append(Problem(fr.symbol, stream, fr.day,
                                           f"hole between ids {before} and {after} not in the gap ledger"))


def _periodic_holes(report, fr, column, previous):
    """A PERIODIC stream's ids (event times) and holes: steps longer than
    continuity.hole_after its period. The file does not say which
    subscription filled it (markPrice every 3 s or @1s): the period is the
    one of its subscriptions nearest the median step."""
    ids = np.sort(column.astype("int64").to_numpy())
    repeats = int(np.sum(np.diff(ids) == 0))
    if repeats:
        report.problems.append(Problem(fr.symbol, fr.stream, fr.day, f"{repeats} duplicate event times"))
        ids = np.unique(ids)
    periods = periods_of(fr.stream)
    period = max(periods) if len(ids) < 2 else min(periods, key=lambda p: abs(p - np.median(np.diff(ids))))
    limit = hole_after(period)
    holes = [(int(ids[i]), int(ids[i + 1])) for i in np.nonzero(np.diff(ids) > limit)[0]]
    if previous is not None and len(ids) and ids[0] - previous > limit:
        holes.insert(0, (previous, int(ids[0])))
    return ids, holes


def _backfills(report, fr, df, ledger, step):
    """Backfilled rows fill a hole the ledger names: none was filled silently."""
    column = lookup(fr.stream).id_column
    ids = np.unique(df.loc[(df["backfilled"] == 1).fillna(False).to_numpy(), column].astype("int64").to_numpy())
    if not len(ids):
        return
    starts = np.concatenate(([0], np.nonzero(np.diff(ids) != step)[0] + 1))
    ends = np.concatenate((starts[1:] - 1, [len(ids) - 1]))
    silent = [(fr.day, f"backfilled rows {ids[a]}..{ids[b]} ({b - a + 1}) are in no hole of the gap ledger")
              for a, b in zip(starts, ends) if not ledger.fills(fr.stream, int(ids[a]), int(ids[b]))]
    _some(report, fr.symbol, fr.stream, silent, "runs of backfilled rows not in the ledger")


def _some(report, symbol, stream, found, more):
    """The first few ``(day, what)`` problems of a kind, then how many more there are."""
    report.problems += [Problem(symbol, stream, day, what) for day, what in found[:SHOWN]]
    if len(found) > SHOWN:
        report.problems.append(Problem(symbol, stream, found[SHOWN][0], f"{len(found) - SHOWN} more {more}"))


def _agg_trade_ids(report, fr, df):
    """Consecutive aggTrades must cover consecutive trade ids (f == previous l + 1)."""
    rows = df.sort_values("agg_trade_id")
    a = rows["agg_trade_id"].astype("int64").to_numpy()
    f = rows["first_trade_id"].astype("int64").to_numpy()
    last = rows["last_trade_id"].astype("int64").to_numpy()
    adjacent = np.diff(a) == 1
    bad = np.nonzero(adjacent & (f[1:] != last[:-1] + 1))[0]
    _some(report, fr.symbol, fr.stream,
          [(fr.day, f"aggTrade {a[i + 1]} starts at trade {f[i + 1]}, but aggTrade {a[i]} ended at trade {last[i]}")
           for i in bad], "trade-id breaks")


def _no_repeats(report, fr, ids):
    """INCREASING streams: no id twice, and ids in file order (the writer
    keeps only ids beyond the last it wrote)."""
    u = ids.astype("int64").to_numpy()
    if len(u):
        fr.first_id, fr.last_id = int(u.min()), int(u.max())
    repeats = len(u) - len(np.unique(u))
    if repeats:
        report.problems.append(Problem(fr.symbol, fr.stream, fr.day, f"{repeats} repeated {ids.name} values"))
    backwards = int(np.sum(np.diff(u) < 0))
    if backwards:
        report.problems.append(Problem(fr.symbol, fr.stream, fr.day, f"{backwards} rows out of {ids.name} order"))


def _books(report, symbol, market, files, days):
    """Replay the diffs; compare with the orderbook rows and bookTickers at the same ids."""
    paths = lambda s: [files[s][d] for d in days if d in files.get(s, {})]    # noqa: E731
    expected_rows, levels = _orderbook_rows(paths("orderbook"))
    tickers = {}
    for path in paths("bookTicker"):
        t = _read_csv(path, usecols=[0, 1, 2, 3, 4], dtype=str, keep_default_na=False)
        tickers.update(zip(t["update_id"].astype("int64"), zip(t["best_bid_price"], t["best_bid_qty"],
                                                               t["best_ask_price"], t["best_ask_qty"])))
    checked = collections.Counter()          # orderbook rows compared, by day
    rows_differ, tickers_differ = [], []
    for r, (_, _, final, *_), applied in walk(market, paths("depth"), read_snapshots(paths("depthSnapshot"))):
        if not applied:
            continue
        row = expected_rows.get(final)
        if row is not None:
            checked[row[0]] += 1
            bids, asks = r.top(levels)
            if _padded(bids, levels) + _padded(asks, levels) != row[1]:
                rows_differ.append((row[0], f"book at update id {final} differs from the recorded row"))
        ticker = tickers.get(final)
        if ticker is not None:
            report.tickers_checked += 1
            bids, asks = r.top(1)
            best = (bids or [("", "")])[0] + (asks or [("", "")])[0]
            if _num(best) != _num(ticker):
                tickers_differ.append(("-", f"bookTicker {final} differs from the rebuilt book"))
    _some(report, symbol, "orderbook", rows_differ, "orderbook rows differ from the rebuilt book")
    _some(report, symbol, "bookTicker", tickers_differ, "bookTickers differ from the rebuilt book")
    report.unchecked_books += len(expected_rows) - sum(checked.values())
    for fr in report.files:
        if fr.symbol == symbol and fr.stream == "orderbook":
            fr.checked = checked[fr.day]


def _num(levels):
    """Compare price/qty strings as numbers ('0.10' == '0.1000')."""
    return tuple(float(v) if v else None for v in levels)


def _padded(levels, n):
    flat = [v for level in levels for v in level]
    return flat + [""] * (2 * n - len(flat))


def _orderbook_rows(paths):
    """{update_id: (day, [bid_price_1, bid_qty_1, ..., ask_qty_n])} of in-sync rows."""
    rows, levels = {}, 0
    for path in paths:
        df = _read_csv(path, dtype=str, keep_default_na=False)
        levels = (len(df.columns) - 3) // 4
        day = _parse(os.path.basename(path))[2]
        values = df.to_numpy()
        for r in values[df["in_sync"].to_numpy() == "true"]:
            rows[int(r[1])] = (day, list(r[3:]))
    return rows, levels


def format_report(report, data_dir):
    w = max([15] + [len(fr.stream) + 2 for fr in report.files])    # USD-M's REST series are up to 30 characters
    out = [f"{'symbol':<12}{'stream':<{w}}{'day':<12}{'rows':>10}  {'from':<9}{'to':<9}"
           f"{'first id':>14}{'last id':>14}  continuity"]
    for fr in report.files:
        span = (fr.first.strftime("%H:%M:%S"), fr.last.strftime("%H:%M:%S")) if fr.first is not None else ("-", "-")
        if fr.stream == "orderbook":
            state = f"{fr.checked} rows match the rebuilt book"
        elif fr.stream in ("depthSnapshot", "gaps"):
            state = ""
        elif csvfiles.stream_kind(fr.stream) in CONTINUOUS:
            state = "unbroken" if not fr.breaks else f"{fr.breaks} breaks, {fr.explained} in the ledger"
        else:
            state = "no repeats"
        out.append(f"{fr.symbol:<12}{fr.stream:<{w}}{fr.day:<12}{fr.rows:>10}  {span[0]:<9}{span[1]:<9}"
                   f"{_id(fr.first_id):>14}{_id(fr.last_id):>14}  {state}")
    if report.tickers_checked:
        out.append(f"{report.tickers_checked} bookTickers compared with the rebuilt book at the same update id")
    if report.unchecked_books:
        out.append(f"{report.unchecked_books} orderbook rows could not be checked (no in-sync rebuilt book there)")
    if report.problems:
        out.append("")
        out.append(f"{len(report.problems)} unexplained problem(s):")
        out += [f"  {p}" for p in report.problems]
    else:
        out.append("")
        out.append(f"ok: {len(report.files)} files in {data_dir}, every break explained by the gap ledger")
    return "\n".join(out)


def _id(value):
    return "-" if value is None else str(value)


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.on = stream.isatty()

    def __call__(self, done, total, label):
        if not self.on:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:40]:<40}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
