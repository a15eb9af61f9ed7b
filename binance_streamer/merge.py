"""``--merge DIR_A DIR_B --out DIR``: two recordings of the same symbols,
made by two recorders anywhere, into one with the union of their rows and a
gap ledger of only the holes both have. README "Merging two recordings" has
the rules; in short:

* streams with exchange ids (``streams.KINDS``): per symbol, stream and UTC
  day, every event once, in id order (mergerows.py); an event both have is
  A's row, unless only B received it live (A's was backfilled over REST);
  two copies whose exchange fields differ are counted and reported;
* snapshots and orderbook rows: mergefiles.py; other files without
  exchange ids (the REST series): a day is A's file where A has one, else B's;
* the ledger: a break in the merged rows (as ``--verify`` sees it) that a
  ledger row of A or B explains, or that lies outside the rows of both,
  becomes one row naming what each input knew; input rows whose hole the
  other input filled are dropped; rows not about a hole are copied; a day
  lacking a stream only one input records is ``not recorded``.

The inputs are only read; the output is plain CSV.
"""

import calendar
import copy
import csv
import io
import math
import os
import time
from dataclasses import dataclass, field

from . import compression, csvfiles, mergefiles, settings
from .mergerows import MergeError, Rows, Chain, Unsorted, in_order, pairs, read_events, sorted_events
from .analysis.verify import missing_streams, names_hole
from .sequence import gap_row
from .streams import CONSECUTIVE, CHAINED, lookup

SOURCES = ("A", "B")
SHOWN = 5
OUTSIDE = "outside both recordings"       # the reason of a hole before or after the rows of each input
NOT_IN_ONE = "not in both recordings"     # the reason of a day without a stream only one input records


@dataclass
class Summary:
    """What the merge did to one symbol's stream."""
    symbol: str
    stream: str
    days: int = 0
    a_only: int = 0           # events (files, for streams without ids) taken from A alone
    b_only: int = 0
    both: int = 0
    differ: list = field(default_factory=list)     # ids of events whose two copies differ
    repeated: int = 0         # events an input held twice (or in an earlier day's file)
    filled: int = 0           # input ledger holes the other input's rows filled
    left: int = 0             # holes in the output's ledger
    unexplained: int = 0      # breaks in the merged rows no input's ledger named
    keyed: bool = True        # False: files without exchange ids (orderbook rows, REST series days)
    unit: str = "day files"   # what a_only and b_only count when not keyed


class _State:
    """One stream's merge so far (copied before each day: a day read again starts from it)."""

    def __init__(self, chain):
        self.chain = chain
        self.counts = {"A": 0, "B": 0, "both": 0, "repeated": 0}
        self.differ = []
        self.runs = {"A": [], "B": []}      # [lo, hi, rows] of backfilled events kept, per input
        self.open_run = None                # the input whose backfilled run the last event continued
        self.ends = {"A": None, "B": None}  # [(first key, line), (last key, line)] of each input's events


def check_inputs(dir_a, dir_b, out):
    """The market folders to merge; MergeError (one line) when the inputs or ``out`` will not do."""
    for d in (dir_a, dir_b):
        if not os.path.isdir(d):
            raise MergeError(f"{d}: no such folder; pass the data_dir of each recorder")
    if os.path.samefile(dir_a, dir_b):
        raise MergeError(f"{dir_a} and {dir_b} are the same folder; pass two recordings")
    markets = [[m for m in settings.MARKETS if os.path.isdir(os.path.join(d, m))] for d in (dir_a, dir_b)]
    for d, found in zip((dir_a, dir_b), markets):
        if not found:
            raise MergeError(f"{d}: no recording in it (no {' or '.join(settings.MARKETS)} folder); "
                             f"pass the data_dir of each recorder")
    if markets[0] != markets[1]:
        raise MergeError(f"{dir_a} holds {' and '.join(markets[0])} but {dir_b} holds {' and '.join(markets[1])}: "
                         f"only recordings of the same market can be merged")
    real = os.path.realpath(out)
    for d in (dir_a, dir_b):
        if real == os.path.realpath(d) or real.startswith(os.path.realpath(d) + os.sep):
            raise MergeError(f"--out {out} is inside the input {d}; the inputs are never written to: "
                             f"choose a folder outside them")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise MergeError(f"--out {out} exists and is not an empty folder; give a new or empty folder "
                         f"(a merge never overwrites)")
    return markets[0]


