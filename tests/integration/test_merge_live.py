"""--merge on two real recordings of one simulator: each recorder misses
what the other caught (its connections alone are dropped, or it is stopped
and started again, while the other records), both miss what a drop of
every connection cost them; the merged files hold exactly what either
recorder had, as the simulator sent it, and the merged ledger only the
holes both have."""

import os

import pytest

from binance_streamer import cli, mergeledger
from binance_streamer.analysis import verify
from binance_streamer.simulator import audit
from binance_streamer.streams import file_stream, lookup
from tests.support import Files, Recorder, start_all, wait_for

pytestmark = pytest.mark.timeout(300)

STREAMS = {"spot": ["aggTrade", "trade", "depth@100ms", "kline_1s", "bookTicker"],
           "usdm": ["aggTrade", "depth@100ms", "kline_1m", "bookTicker"]}
LOST = {"spot": ["trade", "depth"], "usdm": ["depth"]}     # streams whose holes REST cannot fill
CONNECTIONS = {"spot": 1, "usdm": 2}                         # a recorder's connections (USD-M: public, market)
TRIES = 5                  # drops of one recorder's connections until they cost it a hole
UNREACHABLE_S = 0.5        # the moment both recorders miss: several depth batches


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


def _lost_holes(rec, market):
    """{stream: ledger rows of holes} of the streams REST cannot fill."""
    holes = _holes(rec)
    return {s: sum(1 for g in holes if g["stream"] == s) for s in LOST[market]}


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
        # a minute's candle closes live only if the run crosses a minute while
        # connected (else it comes by REST, not as a frame): kline_1m may have none
        assert r["found"] > 0 or stream.endswith("@kline_1m"), stream
        assert r["mismatched"] == [] and r["duplicates"] == 0, (stream, r["mismatched"][:5])
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
    ``tmp_path/<market>/a`` and ``/b``; any still running after the test is killed."""
    made = []

    def make(sim, market):
        pair = []
        for name in ("a", "b"):
            (tmp_path / market / name).mkdir(parents=True)
            pair.append(Recorder(tmp_path / market / name, sim, ["BTCUSDT"], streams=STREAMS[market]))
        made.extend(pair)
        return pair
    yield make
    for rec in made:
        rec.kill()


def _open(sim):
    return {c["id"] for c in sim.connections() if c["closed"] is None}


def _connections(sim, n, other, what):
    """The ids of ``n`` open connections not in ``other``."""
    return wait_for(lambda: (_open(sim) - other) if len(_open(sim) - other) >= n else None, 30, what)


def _drops(sim):
    return len([c for c in sim.connections() if c["close_reason"] == "fault: drop"])


class Market:
    """One market's simulator and recorders A and B, each with its connections."""

    def __init__(self, simulator, recorders, market):
        self.market = market
        self.sim = simulator(market=market, symbols=("BTCUSDT",), seed=26, rate=200)
        self.a, self.b = recorders(self.sim, market)
        self.conns = {}

    def launch(self, rec):
        """Start ``rec``; its connections (once the others' are known)."""
        before = set().union(*self.conns.values()) if self.conns else set()
        rec.launch()
        self.conns[rec] = _connections(self.sim, CONNECTIONS[self.market], before, f"{rec.dir}'s connections")

    def drop(self, rec):
        """Cut ``rec``'s connections (TCP, no close frame), each alone, until
        its ledger has a new hole in every stream REST cannot fill: a recorder
        back before the next 100 ms depth batch loses no depth event."""
        for _ in range(TRIES):
            known = _lost_holes(rec, self.market)
            before = {c["id"] for c in self.sim.connections()}
            for conn in self.conns[rec]:
                self.sim.faults(drop="abort", drop_conn=conn)
            self.conns[rec] = _connections(self.sim, CONNECTIONS[self.market], before, f"{rec.dir}: new connections")
            _more(rec, 100, f"{self.market}: {rec.dir}'s rows after its new connections")
            if all(_lost_holes(rec, self.market)[s] > known[s] for s in known):
                return
        raise AssertionError(f"{rec.dir}: {TRIES} drops of its connections cost it no hole in each of "
                             f"{LOST[self.market]}")

    def drop_all(self):
        """Every connection cut at once (TCP, no close frame), none admitted
        for a while: both recorders miss the same moment."""
        self.dropped = _drops(self.sim)
        self.sim.faults(unreachable=UNREACHABLE_S)

    def all_dropped(self):
        wait_for(lambda: _drops(self.sim) >= self.dropped + 2 * CONNECTIONS[self.market], 20,
                 f"{self.market}: both recorders' connections dropped")


