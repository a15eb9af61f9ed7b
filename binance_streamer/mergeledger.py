"""The gap ledger of ``--merge`` (README "Merging two recordings"): the
inputs' ledger rows read once; per stream with exchange ids, one row for
each break of the merged rows that a ledger row of A or B names or that
lies outside the rows of both; backfilled holes whose rows were kept; rows
about no hole copied; a day without a stream only one input records
``not recorded``."""

import calendar
import csv
import io
import math
import time

from . import compression, csvfiles
from .analysis.verify import missing_streams, names_hole
from .sequence import gap_row
from .streams import CONSECUTIVE, CHAINED, lookup

SOURCES = ("A", "B")
OUTSIDE = "outside both recordings"       # the reason of a hole before or after the rows of each input
NOT_IN_ONE = "not in both recordings"     # the reason of a day without a stream only one input records


def read_ledger(by_day, src):
    """The ledger rows of one input's symbol (``by_day``: {day: path}), each
    with ``src``, and ``low`` and ``first``: its hole's ids as numbers."""
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


def stream_ledger(market, stream, state, ledgers, names, summary):
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


def other_rows(streams, ledgers, names, taken):
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


def not_in_one(written, files, names, rows):
    """A "not recorded" row for each day the output lacks a stream that
    only one input records (as --verify finds a missing file), naming who
    has it; ``written``: the output's {stream: {day: path}}."""
    said = {r["stream"] for r in rows if r["action"] == "not recorded"}
    extra = []
    for day in sorted({d for by_day in written.values() for d in by_day}):
        for stream in missing_streams(written, day, not_recorded=said):
            has = [f"{src} ({names[src]})" for src in SOURCES if stream in files[src]]
            start_us = calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1_000_000
            extra.append(gap_row(start_us, stream, NOT_IN_ONE, "", "", "not recorded", 0,
                                 f"{stream} is in {' and '.join(has) or 'neither'}, in neither that day"))
    return extra


def write_ledger(target_of, rows):
    """The output's ledger files, a row in the file of its UTC day (``target_of(day)``), in time order."""
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
        target = target_of(day)
        with open(target, "w", newline="") as f:
            w = csv.DictWriter(f, csvfiles.SCHEMAS["gaps"], extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(day_rows)
