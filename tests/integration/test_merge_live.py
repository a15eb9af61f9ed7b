"""--merge on two real recordings of one simulator: each recorder misses
what the other caught (each is stopped and started again while the other
records, or its connections alone are dropped), both miss what a drop of
every connection cost them; the merged files hold exactly what either
recorder had, as the simulator sent it, and the merged ledger only the
holes both have."""

import os

import pytest

from binance_streamer import cli
from binance_streamer.analysis import verify
from binance_streamer.simulator import audit
from binance_streamer.streams import file_stream, lookup
from tests.support import Files, Recorder, wait_for

pytestmark = pytest.mark.timeout(300)

STREAMS = {"spot": ["aggTrade", "trade", "depth@100ms", "kline_1s", "bookTicker"],
           "usdm": ["aggTrade", "depth@100ms", "kline_1m", "bookTicker"]}
LOST = {"spot": ["trade", "depth"], "usdm": ["depth"]}     # streams whose holes REST cannot fill
CONNECTIONS = {"spot": 1, "usdm": 2}                         # a recorder's connections (USD-M: public, market)


def _rows(rec, stream):
    """Rows of a stream the recorder has written in its current run."""
    written = rec.status().get("children", {}).get("writer", {}).get("streams", {})
    return written.get(f"BTCUSDT/{stream}", {}).get("rows", 0)


def _more(rec, n, what, stream="depth"):
    start = _rows(rec, stream)
    rec.wait_status(lambda s: _rows(rec, stream) >= start + n, 60, what)


def _ids(files, stream):
    column = lookup(stream).id_column
    return {int(r[column]) for r in files.rows("BTCUSDT", stream)}


def _holes(files):
    """Ledger rows of rows still missing (a backfilled hole is no longer one)."""
    return [g for g in files.rows("BTCUSDT", "gaps")
            if g["first_id_after"] and lookup(g["stream"]) is not None and g["action"] != "backfilled"]


def _merge_and_check(sim, tmp_path, market, dirs):
    """Merge the two recordings: the merge verifies, holds exactly what
    either input had, as the simulator sent it, and ledgers only holes both
    had; each input had holes the other filled."""
    inputs = [Files(d, market) for d in dirs]
    for rec in inputs:
        report = verify.verify(os.path.join(rec.dir, "data"), market)
        assert report.ok, verify.format_report(report, rec.dir)
    out = tmp_path / "merged"
    assert cli.main(["--merge", os.path.join(dirs[0], "data"), os.path.join(dirs[1], "data"), "--out", str(out)]) == 0
    merged = audit.Files(str(out), market)
    merged.dir = str(out)

    report = verify.verify(str(out), market)
    assert report.ok, verify.format_report(report, str(out))
    assert report.tickers_checked > 0 and any(f.stream == "orderbook" and f.checked for f in report.files)

    # every row of either input, once; nothing else
    for stream in [file_stream(s) for s in STREAMS[market]]:
        a_ids, b_ids = _ids(inputs[0], stream), _ids(inputs[1], stream)
        if not lookup(stream).backfill:          # REST fills the others' holes in each input already
            assert a_ids - b_ids and b_ids - a_ids, f"{stream}: each recorder should have rows the other lacks"
        assert _ids(merged, stream) == a_ids | b_ids, stream
        rows = merged.rows("BTCUSDT", stream)
        if not lookup(stream).per_level:
            assert len(rows) == len(a_ids | b_ids), f"{stream}: an event written twice"
    # as the simulator sent it; whatever is missing is in the merged ledger
    for stream, r in audit.compare(sim, merged, {"BTCUSDT"}).items():
        assert r["found"] > 0 and r["mismatched"] == [] and r["duplicates"] == 0, (stream, r["mismatched"][:5])
        assert r["unexplained"] == [], f"{stream}: frames missing from the merge and its ledger: {r['unexplained'][:5]}"

    # the ledger: only holes neither input has rows in; each input had holes the other filled
    holes = _holes(merged)
    assert {g["stream"] for g in holes} >= set(LOST[market]), "the drop of every connection is a hole of both"
    for g in holes:
        lo, hi = int(g["last_good_id"]), int(g["first_id_after"])
        assert "in neither recording" in g["detail"], g
        for files in inputs:
            if lookup(g["stream"]).per_level:
                inside = {(int(r["first_update_id"]), int(r["final_update_id"])) for r in files.rows("BTCUSDT", "depth")
                          if lo < int(r["final_update_id"]) and int(r["first_update_id"]) < hi}
            else:
                inside = {i for i in _ids(files, g["stream"]) if lo < i < hi}
            assert not inside, f"{g['stream']} hole {lo}..{hi}: an input has rows there"
    merged_holes = {(g["stream"], g["last_good_id"], g["first_id_after"]) for g in holes}
    for files in inputs:
        for stream in LOST[market]:
            filled = [g for g in _holes(files) if g["stream"] == stream
                      and (g["stream"], g["last_good_id"], g["first_id_after"]) not in merged_holes]
            assert filled, f"{files.dir}: no {stream} hole of this recorder was filled by the other"


