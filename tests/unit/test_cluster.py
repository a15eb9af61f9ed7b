"""The collectors' messages (cluster.py) and the sink's merge (sink.py),
without a NATS server: two collectors' frames of one stream, each with a
hole the other fills, reach the worker once each, in id order."""

import logging
import urllib.parse

import orjson

from binance_streamer import cluster, config
from binance_streamer.messages import Gap, Rows
from binance_streamer.sink import Merge
from binance_streamer.worker import Worker


def _cfg():
    return config.load(None, {"market": "spot", "symbols": ["BTCUSDT"], "streams": ["aggTrade", "bookTicker"],
                              "validate_symbols": False})


def _agg(a, e=None):
    d = {"e": "aggTrade", "E": e or 1000 + a, "s": "BTCUSDT", "a": a, "p": "1.0", "q": "2.0", "f": a, "l": a,
         "T": 1000 + a, "m": True, "M": True}
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": d})


def test_messages_round_trip_and_keep_the_frames_bytes():
    raw = [(1_700_000_000_000_001, _agg(1)), (1_700_000_000_000_002, b'{"stream":"x","data":{"a":"\\n"}}\n')]
    for msg in (cluster.Frames("a", "BTCUSDT", raw),
                cluster.ConnectionEvent("a", "BTCUSDT", "connected", ["btcusdt@aggTrade"], 5, {"btcusdt@aggTrade": 3}),
                cluster.Dropped("b", "BTCUSDT", 7, 1, 2)):
        assert cluster.decode(cluster.encode(msg)) == msg
    assert raw[1][1] in cluster.encode(cluster.Frames("a", "BTCUSDT", raw))     # not re-encoded


def test_a_cut_message_is_refused():
    data = cluster.encode(cluster.Frames("a", "BTCUSDT", [(1, _agg(1))]))
    try:
        cluster.decode(data[:-3])
    except ValueError:
        return
    raise AssertionError("a cut message decoded")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_two_collectors_holes_are_filled_and_each_event_goes_on_once():
    clock = Clock()
    worker = Worker(_cfg(), ["BTCUSDT"])
    merge = Merge(worker, 1.0, clock)
    clock.now += 2                                     # past the start-up wait
    out = []
    merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i)) for i in (1, 2, 5, 6)]), 1, out)     # a lacks 3, 4
    merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i)) for i in (1, 2, 3, 4)]), 2, out)     # b is behind
    merge.release(out)
    assert [orjson.loads(d)["data"]["a"] for _, d in out] == [1, 2, 3, 4]     # 5, 6 wait for b
    assert merge.done == 0                              # message 1 still has frames waiting
    merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i)) for i in (5, 6, 7)]), 3, out)
    merge.release(out)
    assert [orjson.loads(d)["data"]["a"] for _, d in out] == [1, 2, 3, 4, 5, 6]
    assert merge.done == 2                              # 7 waits for a (message 3)
    clock.now += 1.5                                    # a never sends 7: the window hands it on
    merge.release(out)
    assert [orjson.loads(d)["data"]["a"] for _, d in out] == [1, 2, 3, 4, 5, 6, 7] and merge.done == 3
    assert merge.collectors["a"]["filled"] == 2                 # 7: a hole of a's only once a goes past it
    merge.add(cluster.Frames("a", "BTCUSDT", [(8, _agg(8))]), 4, out)
    assert merge.collectors["a"]["filled"] == 3 and merge.collectors["b"]["filled"] == 0
    merge.release(out)
    for recv_us, data in out:
        worker.on_frames((data,), recv_us)
    batch = worker.take_batch()
    ids = [i for m in batch if isinstance(m, Rows) and m.stream == "aggTrade" for i in m.ids]
    assert ids == list(range(1, 8))
    assert [m for m in batch if isinstance(m, Gap) and m.row["action"] == "lost"] == []


def test_a_killed_or_late_collector_has_no_holes_for_what_it_never_passed():
    """Events handed on by the window while a collector sends nothing are its
    holes only once it goes on past them: none when it was killed (silent, then
    reported so), none for those it delivers late."""
    clock = Clock()
    worker = Worker(_cfg(), ["BTCUSDT"])
    merge = Merge(worker, 1.0, clock)
    clock.now += 2
    out = []
    for seq, i in enumerate(range(1, 4), 1):
        merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i))]), 2 * seq, out)
        merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i))]), 2 * seq + 1, out)
    merge.release(out)
    merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i)) for i in range(4, 10)]), 10, out)   # b: late or dead
    clock.now += 1.5
    merge.release(out)
    assert [orjson.loads(d)["data"]["a"] for _, d in out] == list(range(1, 10))
    assert merge.collectors["b"]["filled"] == 0
    merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i)) for i in (4, 5, 6)]), 11, out)      # late, not holes
    assert merge.collectors["b"]["filled"] == 0
    merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i)) for i in (8, 10)]), 12, out)        # 7 and 9 missed
    merge.add(cluster.Frames("a", "BTCUSDT", [(10, _agg(10))]), 13, out)
    assert merge.collectors["b"]["filled"] == 2
    merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i)) for i in range(11, 15)]), 14, out)   # b is killed
    clock.now += 1.5
    merge.release(out)
    clock.now += 40                                   # silent past COLLECTOR_SILENT_S: reported silent
    merge.release(out)
    merge.add(cluster.Frames("b", "BTCUSDT", [(20, _agg(20))]), 15, out)       # it comes back later
    assert merge.collectors["b"]["filled"] == 2 and merge.collectors["a"]["filled"] == 0