def merge(dir_a, dir_b, out):
    """Merge the recordings; returns [:class:`Summary`] per market, symbol and stream."""
    markets = check_inputs(dir_a, dir_b, out)
    names = {"A": dir_a, "B": dir_b}
    summaries = []
    for market in markets:
        files = {src: _files(names[src], market) for src in SOURCES}
        for symbol in sorted(set(files["A"]) | set(files["B"])):
            summaries += _symbol(market, symbol, {src: files[src].get(symbol, {}) for src in SOURCES}, names, out)
    return summaries


def _files(data_dir, market):
    """{symbol: {stream: {day: path}}}; a day with a compressed and a plain file is one day (open_day reads both)."""
    out = {}
    for symbol, stream, day, path in csvfiles.day_files(data_dir, market):
        out.setdefault(symbol, {}).setdefault(stream, {}).setdefault(day, path)
    return out


def _symbol(market, symbol, files, names, out):
    ledgers = {src: _read_ledger(files[src].get("gaps", {}), src) for src in SOURCES}
    folder = os.path.join(out, market, symbol)
    os.makedirs(folder, exist_ok=True)
    summaries, ledger_out, taken = [], [], {}
    streams = sorted((set(files["A"]) | set(files["B"])) - {"gaps"})
    for stream in streams:
        by_src = {src: files[src].get(stream, {}) for src in SOURCES}
        summary = Summary(symbol, stream, days=len(set(by_src["A"]) | set(by_src["B"])))
        target_of = lambda day, stream=stream: _target(folder, market, symbol, stream, day)   # noqa: E731
        if stream == "depthSnapshot":
            mergefiles.snapshots(by_src, target_of, summary)
        elif stream == "orderbook" and mergefiles.orderbook(by_src, ledgers["A"], target_of, summary):
            taken[stream] = {day: "A" if day in by_src["A"] else "B" for day in set(by_src["A"]) | set(by_src["B"])}
        elif lookup(stream) is None:
            taken[stream] = _take_files(market, symbol, stream, by_src, folder, summary)
        else:
            state = _merge_stream(market, symbol, stream, by_src, folder, summary)
            ledger_out += _stream_ledger(market, stream, state, ledgers, names, summary)
        summaries.append(summary)
    ledger_out += _other_rows(streams, ledgers, names, taken)
    ledger_out += _not_in_one(market, symbol, files, out, names, ledger_out)
    _write_ledger(market, symbol, folder, ledger_out)
    return summaries


# -- rows -------------------------------------------------------------------------------

def _target(folder, market, symbol, stream, day):
    return os.path.join(folder, os.path.basename(csvfiles.path("", market, symbol, stream, day)))


def _header(path):
    """The header line of a day file; a file with none (a crash left it empty) gets the schema's."""
    with compression.open_day(path) as f:
        line = f.readline()
    if not line.strip():
        name = csvfiles.parse_name(os.path.basename(path))
        market = os.path.basename(os.path.dirname(os.path.dirname(path)))
        return csvfiles.header(market, name[1])
    return line if line.endswith(b"\n") else line + b"\n"


def _merge_stream(market, symbol, stream, by_src, folder, summary):
    kind = lookup(stream)
    header = None
    state = None
    for day in sorted(set(by_src["A"]) | set(by_src["B"])):
        paths = {src: by_src[src].get(day) for src in SOURCES}
        for src, path in paths.items():
            if path is not None and header is None:
                header = _header(path)
                columns = header.decode().strip().split(",")
                if kind.id_column not in columns:
                    raise MergeError(f"{path}: no {kind.id_column} column in its header; is it a {stream} file?")
                rows = Rows(columns)
                state = _State(Chain(market, stream, columns))
            elif path is not None and _header(path) != header:
                raise MergeError(f"{path}: its columns differ from the other {stream} files' "
                                 f"({header.strip().decode()}); only recordings of the same market and version "
                                 f"can be merged")
        unsorted = set()
        while True:
            saved = copy.deepcopy(state)
            try:
                _merge_day(paths, columns.index(kind.id_column), kind.per_level, unsorted, rows, state, header,
                           _target(folder, market, symbol, stream, day))
                break
            except Unsorted as exc:
                unsorted.add(exc.args[0])
                state = saved
    summary.a_only, summary.b_only, summary.both = state.counts["A"], state.counts["B"], state.counts["both"]
    summary.repeated, summary.differ = state.counts["repeated"], state.differ
    return state