@pytest.fixture
def recorders(tmp_path):
    """``recorders(sim, market)``: recorders A and B (not started) in
    ``tmp_path/a`` and ``/b``; any still running after the test is killed."""
    made = []

    def make(sim, market):
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            made.append(Recorder(tmp_path / name, sim, ["BTCUSDT"], streams=STREAMS[market]))
        return made
    yield make
    for rec in made:
        rec.kill()


def _both_miss_a_moment(sim, recs, market):
    """Every connection cut at once (TCP, no close frame); rows after it."""
    dropped = len([c for c in sim.connections() if c["close_reason"] == "fault: drop"])
    sim.faults(drop="abort")
    wait_for(lambda: len([c for c in sim.connections() if c["close_reason"] == "fault: drop"])
             >= dropped + 2 * CONNECTIONS[market], 20, "both recorders' connections dropped")
    for rec in recs:
        _more(rec, 100, "rows after the drop")


def _stop_and_merge(sim, tmp_path, market, recs):
    for rec in recs:
        assert rec.stop() == 0, rec.log_tail()
    _merge_and_check(sim, tmp_path, market, [rec.dir for rec in recs])


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_two_recorders_fill_each_others_holes(simulator, tmp_path, recorders, market):
    sim = simulator(market=market, symbols=("BTCUSDT",), seed=21, rate=200)
    a, b = recorders(sim, market)
    a.start()
    _more(a, 100, "A's first rows")
    b.start()
    _more(b, 100, "B's first rows")
    a.stop()                                   # A misses what B records now
    _more(b, 100, "B's rows while A is stopped")
    a.start()
    _more(a, 100, "A's rows after its restart")
    b.stop()                                   # and B what A records now
    _more(a, 100, "A's rows while B is stopped")
    b.start()
    _more(b, 100, "B's rows after its restart")
    _both_miss_a_moment(sim, (a, b), market)
    _stop_and_merge(sim, tmp_path, market, (a, b))


def _open(sim):
    return {c["id"] for c in sim.connections() if c["closed"] is None}


def _connections(sim, n, other, what):
    """The ids of ``n`` open connections not in ``other``."""
    return wait_for(lambda: (_open(sim) - other) if len(_open(sim) - other) >= n else None, 30, what)


def _drop(sim, rec, conns, market, what):
    """Cut a recorder's connections (TCP, no close frame), each alone; once
    it has new ones and rows after them."""
    before = {c["id"] for c in sim.connections()}
    for conn in conns:
        sim.faults(drop="abort", drop_conn=conn)
    _connections(sim, CONNECTIONS[market], before, f"{what}: new connections")
    _more(rec, 300, f"{what}: rows after the new connections")


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_holes_of_dropped_connections_at_different_moments_merge_to_what_either_had(simulator, tmp_path, recorders,
                                                                                   market):
    sim = simulator(market=market, symbols=("BTCUSDT",), seed=26, rate=200)
    a, b = recorders(sim, market)
    a.start()
    conns_a = _connections(sim, CONNECTIONS[market], set(), "A's connections")
    _more(a, 100, "A's first rows")
    b.start()
    conns_b = _connections(sim, CONNECTIONS[market], conns_a, "B's connections")
    _more(b, 100, "B's first rows")
    _drop(sim, a, conns_a, market, "A")                # A misses a moment B has
    _drop(sim, b, conns_b, market, "B")                # and B one A has
    _both_miss_a_moment(sim, (a, b), market)
    _stop_and_merge(sim, tmp_path, market, (a, b))