def test_holes_filled_count_only_what_a_collector_missed_while_it_was_recording():
    """Events before a collector's first one (it started later) are no hole of
    its own, nor are events once it has been silent long enough to be reported
    silent (stopped or gone)."""
    clock = Clock()
    worker = Worker(_cfg(), ["BTCUSDT"])
    merge = Merge(worker, 1.0, clock)
    clock.now += 2
    out = []
    merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i)) for i in (1, 2, 3, 4)]), 1, out)
    merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i)) for i in (3, 4)]), 2, out)      # b starts at 3
    merge.release(out)
    merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i)) for i in (5, 6)]), 3, out)      # b misses 5
    merge.add(cluster.Frames("b", "BTCUSDT", [(i, _agg(i)) for i in (6,)]), 4, out)
    clock.now += 1.5
    merge.release(out)
    assert [orjson.loads(d)["data"]["a"] for _, d in out] == [1, 2, 3, 4, 5, 6]
    assert merge.collectors["b"]["filled"] == 1 and merge.collectors["a"]["filled"] == 0
    clock.now += 40                                     # b is gone (silent past COLLECTOR_SILENT_S)
    merge.add(cluster.Frames("a", "BTCUSDT", [(i, _agg(i)) for i in (7, 8, 9)]), 5, out)
    clock.now += 1.5
    merge.release(out)
    assert [orjson.loads(d)["data"]["a"] for _, d in out][-3:] == [7, 8, 9]
    assert merge.collectors["b"]["filled"] == 1


def test_the_roles_figures_reach_prometheus():
    from prometheus_client import CollectorRegistry, generate_latest

    from binance_streamer.metrics import Collector
    snap = {"state": "RUNNING", "updated": 100.0, "pid": None,
            "processes": [{"name": "worker-0", "role": "worker", "pid": 1, "state": "RUNNING", "restarts": 0}],
            "children": {"worker-0": {
                "publisher": {"buffer_bytes": 512, "published": 40, "publish_errors": 3, "dropped_frames": 0},
                "sink": {"num_pending": 7, "collectors": {"a": {"last_message_age_s": 0.5,
                                                                "holes_filled_by_others": 12}}}}}}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(lambda: snap, None, usage=lambda pid: None, clock=lambda: 100.0))
    text = generate_latest(registry).decode()
    for line in ('binance_streamer_collector_publish_errors_total{process="worker-0"} 3.0',
                 'binance_streamer_sink_pending_messages{process="worker-0"} 7.0',
                 'binance_streamer_sink_holes_filled_total{collector="a",process="worker-0"} 12.0'):
        assert line in text, text


def test_a_sink_resuming_before_the_last_row_on_disk_is_no_gap_one_machine_still_ledgers_it():
    from binance_streamer.sequence import Sequencer, gap_row
    for replays, want in ((True, None), (False, "lost")):
        seq = Sequencer("spot", replays=replays)
        seq.accept("BTCUSDT", "bookTicker", [100, 105, 110], False, 0.0)
        written, _ = seq.reported("BTCUSDT", gap_row(1, "bookTicker", "start", None, 104, "lost"), 1)
        assert (written and written["action"]) == want
        # after the last row on disk: a hole either way
        written, _ = seq.reported("BTCUSDT", gap_row(1, "bookTicker", "start", None, 120, "lost"), 1)
        assert written["action"] == "lost"


def test_a_sink_resumed_after_its_consumers_position_ledgers_no_start_hole_unless_depth_ids_show_one():
    from binance_streamer.sequence import RESUMED, Sequencer, gap_row

    def start(stream, first, resumed, prev=None):
        row = gap_row(1, stream, "start", None, first, "lost")
        if resumed:
            row[RESUMED] = prev
        return row
    for market, prev in (("spot", None), ("usdm", 110)):
        seq = Sequencer(market, replays=True)
        seq.accept("BTCUSDT", "bookTicker", [100, 105, 110], False, 0.0)
        seq.accept("BTCUSDT", "depth", [100, 105, 110], False, 0.0)
        # the consumer's position: what comes next follows the disk, whatever bookTicker's ids say
        assert seq.reported("BTCUSDT", start("bookTicker", 120, True), 1) == (None, None)
        # depth must link to the last diff written (spot: U = u + 1; USD-M: pu = u)
        assert seq.reported("BTCUSDT", start("depth", 111, True, prev), 1) == (None, None)
        written, _ = seq.reported("BTCUSDT", start("depth", 130, True, 125 if prev else None), 1)
        assert written["action"] == "lost" and RESUMED not in written
        # a sink with a new consumer (no position): a hole, as before
        written, _ = seq.reported("BTCUSDT", start("bookTicker", 130, False), 1)
        assert written["action"] == "lost"


def test_a_full_collector_buffer_drops_the_oldest_and_says_so():
    import threading
    from types import SimpleNamespace

    from binance_streamer.collector import Publisher
    cfg = SimpleNamespace(collector_buffer_bytes=3000, nats_stream="BINANCE", market="spot", stop_timeout=1.0)
    pub = Publisher(cfg, "a", threading.Event())
    for i in range(20):
        pub.put(cluster.Frames("a", "BTCUSDT", [(1000 + i, _agg(i))]))
    assert pub.bytes <= 3000 and pub.dropped_total > 0
    assert pub.bytes == sum(len(item[2]) for item in pub.queue)
    kept = [cluster.decode(item[2]).frames[0][0] for item in list(pub.queue)[1:]]
    assert kept == list(range(1020 - len(kept), 1020))                # the newest, in order
    note = cluster.decode(pub.queue[0][2])                            # where they were: before the kept ones
    assert note == cluster.Dropped("a", "BTCUSDT", pub.dropped_total, 1000, 1000 + pub.dropped_total - 1)
    assert pub.queue[0][1] == "BINANCE.spot.BTCUSDT"
    ids = [item[0] for item in pub.queue]
    assert len(set(ids)) == len(ids) and all(i.startswith("a:") for i in ids)