def _events(path, src, id_index, per_level, unsorted, counts):
    if path is None:
        return iter(())
    read = lambda: read_events(path, id_index, per_level)      # noqa: E731
    return sorted_events(read, counts) if src in unsorted else in_order(read(), src)


def _merge_day(paths, id_index, per_level, unsorted, rows, state, header, target):
    counts, chain = state.counts, state.chain
    partial = target + ".partial"
    with open(partial, "wb") as out:
        out.write(header)
        streams = [_events(paths[src], src, id_index, per_level, unsorted, counts) for src in SOURCES]
        for key, a, b in pairs(*streams):
            for src, lines in (("A", a), ("B", b)):
                if lines is not None:
                    ends = state.ends[src]
                    state.ends[src] = [ends[0] if ends else (key, lines[0]), (key, lines[-1])]
            if chain.last_key is not None and key <= chain.last_key:
                counts["repeated"] += 1            # in an earlier day's file already
                continue
            if a is not None and b is not None:
                counts["both"] += 1
                if not rows.same(a, b):
                    state.differ.append(key)
                src, lines = rows.choose(a, b)
            else:
                src, lines = ("A", a) if a is not None else ("B", b)
                counts[src] += 1
            _note_backfill(state, src, key, rows.is_backfilled(lines))
            chain.feed(key, lines)
            out.write(b"".join(lines))
    os.replace(partial, target)


def _note_backfill(state, src, key, backfilled):
    """Runs of backfilled events kept from each input: the ledger rows that name them are copied."""
    if not backfilled:
        state.open_run = None
        return
    runs = state.runs[src]
    if state.open_run == src:
        runs[-1][1], runs[-1][2] = key, runs[-1][2] + 1
    else:
        runs.append([key, key, 1])
    state.open_run = src


def _take_files(market, symbol, stream, by_src, folder, summary):
    """Files without exchange ids: each day A's file where A has one, else B's; {day: input}."""
    summary.keyed = False
    taken = {}
    for day in sorted(set(by_src["A"]) | set(by_src["B"])):
        src = "A" if day in by_src["A"] else "B"
        taken[day] = src
        summary.a_only += src == "A"
        summary.b_only += src == "B"
        target = _target(folder, market, symbol, stream, day)
        with compression.open_day(by_src[src][day]) as f, open(target + ".partial", "wb") as out:
            for chunk in iter(lambda: f.read(compression.CHUNK), b""):
                out.write(chunk)
        os.replace(target + ".partial", target)
    return taken


# -- the ledger -------------------------------------------------------------------------

def _read_ledger(by_day, src):
    rows = []
    for day in sorted(by_day):
        with compression.open_day(by_day[day]) as f:
            for row in csv.DictReader(io.TextIOWrapper(f, newline="")):
                row = {k: v or "" for k, v in row.items() if k is not None}   # a short row's cells are empty
                row["stream"] = row.get("stream", "")
                row["local_time_us"] = row.get("local_time_us", "")
                row["src"] = src
                row["low"] = int(row["last_good_id"]) if row.get("last_good_id", "").isdigit() else -math.inf
                row["first"] = int(row["first_id_after"]) if row.get("first_id_after", "").isdigit() else None
                rows.append(row)
    return rows


def covers(row, before, after):
    """Does an input's ledger row name the break between ids ``before`` and ``after``, as --verify reads it?"""
    return names_hole(row["low"], row["first"], before, after)


