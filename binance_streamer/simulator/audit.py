"""Compare what the simulator sent (its journal) with what a recorder wrote.

For every recorder connection, every data frame the simulator sent up to the
last frame of that connection found on disk should be on disk exactly once,
with its prices and quantities as sent. A frame that is not (lost to a
dropped connection or a killed process) must lie in a hole of the gap
ledger: the audit counts those apart from unexplained ones. Used by the
integration tests and by bench/soak.py.
"""

import csv
import glob
import os

import orjson

from ..binance import parse
from ..streams import CHAINED, event_id, file_stream, kind_of, lookup, recorded


class Files:
    """The CSV files of one recording: ``<data_dir>/<market>/<SYMBOL>/...``."""

    def __init__(self, data_dir, market):
        self.data_dir, self.market = data_dir, market

    def rows(self, symbol, stream):
        """All rows of a stream over every day file, as dicts of strings, in file order."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.data_dir, self.market, symbol, f"{symbol}-{stream}-*.csv"))):
            with open(path, newline="") as f:
                out.extend(csv.DictReader(f))
        return out


def frames_by_stream(journal):
    """[(conn, index, stream, data)] for data frames, in send order per connection."""
    out = []
    for conn, _, frame in journal:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            continue
        if isinstance(msg, dict) and isinstance(msg.get("data"), dict) and "@" in msg.get("stream", ""):
            out.append((conn, msg["stream"], msg["data"]))
    return out


def frame_key(stream, d):
    """The id a frame is known by on disk, or None for frames not recorded (open klines)."""
    kind = lookup(stream.split("@", 1)[1])
    if kind is None or not recorded(kind, d):
        return None
    return event_id(kind, d)


def disk_index(rec, symbol, stream):
    """id -> list of rows on disk (depth: the rows of one event)."""
    id_col = lookup(stream).id_column
    index = {}
    for row in rec.rows(symbol, file_stream(stream)):
        index.setdefault(int(row[id_col]), []).append(row)
    return index


def row_matches(stream, d, rows):
    kind = kind_of(stream.split("@", 1)[1])
    if kind == "aggTrade":
        r = rows[0]
        return len(rows) == 1 and (r["price"], r["quantity"], int(r["first_trade_id"]), int(r["last_trade_id"])) == \
            (d["p"], d["q"], d["f"], d["l"])
    if kind == "trade":
        return len(rows) == 1 and (rows[0]["price"], rows[0]["qty"]) == (d["p"], d["q"])
    if kind == "bookTicker":
        r = rows[0]
        return len(rows) == 1 and (r["best_bid_price"], r["best_bid_qty"], r["best_ask_price"], r["best_ask_qty"]) \
            == (d["b"], d["B"], d["a"], d["A"])
    if kind == "depth":
        want = [("bid", p, q) for p, q in d["b"]] + [("ask", p, q) for p, q in d["a"]]
        got = [(r["side"], r["price"], r["quantity"]) for r in rows if r["side"]]   # an empty event has one bare row
        return got == want and all(int(r["first_update_id"]) == d["U"] for r in rows)
    if kind == "markPrice":
        r = rows[0]
        return len(rows) == 1 and (r["mark_price"], r["index_price"], r["estimated_settle_price"], r["funding_rate"],
                                   int(r["next_funding_time"])) == (d["p"], d["i"], d["P"], d["r"], d["T"])
    if kind == "forceOrder":
        r, o = rows[0], d["o"]
        return len(rows) == 1 and (r["side"], r["order_type"], r["time_in_force"], r["original_quantity"], r["price"],
                                   r["average_price"], r["order_status"], r["last_fill_quantity"],
                                   r["accumulated_fill_quantity"], int(r["trade_time"])) == \
            (o["S"], o["o"], o["f"], o["q"], o["p"], o["ap"], o["X"], o["l"], o["z"], o["T"])
    if kind == "kline":
        k = d["k"]
        r = rows[0]
        return len(rows) == 1 and (r["open"], r["high"], r["low"], r["close"], r["volume"]) == \
            (k["o"], k["h"], k["l"], k["c"], k["v"])
    return False


def _ledger(rec, symbol):
    """stream kind -> [(last good id, first id after)] from the gap ledger."""
    holes = {}
    for g in rec.rows(symbol, "gaps"):
        if g["last_good_id"] and g["first_id_after"]:
            holes.setdefault(g["stream"], []).append((int(g["last_good_id"]), int(g["first_id_after"])))
    return holes


def _in_ledger(holes, stream, key, d):
    chained = lookup(stream).rule == CHAINED
    for lo, hi in holes.get(file_stream(stream), ()):
        if chained:
            if lo < d["u"] and d["U"] <= hi:     # the event overlaps the hole's update ids
                return True
        elif lo < key < hi:
            return True
    return False


def rejected(market, stream, d):
    """Would the recorder refuse this event (a value that does not parse)?"""
    kind = lookup(stream.split("@", 1)[1])
    if kind is None:
        return False            # not a stream the recorder keeps: frame_key skips it
    try:
        kind.parse(market, d, 0)
    except parse.MALFORMED:
        return True
    return False


def compare(sim, rec, symbols, journal=None):
    """Per stream: frames expected, found, missing (with ``unexplained``, the
    missing ones no ledger row covers), mismatched, duplicates; and
    ``rejected``, the events sent with a value the recorder must refuse
    (a hostile fault): they are not expected on disk."""
    frames = frames_by_stream(journal if journal is not None else sim.journal())
    indexes = {}
    report = {}
    report_rejected = {}
    last_on_disk = {}          # conn -> position of the last frame found on disk
    keyed = []
    for pos, (conn, stream, d) in enumerate(frames):
        symbol = stream.split("@")[0].upper()
        if symbol not in symbols:
            continue
        if rejected(rec.market, stream, d):
            report_rejected[stream] = report_rejected.get(stream, 0) + 1
            continue
        key = frame_key(stream, d)           # safe: the recorder would take the event
        if key is None:
            continue
        kind = stream.split("@", 1)[1]
        idx = indexes.get((symbol, kind))
        if idx is None:
            idx = indexes[(symbol, kind)] = disk_index(rec, symbol, kind)
        found = key in idx
        keyed.append((pos, conn, stream, d, key, found))
        if found:
            last_on_disk[conn] = pos
    seen = set()
    ledgers = {s: _ledger(rec, s) for s in symbols}
    for pos, conn, stream, d, key, found in keyed:
        symbol = stream.split("@")[0].upper()
        r = report.setdefault(stream, {"expected": 0, "found": 0, "missing": [], "unexplained": [],
                                       "mismatched": [], "duplicates": 0, "rejected": 0})
        if pos > last_on_disk.get(conn, -1):
            continue           # sent after the recorder's last receive on that connection
        if (stream, key) in seen:
            continue           # the same event sent on two connections (handover): once on disk
        seen.add((stream, key))
        r["expected"] += 1
        if not found:
            r["missing"].append(key)
            if not _in_ledger(ledgers[symbol], stream.split("@", 1)[1], key, d):
                r["unexplained"].append(key)
            continue
        rows = indexes[(symbol, stream.split("@", 1)[1])][key]
        r["found"] += 1
        if not row_matches(stream, d, rows):
            r["mismatched"].append(key)
    for stream, n in report_rejected.items():
        if stream in report:
            report[stream]["rejected"] = n
    for (symbol, kind), idx in indexes.items():
        stream = f"{symbol.lower()}@{kind}"
        if stream in report and not lookup(kind).per_level:
            report[stream]["duplicates"] = sum(len(v) - 1 for v in idx.values())
        elif stream in report:
            report[stream]["duplicates"] = sum(1 for v in idx.values()
                                               if len({r["first_update_id"] for r in v}) > 1)
    return report


def handovers(connections):
    """Connections opened while another on the same path was still open."""
    by_path = {}
    for c in sorted(connections, key=lambda c: c["opened"]):
        by_path.setdefault(c["path"], []).append(c)
    count = 0
    for conns in by_path.values():
        for prev, cur in zip(conns, conns[1:]):
            if prev["closed"] is None or cur["opened"] < prev["closed"]:
                count += 1
    return count