# -- holes that do not show in ids (bookTicker): judged from each collector's runs -------------------------

def _ticker(u):
    d = {"u": u, "s": "BTCUSDT", "b": "1.0", "B": "2.0", "a": "1.1", "A": "3.0"}
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": d})


TICKER = "btcusdt@bookTicker"


def _tickers(who, ids):
    return cluster.Frames(who, "BTCUSDT", [(1_700_000_000_000_000 + u, _ticker(u)) for u in ids])


def _event(who, event):
    return cluster.ConnectionEvent(who, "BTCUSDT", event, [TICKER], 1, {})


def _run_merge(batches):
    """Feed ``batches`` (lists of messages, each list one fetch) to a sink's
    merge and worker; the bookTicker ids written and the lost rows."""
    from binance_streamer.sink import Feed
    clock = Clock()
    worker = Worker(_cfg(), ["BTCUSDT"])
    merge = Merge(worker, 1.0, clock)
    worker.hole_detail = merge.detail
    feed = Feed.__new__(Feed)
    feed.worker, feed.merge = worker, merge
    clock.now += 2
    seq = 0
    for batch in batches:
        out = []
        for msg in batch:
            seq += 1
            merge.add(msg, seq, out)
        merge.release(out)
        feed._hand(out)
    clock.now += 5                                       # whatever waited for a collector goes on
    out = []
    merge.release(out)
    feed._hand(out)
    batch = worker.take_batch()
    ids = [i for m in batch if isinstance(m, Rows) and m.stream == "bookTicker" for i in m.ids]
    lost = [m.row for m in batch if isinstance(m, Gap) and m.row["action"] == "lost" and m.row["reason"] != "start"]
    return ids, [(g["last_good_id"], g["first_id_after"], g["detail"]) for g in lost], merge


def test_a_reconnect_read_in_one_fetch_is_ledgered_at_the_hole_not_before_it():
    # the connection events reach the sink with the frames around them, before any is handed on
    ids, lost, _ = _run_merge([[_tickers("a", range(1, 4))],
                               [_tickers("a", range(4, 11)), _event("a", "disconnected"), _event("a", "connected"),
                                _tickers("a", range(20, 25))]])
    assert ids == list(range(1, 11)) + list(range(20, 25))
    assert lost == [(10, 20, "in every collector (a)")]


def test_a_hole_both_collectors_had_with_their_reconnects_interleaved_is_ledgered():
    # a reconnects while b is still connected, then b while a is: each time "another collector was connected",
    # yet both missed 11..19
    both = [_tickers("a", range(1, 11)), _tickers("b", range(1, 11))]
    a_back = [_event("a", "disconnected"), _event("a", "connected"), _tickers("a", range(20, 23))]
    b_back = [_event("b", "disconnected"), _event("b", "connected"), _tickers("b", range(20, 23))]
    for batches in ([both, a_back, b_back], [both, a_back + b_back], [both, b_back, a_back]):
        ids, lost, _ = _run_merge(batches)
        assert ids == list(range(1, 11)) + [20, 21, 22], batches
        assert lost == [(10, 20, "in every collector (a, b)")], batches


def test_a_hole_one_collector_had_is_no_hole_whatever_the_order():
    both = [_tickers("a", range(1, 11)), _tickers("b", range(1, 11))]
    a_back = [_event("a", "disconnected"), _event("a", "connected"), _tickers("a", range(20, 23))]
    b_all = [_tickers("b", range(11, 23))]
    for batches in ([both, a_back, b_all], [both, b_all, a_back], [both, a_back + b_all]):
        ids, lost, merge = _run_merge(batches)
        assert ids == list(range(1, 23)) and lost == [], (batches, lost)


def test_a_collectors_dropped_frames_are_ledgered_unless_another_had_them():
    note = cluster.Dropped("a", "BTCUSDT", 9, 1, 2)     # a's buffer overflowed: 11..19 never left it
    alone = [[_tickers("a", range(1, 11))], [note, _tickers("a", range(20, 23))]]
    ids, lost, merge = _run_merge(alone)
    assert ids == list(range(1, 11)) + [20, 21, 22]
    assert lost == [(10, 20, "in every collector (a); dropped by a (buffer full while NATS was away)")]
    assert merge.collectors["a"]["dropped"] == 9
    ids, lost, _ = _run_merge([[_tickers("b", range(1, 23))]] + alone)
    assert ids == list(range(1, 23)) and lost == []
    # a later hole both have is not put down to that drop
    later = [_event(c, "connected") for c in ("a", "b")] + [_tickers(c, range(30, 33)) for c in ("a", "b")]
    ids, lost, _ = _run_merge([[_tickers("b", range(1, 23))]] + alone + [later])
    assert ids == list(range(1, 23)) + [30, 31, 32] and lost == [(22, 30, "in every collector (a, b)")]


def test_frames_a_connection_read_after_its_disconnected_event_are_no_hole():
    # at a stop, a reader hands on what its socket still held after the connection was reported closed
    ids, lost, _ = _run_merge([[_tickers("a", range(1, 11)), _tickers("b", range(1, 11))],
                               [_event("a", "disconnected"), _tickers("a", [11]), _tickers("b", range(11, 15))],
                               [_event("b", "disconnected"), _tickers("b", [15, 16])]])
    assert ids == list(range(1, 17)) and lost == []