def _stream_ledger(market, stream, state, ledgers, names, summary):
    """The output's ledger rows of one stream with exchange ids."""
    holes = {src: [r for r in ledgers[src] if r["stream"] == stream and r["first"] is not None] for src in SOURCES}
    missing = {src: [r for r in holes[src] if r["action"] != "backfilled"] for src in SOURCES}
    if state.chain.rule in (CONSECUTIVE, CHAINED):
        found = [(b, a, t0, t1, {src: [r for r in missing[src] if covers(r, b, a)] for src in SOURCES})
                 for b, a, t0, t1 in state.chain.breaks]
        known = [f for f in found if any(f[4].values()) or all(_outside(state.ends[src], *f[:2]) for src in SOURCES)]
        summary.unexplained = len(found) - len(known)
        found = known
    else:
        found = _common_holes(missing, state.ends, lambda line: csvfiles.row_time(market, stream, line.decode()))
    out = [_hole_row(stream, *f, names) for f in found]
    summary.left = len(out)
    summary.filled = sum(1 for src in SOURCES for r in missing[src]
                         if not any(b < r["first"] and a > r["low"] for b, a, *_ in found))
    for src in SOURCES:          # the holes whose backfilled rows are in the output: one row each
        named = {}
        for r in holes[src]:     # a hole's backfilled row over its backfill_requested one
            if (r["low"], r["first"]) not in named or r["action"] == "backfilled":
                named[(r["low"], r["first"])] = r
        for (low, first), r in sorted(named.items()):
            n = sum(k for lo, hi, k in state.runs[src] if low < hi and lo < first)
            if n:
                out.append(_copied(r, names, action="backfilled", rows=n))
    return out


def _common_holes(missing, ends, time_of):
    """Streams whose ids only grow (no row shows a hole): the holes of A's
    ledger that B's rows do not cover, and B's that A's do not: the
    intersections of what each input lacks (its ledger's holes, and
    everything before its first row and after its last)."""
    lacks = {}
    for src in SOURCES:
        spans = [(r["low"], r["first"], r["last_good_time"], r["first_time_after"], r) for r in missing[src]]
        if ends[src]:
            (k0, line0), (k1, line1) = ends[src]
            spans += [(-math.inf, k0, "", time_of(line0), None), (k1, math.inf, time_of(line1), "", None)]
        else:
            spans.append((-math.inf, math.inf, "", "", None))
        lacks[src] = spans
    found = {}
    for x in lacks["A"]:
        for y in lacks["B"]:
            lo, hi = max(x[0], y[0]), min(x[1], y[1])
            if not lo < hi or math.isinf(lo) or math.isinf(hi):
                continue                  # both ends of the rows: a span outside both recordings
            t0 = next(s[2] for s in (x, y) if s[0] == lo)
            t1 = next(s[3] for s in (x, y) if s[1] == hi)
            why = found.setdefault((lo, hi), [lo, hi, t0, t1, {"A": [], "B": []}])[4]
            for src, s in (("A", x), ("B", y)):
                if s[4] is not None and s[4] not in why[src]:
                    why[src].append(s[4])
    return [tuple(v) for _, v in sorted(found.items())]


def _outside(ends, before, after):
    """Does the break between ids ``before`` and ``after`` lie before the
    first or after the last event of an input (``ends``: its first and last)?"""
    return ends is None or after <= ends[0][0] or before >= ends[1][0]


def _time(value):
    """A ledger time (ms): from a ledger cell (text) or a row (int)."""
    return int(value) if str(value).isdigit() else ""


def _hole_row(stream, before, after, t0, t1, why, names):
    """The output's row of a hole in both inputs; one outside the rows of
    both (neither ledger names it) is dated by the row after it, else the row before."""
    rows = why["A"] + why["B"]
    actions = {r["action"] for r in rows}
    said = "; ".join(f"{src} ({names[src]}): " + (", ".join(f"{r['reason']}, {r['action']}" for r in why[src])
                                                  or "no rows there") for src in SOURCES)
    times = [int(r["local_time_us"]) for r in rows if r["local_time_us"].isdigit()]
    if not times:
        times = [_time(t) * 1000 for t in (t1, t0) if _time(t) != ""][:1]
    return gap_row(min(times) if times else "", stream, rows[0]["reason"] if rows else OUTSIDE, before, after,
                   "not recorded" if actions == {"not recorded"} else "lost", 0,
                   f"in neither recording: {said}", _time(t0), _time(t1))