def test_holes_at_different_moments_merge_to_what_either_had(simulator, tmp_path, recorders):
    """Spot and USD-M side by side, each with recorders A and B: A's
    connections are dropped while B records, then B's while A records, then A
    is stopped and started again while B records, then every connection is
    dropped at once. The merge of A and B holds what either had."""
    markets = [Market(simulator, recorders, market) for market in ("spot", "usdm")]
    for m in markets:
        m.launch(m.a)
        m.launch(m.b)
    start_all(*[rec for m in markets for rec in (m.a, m.b)])
    for m in markets:
        _more(m.a, 50, f"{m.market}: A's first rows")
        _more(m.b, 50, f"{m.market}: B's first rows")
    for name in ("a", "b"):                              # A misses a moment B has, then B one A has
        for m in markets:
            m.drop(getattr(m, name))
    for m in markets:                                    # A stopped: it misses what B records meanwhile
        assert m.a.stop() == 0, m.a.log_tail()
    for m in markets:
        _more(m.b, 50, f"{m.market}: B's rows while A is stopped")
    start_all(*[m.a for m in markets])
    for m in markets:
        _more(m.a, 50, f"{m.market}: A's rows after its restart")
        m.drop_all()                                     # both miss this moment
    for m in markets:
        m.all_dropped()
        for rec in (m.a, m.b):
            _more(rec, 50, f"{m.market}: rows after the drop")
    for m in markets:
        for rec in (m.a, m.b):
            assert rec.stop() == 0, rec.log_tail()
        _merge_and_check(m.sim, tmp_path / m.market, m.market, [m.a.dir, m.b.dir])


def _outside_rows(files):
    return [g for g in files.rows("BTCUSDT", "gaps") if g["reason"] == mergeledger.OUTSIDE]


def _merge_exact(sim, out, market, a, b):
    """Merge ``a`` and ``b`` into ``out``: --verify passes, the merge holds
    every row of either input once, as the simulator sent it, and whatever
    it lacks of what either was sent is in its ledger."""
    assert cli.main(["--merge", os.path.join(a.dir, "data"), os.path.join(b.dir, "data"), "--out", str(out)]) == 0
    report = verify.verify(str(out), market)
    assert report.ok, verify.format_report(report, str(out))
    merged = audit.Files(str(out), market)
    for stream in [file_stream(s) for s in STREAMS[market]]:
        assert _ids(merged, stream) == _ids(a, stream) | _ids(b, stream), stream
    for stream, r in audit.compare(sim, merged, {"BTCUSDT"}).items():
        # a minute's candle closes live only if the run crosses a minute while
        # connected (else it comes by REST, not as a frame): kline_1m may have none
        assert r["found"] > 0 or stream.endswith("@kline_1m"), stream
        assert r["mismatched"] == [] and r["duplicates"] == 0, (stream, r["mismatched"][:5])
        assert r["unexplained"] == [], f"{stream}: frames missing from the merge and its ledger: {r['unexplained'][:5]}"
    return merged, report


def test_recordings_that_do_not_meet_or_partly_overlap(simulator, tmp_path):
    """X records; Y starts while X records and goes on after X stops; Z
    starts after X stopped. X with Y overlap in part: their merge has no
    hole; Z (A, started later) with X (B) do not meet: their merge has one
    ledger row 'outside both recordings' per stream, between X's last row
    and Z's first."""
    market = "spot"
    sim = simulator(market=market, symbols=("BTCUSDT",), seed=27, rate=200)
    recs = {}
    for name in "xyz":
        (tmp_path / name).mkdir()
        recs[name] = Recorder(tmp_path / name, sim, ["BTCUSDT"], streams=STREAMS[market])
    x, y, z = recs["x"], recs["y"], recs["z"]
    try:
        start_all(x)
        _more(x, 50, "X's first rows")
        start_all(y)
        _more(y, 100, "Y's rows while X records")
        assert x.stop() == 0, x.log_tail()
        _more(y, 100, "Y's rows after X stopped")
        start_all(z)
        _more(z, 100, "Z's rows")
        for rec in (y, z):
            assert rec.stop() == 0, rec.log_tail()
    finally:
        for rec in (x, y, z):
            rec.kill()

    merged, report = _merge_exact(sim, tmp_path / "xy", market, x, y)
    assert _outside_rows(merged) == [] and _holes(merged) == [], _holes(merged)
    # Y's book rows after X's last one are in the merge, and --verify compared them with the merged diffs
    last_x = max(int(r["update_id"]) for r in x.rows("BTCUSDT", "orderbook") if r["in_sync"] == "true")
    after = [r for r in merged.rows("BTCUSDT", "orderbook") if int(r["update_id"]) > last_x]
    assert after and report.unchecked_books < len(after), (len(after), report.unchecked_books)

    merged, _ = _merge_exact(sim, tmp_path / "zx", market, z, x)
    outside = {g["stream"]: g for g in _outside_rows(merged)}
    assert set(outside) >= {"trade", "depth", "aggTrade", "kline_1s", "bookTicker"}, outside
    for stream, g in outside.items():
        before, after = int(g["last_good_id"]), int(g["first_id_after"])
        x_ids, z_ids = _ids(x, stream), _ids(z, stream)
        assert before == max(x_ids) and max(x_ids) < after <= min(z_ids), (stream, g)
        assert g["action"] == "lost" and "no rows there" in g["detail"], g