def test_after_a_nats_outage_the_sink_waits_for_every_collector_before_handing_on():
    # both collectors kept their messages while NATS was away; a's buffer overflowed (11..14 lost), b's did not.
    # a's come first: the sink, which heard from no one meanwhile, waits for b before it hands 15.. on
    clock = Clock()
    worker = Worker(_cfg(), ["BTCUSDT"])
    merge = Merge(worker, 1.0, clock)
    clock.now += 2
    out = []
    merge.add(_tickers("a", range(1, 11)), 1, out)
    merge.add(_tickers("b", range(1, 11)), 2, out)
    merge.release(out)
    clock.now += 30                                      # the outage
    merge.add(cluster.Dropped("a", "BTCUSDT", 4, 1, 2), 3, out)
    merge.add(_tickers("a", range(15, 21)), 4, out)
    merge.release(out)
    assert [orjson.loads(d)["data"]["u"] for _, d in out] == list(range(1, 11))
    clock.now += 0.5
    merge.add(_tickers("b", range(11, 21)), 5, out)
    merge.release(out)
    assert [orjson.loads(d)["data"]["u"] for _, d in out] == list(range(1, 21))


def test_a_note_being_sent_is_not_changed_a_new_one_follows_it():
    import threading
    from types import SimpleNamespace

    from binance_streamer.collector import Publisher
    cfg = SimpleNamespace(collector_buffer_bytes=3000, nats_stream="BINANCE", market="spot", stop_timeout=1.0)
    pub = Publisher(cfg, "a", threading.Event())
    for i in range(20):
        pub.put(cluster.Frames("a", "BTCUSDT", [(1000 + i, _agg(i))]))
    pub.sending = pub.queue[0]                           # the publisher is sending the note
    sent = bytes(pub.queue[0][2])
    for i in range(20, 30):
        pub.put(cluster.Frames("a", "BTCUSDT", [(1000 + i, _agg(i))]))
    assert pub.queue[0][2] == sent and pub.queue[0] is pub.sending
    first, second = cluster.decode(pub.queue[0][2]), cluster.decode(pub.queue[1][2])
    assert isinstance(second, cluster.Dropped) and second.first_us == first.last_us + 1
    assert first.frames + second.frames == pub.dropped_total
    assert pub.bytes == sum(len(item[2]) for item in pub.queue) <= 3000


# -- a sink's consumer and the subjects it takes: never another sink's --------------------------------------

def _sink_cfg(**settings):
    return config.load(None, {"market": "spot", "symbols": ["BTCUSDT"], "streams": ["aggTrade", "bookTicker"],
                              "validate_symbols": False, "role": "sink", "sink_id": "h", "redundancy_window": 0.0,
                              **settings})


def _feed(cfg):
    import threading

    from binance_streamer.sink import Feed
    return Feed(cfg, Worker(cfg, cfg.symbols), cfg.symbols, 0, threading.Event(), None)


class FakeJetStream:
    """The consumer calls of nats-py's JetStream context, on a dict."""

    def __init__(self, *infos):
        self.consumers = {i.name: i for i in infos}

    async def consumer_info(self, stream, name):
        from nats.js.errors import NotFoundError
        if name not in self.consumers:
            raise NotFoundError()
        return self.consumers[name]

    async def consumers_info(self, stream):
        return list(self.consumers.values())

    async def delete_consumer(self, stream, name):
        del self.consumers[name]

    async def add_consumer(self, stream, conf):
        from nats.js.api import ConsumerInfo
        self.consumers[conf.durable_name] = ConsumerInfo(name=conf.durable_name, stream_name=stream, config=conf,
                                                         created=None)

    async def pull_subscribe_bind(self, durable, stream):
        return durable


def _consumer(name, description, subjects, floor):
    from nats.js.api import ConsumerConfig, ConsumerInfo, SequenceInfo
    return ConsumerInfo(name=name, stream_name="BINANCE", created=None,
                        ack_floor=SequenceInfo(consumer_seq=floor, stream_seq=floor),
                        config=ConsumerConfig(durable_name=name, description=description, filter_subjects=subjects))


def test_sinks_of_other_markets_symbols_or_streams_never_share_a_consumer():
    names = {_feed(_sink_cfg(**s)).durable for s in ({}, {"market": "usdm"}, {"symbols": ["ETHUSDT"]},
                                                     {"streams": ["aggTrade"]})}
    assert len(names) == 4 and all(n.startswith("h-") for n in names), names
    assert _feed(_sink_cfg()).durable == _feed(_sink_cfg()).durable          # the same sink again: the same one


def test_a_sink_refuses_another_sinks_consumer_and_leaves_it_alone():
    import asyncio

    from binance_streamer.sink import Refused
    feed = _feed(_sink_cfg())
    other = _consumer(feed.durable, "binance-streamer sink h usdm worker 0, files in /elsewhere",
                      ["BINANCE.usdm.BTCUSDT"], 7)
    js = FakeJetStream(other)
    try:
        asyncio.run(feed._subscribe(js))
    except Refused as exc:
        text = str(exc)
    else:
        raise AssertionError("another sink's consumer was taken over")
    assert js.consumers == {feed.durable: other}
    assert "belongs to another sink" in text and "sink_id" in text and "\n" not in text