def _copied(r, names, **changes):
    row = {c: r.get(c, "") for c in csvfiles.SCHEMAS["gaps"]}
    row.update(changes)
    row["detail"] = f"{r['src']} ({names[r['src']]}): {r.get('detail', '')}".rstrip(": ")
    return row


def _other_rows(streams, ledgers, names, taken):
    """Rows about no hole of a stream with ids (a torn write, the disk floor,
    the book manager's resyncs, ...), copied: the book manager's from the
    input whose orderbook file of that day the output holds."""
    day_of = csvfiles.DayOf()
    out = []
    for src in SOURCES:
        for r in ledgers[src]:
            if lookup(r["stream"]) is not None and r["first"] is not None and r["stream"] in streams:
                continue                                  # a hole: _stream_ledger's
            files = taken.get(r["stream"])
            if files and r["local_time_us"].isdigit():
                chosen = files.get(day_of(int(r["local_time_us"]) // 1000))
                if chosen is not None and chosen != src:
                    continue
            out.append(_copied(r, names))
    return out


def _not_in_one(market, symbol, files, out, names, rows):
    """A "not recorded" row for each day the output lacks a stream that
    only one input records (as --verify finds a missing file), naming who has it."""
    written = _files(out, market).get(symbol, {})
    said = {r["stream"] for r in rows if r["action"] == "not recorded"}
    extra = []
    for day in sorted({d for by_day in written.values() for d in by_day}):
        for stream in missing_streams(written, day, not_recorded=said):
            has = [f"{src} ({names[src]})" for src in SOURCES if stream in files[src]]
            start_us = calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1_000_000
            extra.append(gap_row(start_us, stream, NOT_IN_ONE, "", "", "not recorded", 0,
                                 f"{stream} is in {' and '.join(has) or 'neither'}, in neither that day"))
    return extra


def _write_ledger(market, symbol, folder, rows):
    day_of = csvfiles.DayOf()
    by_day = {}
    for row in rows:
        us = row["local_time_us"]
        day = day_of(int(us) // 1000) if str(us).isdigit() else None
        by_day.setdefault(day, []).append(row)
    if None in by_day:          # a row without a time goes with the first day's
        undated = by_day.pop(None)
        by_day.setdefault(min(by_day) if by_day else "1970-01-01", []).extend(undated)
    for day, day_rows in sorted(by_day.items()):
        day_rows.sort(key=lambda r: int(r["local_time_us"]) if str(r["local_time_us"]).isdigit() else 0)
        target = _target(folder, market, symbol, "gaps", day)
        with open(target, "w", newline="") as f:
            w = csv.DictWriter(f, csvfiles.SCHEMAS["gaps"], extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(day_rows)


# -- the summary ------------------------------------------------------------------------

def format_summary(summaries, names):
    lines = [f"A = {names['A']}", f"B = {names['B']}", "",
             f"{'symbol':<12}{'stream':<15}{'days':>5}{'A only':>10}{'B only':>10}{'both':>10}{'differ':>8}"
             f"{'holes filled':>14}{'holes left':>12}"]
    for s in summaries:
        if not s.keyed:
            lines.append(f"{s.symbol:<12}{s.stream:<15}{s.days:>5}  no exchange ids: {s.a_only} {s.unit} from A, "
                         f"{s.b_only} from B")
            continue
        lines.append(f"{s.symbol:<12}{s.stream:<15}{s.days:>5}{s.a_only:>10}{s.b_only:>10}{s.both:>10}"
                     f"{len(s.differ):>8}{s.filled:>14}{s.left:>12}")
    for s in summaries:
        if s.differ:
            lines.append(f"{s.symbol} {s.stream}: {len(s.differ)} events differ between A and B (A's rows kept), "
                         f"ids {', '.join(map(str, s.differ[:SHOWN]))}{' ...' if len(s.differ) > SHOWN else ''}")
        if s.unexplained:
            lines.append(f"{s.symbol} {s.stream}: {s.unexplained} breaks in the merged rows that neither ledger "
                         f"names (run --verify on each input)")
        if s.repeated:
            lines.append(f"{s.symbol} {s.stream}: {s.repeated} events held twice by one input, written once")
    return "\n".join(lines)