def test_a_sink_takes_its_own_consumer_over_after_a_symbols_change_from_where_it_was(caplog):
    import asyncio
    import logging

    from nats.js.api import DeliverPolicy
    feed = _feed(_sink_cfg(symbols=["BTCUSDT", "ETHUSDT"], symbols_per_worker=2))
    own = _consumer("h-spot-0-0ld", feed.owner, ["BINANCE.spot.BTCUSDT"], 41)
    js = FakeJetStream(own)
    with caplog.at_level(logging.INFO, logger="binance_streamer.sink"):
        asyncio.run(feed._subscribe(js))
    made = js.consumers[feed.durable].config
    assert list(js.consumers) == [feed.durable]
    assert made.deliver_policy == DeliverPolicy.BY_START_SEQUENCE and made.opt_start_seq == 42
    assert made.filter_subjects == ["BINANCE.spot.BTCUSDT", "BINANCE.spot.ETHUSDT"] and made.description == feed.owner
    assert "symbols or streams changed since consumer h-spot-0-0ld" in caplog.text


def test_a_message_of_another_market_or_symbol_is_never_written(caplog):
    from types import SimpleNamespace
    feed = _feed(_sink_cfg())

    def message(seq, subject, msg):
        meta = SimpleNamespace(sequence=SimpleNamespace(stream=seq), num_pending=0, timestamp=None)
        return SimpleNamespace(metadata=meta, subject=subject, data=cluster.encode(msg))
    mine = cluster.Frames("a", "BTCUSDT", [(1, _agg(1)), (2, _agg(2))])
    usdm = cluster.Frames("a", "BTCUSDT", [(3, _agg(3))])                # the same stream name, another market
    with caplog.at_level("ERROR", logger="binance_streamer.sink"):
        feed._take([message(1, "BINANCE.spot.BTCUSDT", mine), message(2, "BINANCE.usdm.BTCUSDT", usdm),
                    message(3, "BINANCE.spot.BTCUSDT", cluster.Frames("a", "ETHUSDT", [(4, _agg(4))])),
                    message(4, "BINANCE.usdm.BTCUSDT", usdm)])
    batch = feed.worker.take_batch()
    assert [i for m in batch if isinstance(m, Rows) for i in m.ids] == [1, 2]
    assert feed.foreign == 3 and feed.status()["foreign_messages"] == 3
    assert caplog.text.count("is not of this sink's market and symbols") == 1
    assert feed.merge.done == 4                          # refused messages are acknowledged with the rest


# -- health of the roles: about NATS, not the exchange, for a sink ------------------------------------------

def _role_snap(role, child):
    return {"role": role, "processes": [{"name": "worker-0", "role": "worker", "state": "RUNNING"},
                                        {"name": "writer", "role": "writer", "state": "RUNNING"}],
            "children": {"worker-0": {"connections": [], "streams": {}, **child}}}


def _health(role, child):
    from binance_streamer import status
    return status.health(_role_snap(role, child), 100.0, max_lag=10.0, min_free_disk=0, link_buffer_bytes=2**20)


SINK = {"consumer": "h-spot-0-x", "num_pending": 0, "nats_connected": True, "lag_s": 0.0, "last_error": None,
        "collectors": {"a": {"last_message_age_s": 0.2}}}


def test_a_sinks_health_is_about_nats_and_its_collectors():
    assert _health("sink", {"sink": SINK}) == {"state": "OK", "problems": []}
    down = _health("sink", {"sink": {**SINK, "nats_connected": False, "last_error": "ConnectionRefusedError"}})
    assert down["state"] == "DOWN" and down["problems"] == ["NATS is unreachable (worker-0: ConnectionRefusedError)"]
    lag = _health("sink", {"sink": {**SINK, "num_pending": 5000, "lag_s": 42.0}})
    assert lag["state"] == "DEGRADED" and "h-spot-0-x is 42 s behind NATS (5000 messages pending" in lag["problems"][0]
    silent = _health("sink", {"sink": {**SINK, "collectors": {"a": {"last_message_age_s": 0.2},
                                                              "b": {"last_message_age_s": 95.0}}}})
    assert silent == {"state": "DEGRADED", "problems": ["worker-0: collector b silent for 95 s"]}


def test_a_collectors_health_says_when_nats_does_not_take_its_messages():
    conn = {"connections": [{"name": "public", "connected": True}]}
    pub = {"buffer_messages": 0, "buffer_bytes": 0, "buffer_limit_bytes": 1000, "nats_connected": True,
           "last_error": None}
    assert _health("collector", {**conn, "publisher": pub})["state"] == "OK"
    waiting = {**pub, "buffer_messages": 40, "buffer_bytes": 500, "nats_connected": False, "last_error": "TimeoutError"}
    h = _health("collector", {**conn, "publisher": waiting})
    assert h["state"] == "DEGRADED"
    assert "NATS does not take its messages (TimeoutError); 40 messages" in h["problems"][0]
    h = _health("collector", {**conn, "publisher": {**waiting, "buffer_bytes": 950}})
    assert h["state"] == "DOWN" and "its buffer is full" in h["problems"][0]
    assert _health("collector", {"connections": [{"name": "public", "connected": False}], "publisher": pub})["state"] \
        == "DOWN"                                       # and its exchange connections, as on one machine


def test_a_nats_url_of_another_scheme_is_refused_in_one_line():
    for url in ("http://127.0.0.1:4222", "127.0.0.1:4222"):
        try:
            _sink_cfg(nats_url=[url])
        except config.ConfigError as exc:
            assert "nats_url" in str(exc) and "nats://host:4222" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{url} was accepted")
    assert _sink_cfg(nats_url=["nats://a:4222", "tls://b:4222"]).nats_url == ["nats://a:4222", "tls://b:4222"]


def test_nats_lost_is_a_warning_and_back_is_info(caplog):
    import asyncio
    import logging
    lost, back = cluster.watchers("sink h-spot-0-x")
    with caplog.at_level(logging.INFO, logger="binance_streamer.cluster"):
        asyncio.run(lost())
        asyncio.run(back())
    assert [(r.levelname, "lost" in r.message, "back" in r.message) for r in caplog.records] == \
        [("WARNING", True, False), ("INFO", False, True)]


def test_a_collectors_stop_says_what_was_published_not_rows_flushed():
    from binance_streamer.statusreport import stop_outcome

    def st(role, **pub):
        return {"role": role, "children": {"worker-0": {"publisher": {"buffer_messages": 0, "dropped_frames": 0,
                                                                      **pub}}}}
    assert stop_outcome(st("collector"), "/logs") == "every frame read was published to NATS"
    left = stop_outcome(st("collector", buffer_messages=12), "/logs")
    assert left.startswith("12 messages were not taken by NATS before the stop") and "flushed" not in left
    assert "7 frames dropped" in stop_outcome(st("collector", dropped_frames=7), "/logs")
    assert stop_outcome({"role": "sink", "children": {}}, "/logs") == "every row was flushed"


def test_a_collectors_publisher_stops_by_its_deadline_when_nats_takes_nothing(monkeypatch):
    # NATS answers nothing (each publish times out) and closing hangs: the stop still ends by its deadline
    import asyncio
    import threading
    import time
    from types import SimpleNamespace

    from binance_streamer import collector

    class Hanging:
        async def publish(self, *args, **kwargs):
            await asyncio.sleep(0.3)
            raise asyncio.TimeoutError()

        async def stream_info(self, name):
            return None

        def jetstream(self):
            return self

        async def close(self):
            await asyncio.sleep(3600)

    async def connect(cfg, name):
        return Hanging()
    monkeypatch.setattr(collector.cluster, "connect", connect)
    cfg = SimpleNamespace(collector_buffer_bytes=10**6, nats_stream="BINANCE", market="spot", stop_timeout=20.0,
                          nats_url=["nats://127.0.0.1:4222"], nats_replicas=1)
    stop = threading.Event()
    pub = collector.Publisher(cfg, "a", stop)
    pub.put(cluster.Frames("a", "BTCUSDT", [(1, _agg(1))]))
    began = []

    async def run():
        task = asyncio.ensure_future(pub.run())
        while not pub.trouble.errors:                               # publishing, and failing
            await asyncio.sleep(0.05)
        began.append(time.monotonic())
        pub.deadline = began[0] + 0.5                       # the stop: what waits may leave for 0.5 s
        stop.set()
        await asyncio.wait_for(task, 5.0)
    asyncio.run(run())
    assert time.monotonic() - began[0] < 0.5 + 0.3 + 0.2 + collector.CLOSE_TIMEOUT + 0.5
    assert pub.status()["buffer_messages"] == 1 and pub.trouble.errors > 0      # kept, and said so at the stop


def test_a_collectors_status_and_summary_show_what_it_publishes_not_rows_or_books():
    from binance_streamer.statusreport import collector_summary, format_status
    pub = {"collector": "a", "buffer_messages": 3, "buffer_bytes": 2**20, "published": 900, "publish_errors": 0,
           "dropped_frames": 0, "nats_connected": True, "last_error": None}
    report = {"state": "running", "pid": 1, "uptime_s": 5, "market": "spot", "data_dir": "/d", "role": "collector",
              "health": {"state": "OK", "problems": []}, "processes": [], "connections": [],
              "streams": {"BTCUSDT/trade": {"messages": 10, "messages_per_s": 2.0, "last_message_age_s": 0.1,
                                            "reconnects": 0, "gaps": 0, "resyncs": None, "rows_today": 0,
                                            "bytes_today": 0}},
              "collector": {"worker-0": pub}}
    text = format_status(0, report)
    assert "rows today" not in text and "books in sync" not in text and "{" not in text, text
    assert "collector a, NATS up, 3 messages" in text and "900 published" in text
    line = collector_summary({"worker-0": {"publisher": pub}}, 100, 10.0)
    assert line == "10 msg/s read, 900 messages published to NATS, 3 waiting (1.0 MB), 0 frames dropped"


def test_status_keeps_usdms_long_series_names_apart_from_their_numbers():
    from binance_streamer.statusreport import format_status
    row = {"messages": 0, "messages_per_s": None, "last_message_age_s": None, "reconnects": None, "gaps": 0,
           "resyncs": None, "rows_today": 30, "bytes_today": 0}
    report = {"state": "running", "pid": 1, "uptime_s": 5, "market": "usdm", "data_dir": "/d", "role": "all",
              "health": {"state": "OK", "problems": []}, "processes": [], "connections": [],
              "streams": {"BTCUSDT/globalLongShortAccountRatio_5m": row, "BTCUSDT/trade": row}}
    lines = format_status(0, report).splitlines()
    header = next(line for line in lines if line.startswith("symbol/stream"))
    end = header.index("msg/s") + len("msg/s")
    assert [line[end - 1] for line in lines if line.startswith("BTCUSDT/")] == ["-", "-"]      # under msg/s
    assert any(line.startswith("connection ") for line in lines)
    assert not any(line.startswith("connection ") for line in format_status(0, {**report, "role": "sink"}).splitlines())


def test_a_nats_url_is_logged_without_its_credentials():
    assert cluster.shown("nats://user:secret@n1:4222") == "nats://n1:4222"
    assert cluster.shown("tls://s3cr3t-token@nats.example.com") == "tls://nats.example.com"
    assert "secret" not in cluster.shown(urllib.parse.urlparse("nats://user:secret@10.0.0.5:4222"))


# -- the errors a user meets -------------------------------------------------------------


def _nats_cfg(**extra):
    from types import SimpleNamespace
    return SimpleNamespace(nats_url=["nats://user:pw@n1:4222"], nats_stream="BINANCE", nats_replicas=3, **extra)


def test_jetstream_off_or_too_many_replicas_say_what_to_change_and_are_told_from_an_outage():
    from nats.errors import NoRespondersError
    from nats.js.errors import APIError, ServiceUnavailableError
    for exc in (ServiceUnavailableError(), NoRespondersError()):
        text, fatal = cluster.problem(_nats_cfg(), exc)
        assert fatal and "JetStream is not enabled on the NATS server at nats://n1:4222" in text
        assert "start nats-server with -js" in text and "pw" not in text
    for exc in (APIError(code=500, err_code=10005, description="insufficient resources"),
                APIError(code=500, err_code=10074, description="replicas > 1 not supported in non-clustered mode")):
        text, fatal = cluster.problem(_nats_cfg(), exc)
        assert fatal and "cannot make stream BINANCE with nats_replicas=3" in text and "lower nats_replicas" in text
    text, fatal = cluster.problem(_nats_cfg(), ConnectionRefusedError(111, "Connect call failed"))
    assert not fatal and text == "ConnectionRefusedError: [Errno 111] Connect call failed"


def test_a_nats_failure_is_logged_once_per_cause_not_once_per_retry(caplog):
    from nats.js.errors import ServiceUnavailableError
    clock = [100.0]
    trouble = cluster.Trouble(_nats_cfg(), "sink s1", clock=lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="binance_streamer.cluster"):
        for _ in range(5):
            trouble.failed(ServiceUnavailableError())
        trouble.failed(ConnectionRefusedError(111, "refused"))
        trouble.failed(ConnectionRefusedError(111, "refused"))
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]
    assert caplog.records[0].getMessage().startswith("sink s1: cannot use JetStream: JetStream is not enabled")
    clock[0] = 112.0
    assert trouble.errors == 7 and trouble.status() == {
        "last_error": "ConnectionRefusedError: [Errno 111] refused", "last_error_age_s": 12.0,
        "nats_config_error": False}


def test_a_stop_note_and_the_process_in_a_message_id_survive_the_trip():
    note = cluster.Stopped("a", "BTCUSDT", 5)
    assert cluster.decode(cluster.encode(note)) == note
    msg_id = cluster.message_id("host:1", "4242.1796000000000000", 7)
    assert cluster.boot_of(msg_id) == "4242.1796000000000000" and cluster.boot_of(None) is None
    assert cluster.describe_boot("4242.1796000000000000") == "pid 4242 started 00:53:20Z"


def test_a_restart_is_no_duplicate_two_processes_at_once_are_said_once(caplog):
    from binance_streamer.roster import Roster
    clock = [0.0]
    roster = Roster(["BTCUSDT", "ETHUSDT"], lambda: clock[0], 30.0)
    for boot in ("1.1000000", "1.1000000", "2.2000000", "2.2000000"):        # a restart: 1 replaced by 2
        assert roster.heard("a", "BTCUSDT", boot) is None
    assert roster.state("a", 0.1) == "active"
    said = [roster.heard("a", "BTCUSDT", boot) for boot in ("1.1000000", "2.2000000", "1.1000000")]
    assert said[0].startswith("sink: collector id a is used by two processes at once (pid 1 started") and \
        said[1:] == [None, None], said
    assert roster.state("a", 0.1) == "DUPLICATE" and roster.duplicate_of("a")[0].startswith("pid 1 ")
    clock[0] = 31.0                        # one of them gone: no more mixing seen for `silent` seconds
    assert roster.state("a", 0.1) == "active"


def test_a_collector_that_stopped_cleanly_is_stopped_not_silent():
    from binance_streamer.roster import Roster
    clock = [0.0]
    roster = Roster(["BTCUSDT"], lambda: clock[0], 30.0)
    roster.heard("a", "BTCUSDT", "1.1")
    roster.heard("b", "BTCUSDT", "2.2")
    roster.heard("a", "BTCUSDT", "1.1", stopped=True)
    clock[0] = 40.0
    assert roster.state("a", 40.0) == "stopped" and roster.state("b", 40.0) == "silent"
    assert roster.unpublished() == {"BTCUSDT": 40}
    roster.heard("a", "BTCUSDT", "3.3")        # started again
    assert roster.state("a", 0.0) == "active" and roster.unpublished() == {}


def test_a_sinks_health_names_stopped_duplicate_collectors_and_unpublished_symbols():
    collectors = {"a": {"last_message_age_s": 95.0, "state": "stopped"},
                  "b": {"last_message_age_s": 0.1, "state": "DUPLICATE",
                        "duplicate": ["pid 1 started 01:00:00Z", "pid 2 started 01:00:05Z"]}}
    h = _health("sink", {"sink": {**SINK, "collectors": collectors, "unpublished_symbols": {"ETHUSDT": 31}}})
    assert h == {"state": "DEGRADED", "problems": [
        "worker-0: collector id b is used by two processes at once (pid 1 started 01:00:00Z and pid 2 started "
        "01:00:05Z); give each its own collector_id", "worker-0: no collector publishes ETHUSDT (nothing for 31 s)"]}
    off = _health("sink", {"sink": {**SINK, "nats_connected": False, "nats_config_error": True,
                                    "last_error": "JetStream is not enabled"}})
    assert off["problems"] == ["NATS is not usable (worker-0: JetStream is not enabled)"]


def test_a_health_problem_is_named_in_the_summary_once_while_it_lasts():
    from binance_streamer.status import health_news
    said, seen = health_news({"problems": ["NATS is unreachable (worker-0: refused)"]}, ())
    assert said == " (NATS is unreachable (worker-0: refused))"
    said, seen = health_news({"problems": ["NATS is unreachable (worker-0: refused)"]}, seen)
    assert said == " (1 problem as reported before)"
    said, seen = health_news({"problems": ["NATS is unreachable (worker-0: refused)", "x silent for 35 s"]}, seen)
    assert said == " (x silent for 35 s; and 1 as reported before)"
    said, seen = health_news({"problems": ["NATS is unreachable (worker-0: refused)", "x silent for 40 s"]}, seen)
    assert said == " (2 problems as reported before)"
    assert health_news({"problems": []}, seen) == ("", ())


def test_status_shows_each_collectors_state_and_the_last_errors_age():
    from binance_streamer.statusreport import _cluster_lines, killed_outcome
    sink = {**SINK, "last_stream_seq": 9, "acked_stream_seq": 9, "nats_errors": 3, "last_error": "TimeoutError",
            "last_error_age_s": 12.4, "unpublished_symbols": {"ETHUSDT": 40},
            "collectors": {"a": {"last_message_age_s": 0.2, "frames": 5, "holes_filled_by_others": 0,
                                 "dropped_frames": 0, "state": "DUPLICATE", "duplicate": ["pid 1", "pid 2"]},
                           "b": {"last_message_age_s": 50.0, "frames": 5, "holes_filled_by_others": 0,
                                 "dropped_frames": 0, "state": "stopped"}}}
    lines = _cluster_lines({"sink": {"worker-0": sink}})
    assert "; last error 12 s ago: TimeoutError" in lines[1]
    assert [line.split()[:2] for line in lines[3:5]] == [["a", "DUPLICATE"], ["b", "stopped"]]
    assert lines[3].endswith("(pid 1 and pid 2)") and lines[5] == "ETHUSDT: no collector published it for 40 s"
    assert "stays in JetStream" in killed_outcome("sink") and "not yet flushed" in killed_outcome("all")


def test_a_first_connection_that_times_out_says_what_to_check():
    import nats.errors
    text, fatal = cluster.problem(_nats_cfg(), cluster.unanswered(nats.errors.TimeoutError()))
    assert not fatal and text.startswith("TimeoutError: no NATS server answered within 2 s: check that nats_url")
    refused = ConnectionRefusedError(111, "refused")
    assert cluster.unanswered(refused) is refused


def test_start_says_nats_is_not_usable_and_that_the_recorder_keeps_trying():
    from binance_streamer import daemon
    cfg = _nats_cfg(log_dir="/l")
    code, said = daemon.nats_unreached(cfg, 42, 20, {
        "worker-0": {"nats_connected": False, "last_error": "ConnectionRefusedError: refused"},
        "worker-1": {"nats_connected": True, "last_error": "TimeoutError"}})
    assert code == 1 and said == (
        "started (pid 42), but NATS at nats://n1:4222 is not usable after 20 s: ConnectionRefusedError: refused; "
        "the recorder keeps retrying: check nats_url and the NATS server, see --daemon status and /l, or stop it "
        "with --daemon stop")


def test_start_of_a_collector_that_never_reaches_nats_answers_one_line_not_a_tuple(tmp_path):
    from binance_streamer import daemon, status
    cfg = _nats_cfg(role="collector", run_dir=str(tmp_path), log_dir="/l", data_dir="/d")
    failing = {"nats_connected": False, "publish_errors": 3, "last_error": "ConnectionRefusedError: refused"}
    status.write_status(str(tmp_path), {"state": "RUNNING", "pid": 42, "children": {
        "worker-0": {"connections": [{"connected": True}], "publisher": failing}}})
    code, said = daemon._connected(cfg, 42, 5.0)
    assert code == 1 and isinstance(said, str)
    assert said.startswith("started (pid 42), but NATS at nats://n1:4222 is not usable after ")


def test_a_collector_says_it_is_alive_for_a_symbol_it_had_nothing_of_for_a_while():
    import threading
    from types import SimpleNamespace

    from binance_streamer import collector
    cfg = SimpleNamespace(collector_buffer_bytes=10**6, nats_stream="BINANCE", market="spot", nats_url=["nats://n1"],
                          nats_replicas=1)
    pub = collector.Publisher(cfg, "a", threading.Event())
    pub.put(cluster.Frames("a", "BTCUSDT", [(1, _agg(1))]))
    now = pub.last_put["BTCUSDT"]
    pub.beat(["BTCUSDT", "ETHUSDT"], now + 1)
    assert len(pub.queue) == 1                                  # NATS does not take messages: nothing to say
    pub.connected = True
    pub.beat(["BTCUSDT", "ETHUSDT"], now + 1)
    assert [type(q[3]).__name__ + " " + q[3].symbol for q in pub.queue] == ["Frames BTCUSDT", "Alive ETHUSDT"]
    pub.beat(["BTCUSDT", "ETHUSDT"], now + cluster.HEARTBEAT_S - 0.5)
    assert len(pub.queue) == 2                                  # each had a message less than HEARTBEAT_S ago
    pub.beat(["BTCUSDT", "ETHUSDT"], now + cluster.HEARTBEAT_S + 0.5)
    assert [type(q[3]).__name__ + " " + q[3].symbol for q in pub.queue][2:] == ["Alive BTCUSDT", "Alive ETHUSDT"]
    assert cluster.decode(pub.queue[1][2]) == pub.queue[1][3]
