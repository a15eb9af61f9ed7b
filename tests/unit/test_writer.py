import errno
import os
import time

import pytest

from binance_streamer import messages
from binance_streamer.messages import Rows
from binance_streamer import config, csvfiles, writer as writermod
from binance_streamer.sequence import gap_row
from binance_streamer.recovery import repair_torn_line
from binance_streamer.writer import Writer


def _cfg(tmp_path, **kw):
    return config.load(None, {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"),
                              "log_dir": str(tmp_path / "logs"), "symbols": "BTCUSDT", **kw})


def _agg(a, backfilled=0):
    return f"{a},1.00,2.00,{a},{a},1000,True,True,1000,5,{backfilled}\n"


def _read(tmp_path, stream, day="2026-01-01"):
    with open(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", stream, day)) as f:
        return f.read().splitlines()


def test_header_once_and_exactly_once_rows(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1, 2, 3], [_agg(1), _agg(2), _agg(3)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [2, 3, 4], [_agg(2), _agg(3), _agg(4)])
    w.close()
    lines = _read(tmp_path, "aggTrade")
    assert lines[0] == ",".join(csvfiles.columns("spot", "aggTrade"))
    assert [int(x.split(",")[0]) for x in lines[1:]] == [1, 2, 3, 4]
    assert w.seq.duplicates == 2


def test_torn_line_is_cut_and_last_id_recovered(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1, 2], [_agg(1), _agg(2)])
    w.close()
    path = csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "aggTrade", "2026-01-01")
    with open(path, "a") as f:
        f.write("3,1.00,2.0")          # a crash in the middle of a line
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    assert w2.seq.last[("BTCUSDT", "aggTrade")] == 2 and w2.torn_repaired == 1
    w2.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [3], [_agg(3)])
    w2.close()
    assert [int(x.split(",")[0]) for x in _read(tmp_path, "aggTrade")[1:]] == [1, 2, 3]


def test_repair_of_a_file_that_is_one_torn_line(tmp_path):
    p = tmp_path / "f.csv"
    p.write_bytes(b"no newline at all")
    fd = os.open(p, os.O_RDWR)
    assert repair_torn_line(fd, str(p)) == (17, 0)
    os.close(fd)
    assert p.read_bytes() == b""


def test_unexplained_jump_opens_a_hole_that_backfill_fills(tmp_path):
    requests = []
    w = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1, 2], [_agg(1), _agg(2)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [6, 7], [_agg(6), _agg(7)])
    assert requests == [("BTCUSDT", "aggTrade", 3, 5)]
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [3, 4, 5], [_agg(3, 1), _agg(4, 1), _agg(5, 1)], backfilled=True)
    w.close()
    ids = [int(x.split(",")[0]) for x in _read(tmp_path, "aggTrade")[1:]]
    assert sorted(ids) == [1, 2, 3, 4, 5, 6, 7] and len(ids) == 7
    gaps = _read(tmp_path, "gaps", day=csvfiles.DayOf()(int(w.clock() * 1000)))
    actions = [g.split(",")[7] for g in gaps[1:]]
    assert actions == ["backfill_requested", "backfilled"]


def test_worker_reported_gap_explains_the_jump(tmp_path):
    requests = []
    w = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w.add_rows("BTCUSDT", "trade", "2026-01-01", [10], ["x\n"])
    w.add_gap("BTCUSDT", gap_row(1, "trade", "reconnect", 10, 20, "lost"))
    w.add_rows("BTCUSDT", "trade", "2026-01-01", [20], ["y\n"])
    w.close()
    gaps = _read(tmp_path, "gaps", day="1970-01-01")
    assert len(gaps) == 2 and ",reconnect,10,20," in gaps[1]
    assert requests == []


def test_start_report_filled_from_disk_or_dropped(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_gap("BTCUSDT", gap_row(1, "aggTrade", "start", None, 5, ""))   # nothing before: no gap
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [5], [_agg(5)])
    w.add_gap("BTCUSDT", gap_row(2, "aggTrade", "start", None, 6, ""))   # continues exactly: no gap
    w.close()
    assert not os.path.exists(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "gaps", "1970-01-01"))


def test_hole_not_filled_in_time_is_reported_lost(tmp_path):
    now = [1000.0]
    w = Writer(_cfg(tmp_path), clock=lambda: now[0])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [5], [_agg(5)])
    now[0] += 500
    w.flush(force=True)
    w.close()
    gaps = _read(tmp_path, "gaps", day=csvfiles.DayOf()(1000 * 1000))
    assert [g.split(",")[7] for g in gaps[1:]] == ["backfill_requested", "lost"]


@pytest.mark.parametrize("partial", [False, True])
def test_full_disk_keeps_rows_and_corrupts_nothing(tmp_path, monkeypatch, partial):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)])
    w.flush(force=True)
    real_write = os.write
    calls = []

    def full(fd, data):
        calls.append(len(data))
        if len(calls) == 1 and partial:
            return real_write(fd, data[:7])      # part of a line reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writermod.os, "write", full)
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [2, 3], [_agg(2), _agg(3)])
    w.flush(force=True)
    assert w.write_errors >= 1 and w.pending_rows == 2
    monkeypatch.setattr(writermod.os, "write", real_write)
    w.flush(force=True)
    w.close()
    lines = _read(tmp_path, "aggTrade")
    assert lines[1:] == [_agg(1).strip(), _agg(2).strip(), _agg(3).strip()]


def test_gap_fields_are_quoted_when_needed(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_gap("BTCUSDT", gap_row(1, "depth", "resync", 1, 9, "lost", detail='crossed, "bad"'))
    w.close()
    import csv
    with open(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "gaps", "1970-01-01")) as f:
        row = list(csv.DictReader(f))[0]
    assert row["detail"] == 'crossed, "bad"'


def _depth(U, u, pu=""):
    return f"1000,,{U},{u},{pu},bid,1.0,2.0,5\n"


def _trade(i):
    return Rows("BTCUSDT", "trade", "2026-01-01", [i], [f"{i},1,1,1,1,True,True,1,1\n"], False)


def test_a_batch_is_acknowledged_only_once_every_row_of_it_is_written(tmp_path, monkeypatch):
    import errno
    w = Writer(_cfg(tmp_path))
    first = w.take([_trade(5), Rows("BTCUSDT", "depth", "2026-01-01", [10], [_depth(8, 10)], False)], "worker-0")
    second = w.take([_trade(6)], "worker-0")
    assert w.written_below() == {"worker-0": first}     # held for flush_interval: nothing acknowledged
    w._flush_file(w.files[("BTCUSDT", "trade", "2026-01-01")])
    assert w.written_below() == {"worker-0": first}     # its depth row still waits
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    w.flush(force=True)
    assert w.written_below() == {"worker-0": first}     # a failed write acknowledges nothing
    monkeypatch.setattr(os, "write", real_write)
    w.flush(force=True)
    assert w.written_below() == {} and second == first + 1     # everything written
    w.close()
    assert w.unwritten == {}


def test_a_file_that_cannot_be_written_holds_back_only_the_producer_that_sent_to_it(tmp_path):
    w = Writer(_cfg(tmp_path))
    blocked = w.take([_trade(5)], "worker-0")
    w.take([Rows("ETHUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)], False)], "worker-1")
    os.unlink(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "trade", "2026-01-01"))
    os.symlink("/nonexistent", csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "trade", "2026-01-01"))
    f = w.files[("BTCUSDT", "trade", "2026-01-01")]
    os.close(f.fd)
    f.fd = None                                                  # as after a reopen: it must be opened again
    w.flush_due(time.monotonic() + 10)
    assert w.written_below() == {"worker-0": blocked}            # worker-1's rows are written and acknowledged
    assert _read_symbol(tmp_path, "ETHUSDT", "aggTrade")[1:] == [_agg(1).rstrip("\n")]
    w.close()
    assert w.unwritten == {"worker-0": blocked}                  # never acknowledged at exit either


def _read_symbol(tmp_path, symbol, stream, day="2026-01-01"):
    with open(csvfiles.path(str(tmp_path / "data"), "spot", symbol, stream, day)) as f:
        return f.read().splitlines()


def _book(t):
    return Rows("BTCUSDT", "orderbook", "2026-01-01", [t], [f"{t},,false" + ",,," * 40 + "\n"], False)


def _snapshot(t):
    return Rows("BTCUSDT", "depthSnapshot", "2026-01-01", [t, t], [f"9,bid,1.0,2.0,{t - 5},{t},,\n",
                                                                     f"9,ask,1.1,2.0,{t - 5},{t},,\n"], False)


@pytest.mark.parametrize("packed", [False, True])       # as the writer is called, and as Rows travel
def test_batches_sent_again_to_a_new_writer_are_written_once(tmp_path, packed):
    pack = messages.pack_rows if packed else list
    w = Writer(_cfg(tmp_path))
    w.take(pack([_book(1000), _snapshot(1500)]))
    w.take(pack([_trade(5), _trade(6)]))
    w.take(pack([Rows("BTCUSDT", "depth", "2026-01-01", [10, 10], [_depth(8, 10), _depth(8, 10)], False)]))
    w.close()                                           # then killed before it acknowledged
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    w2.take(pack([_book(1000), _snapshot(1500)]))            # rows without exchange ids: dropped by their key
    w2.take(pack([_book(2000), _snapshot(900)]))             # new ones (even if a clock stepped back) are kept
    w2.take(pack([_trade(5), _trade(6), _trade(7)]))        # everything unacknowledged, sent again
    w2.take(pack([Rows("BTCUSDT", "depth", "2026-01-01", [10, 10, 12], [_depth(8, 10), _depth(8, 10),
                                                                             _depth(11, 12)], False)]))
    w2.close()
    assert [r.split(",")[0] for r in _read(tmp_path, "trade")[1:]] == ["5", "6", "7"]
    assert [r.split(",")[3] for r in _read(tmp_path, "depth")[1:]] == ["10", "10", "12"]
    assert [r.split(",")[0] for r in _read(tmp_path, "orderbook")[1:]] == ["1000", "2000"]
    assert [r.split(",")[5] for r in _read(tmp_path, "depthSnapshot")[1:]] == ["1500", "1500", "900", "900"]
    assert not os.path.exists(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "gaps",
                                            csvfiles.DayOf()(int(w2.clock() * 1000))))


def test_recent_keys_remember_each_key_once_and_forget_the_oldest_beyond_their_limit():
    keys = writermod.RecentKeys()
    keys.extend(memoryview(messages.pack_ids([5] * 10_000 + [6])).cast("q"))       # a snapshot's rows share a key
    assert list(keys.order) == [5, 6] and keys.seen([7, 6]) and not keys.seen([7]) and not keys.seen([])
    keys.extend(range(7, 7 + keys.LIMIT))
    assert len(keys.order) == keys.LIMIT and 5 not in keys and 6 not in keys and 7 in keys


def test_a_depth_stream_that_continues_after_a_restart_has_no_gap(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "depth", "2026-01-01", [10], [_depth(8, 10)])
    w.close()
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    w2.add_rows("BTCUSDT", "depth", "2026-01-01", [12], [_depth(11, 12)])
    w2.close()
    assert not os.path.exists(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "gaps",
                                            csvfiles.DayOf()(int(w2.clock() * 1000))))


def test_unfinished_backfills_are_asked_for_again_after_a_restart(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [5], [_agg(5)])      # hole 2..4, requested
    w.close()                                                          # stopped before it was filled
    requests = []
    w2 = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w2.recover()
    assert requests == [("BTCUSDT", "aggTrade", 2, 4)]
    w2.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [2, 3, 4], [_agg(2, 1), _agg(3, 1), _agg(4, 1)], backfilled=True)
    w2.close()
    ids = sorted(int(x.split(",")[0]) for x in _read(tmp_path, "aggTrade")[1:])
    assert ids == [1, 2, 3, 4, 5]
    w3 = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w3.recover()                                                       # filled: nothing more to ask
    assert len(requests) == 1


def test_the_same_hole_is_not_requested_twice(tmp_path):
    requests = []
    w = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [5], [_agg(5)])
    w.add_gap("BTCUSDT", gap_row(1, "aggTrade", "start", 1, 5, ""))     # the same hole, reported again
    assert requests == [("BTCUSDT", "aggTrade", 2, 4)]
    for batch in ([2, 3, 4], [2, 3, 4]):                                # and answered twice
        w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", batch, [_agg(a, 1) for a in batch], backfilled=True)
    w.close()
    ids = [int(x.split(",")[0]) for x in _read(tmp_path, "aggTrade")[1:]]
    assert sorted(ids) == [1, 2, 3, 4, 5]


def test_recovery_reads_the_largest_id_past_backfilled_rows(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [5, 6], [_agg(5), _agg(6)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [2, 3, 4], [_agg(a, 1) for a in (2, 3, 4)], backfilled=True)
    w.close()
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    assert w2.seq.last[("BTCUSDT", "aggTrade")] == 6


def test_rows_wait_out_the_flush_interval_less_the_time_spent_upstream(tmp_path):
    w = Writer(_cfg(tmp_path, flush_interval=2.0, batch_interval=0.1, read_interval=0.02))
    assert w.hold == pytest.approx(1.78)
    t0 = __import__("time").monotonic()
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], [_agg(1)])
    assert t0 <= w.next_due - w.hold <= t0 + 0.5
    w.add_rows("BTCUSDT", "trade", "2026-01-01", [7], ["7,1,1,1,1000,True,True,1000,5\n"])
    first_due = w.next_due
    w.flush_due(first_due - 1.0)                 # not yet due: nothing written
    path = csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "aggTrade", "2026-01-01")
    assert os.path.getsize(path) == 0
    w.flush_due(first_due)                       # due: both files (the second is due within the window)
    assert [int(x.split(",")[0]) for x in _read(tmp_path, "aggTrade")[1:]] == [1]
    assert len(_read(tmp_path, "trade")) == 2
    assert w.next_due is None
    w.close()


def test_a_new_link_to_a_restarted_worker_first_reads_what_the_old_one_sent(tmp_path):
    from binance_streamer import links, messages
    from binance_streamer.writer import Producers
    old_writer_end, old_worker_end = links.pair()
    producers = Producers({"worker-0": old_writer_end}, {"worker-0": ["BTCUSDT"]})
    sender = links.Link(old_worker_end, "writer")
    for seq, trade in enumerate((5, 6, 7), 1):
        sender.send(messages.Batch(seq, [_trade(trade)]))
    sender.close()                                      # the worker died with its batches in the socket
    w = Writer(_cfg(tmp_path))
    new_writer_end, _ = links.pair()
    producers.attach("worker-0", new_writer_end, w)
    w.close()
    assert [r.split(",")[0] for r in _read(tmp_path, "trade")[1:]] == ["5", "6", "7"]


def test_a_torn_snapshot_is_cut_whole_and_its_resend_written(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.take([_snapshot(1500)])
    w.close()
    path = csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "depthSnapshot", "2026-01-01")
    with open(path, "a") as f:                  # a crash in the middle of the next snapshot's write
        f.write("9,bid,1.0,2.0,2495,2500,,\n9,ask,1.1,2.")
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    w2.take([_snapshot(2500)])                  # sent again: it was never acknowledged
    w2.close()
    assert [r.split(",")[5] for r in _read(tmp_path, "depthSnapshot")[1:]] == ["1500", "1500", "2500", "2500"]


def test_rows_without_lines_hold_back_no_acknowledgement(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.take([Rows("BTCUSDT", "depthSnapshot", "2026-01-01", [], [], False)], "worker-0")     # an empty book
    assert w.written_below() == {} and w.next_due is None
    w.close()


def test_a_file_that_cannot_be_opened_is_tried_again_on_time_and_counts_for_its_producer_only(tmp_path):
    w = Writer(_cfg(tmp_path))
    folder = os.path.dirname(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "trade", "2026-01-01"))
    os.makedirs(folder)
    os.symlink("/nonexistent", os.path.join(folder, os.path.basename(
        csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "trade", "2026-01-01"))))
    number = w.take([_trade(5)], "worker-0")
    assert w.next_due is not None                                 # the retry is scheduled
    w.housekeeping()                                              # the writer's own rows: nobody's batch
    assert w.written_below() == {"worker-0": number}
    w.close()


def test_todays_rows_count_from_the_start_before_any_new_row(tmp_path):
    now = 1767225600.0 + 3600          # 2026-01-01 01:00 UTC
    day = "2026-01-01"
    w = Writer(_cfg(tmp_path), clock=lambda: now)
    w.add_rows("BTCUSDT", "aggTrade", day, [1, 2, 3], [_agg(1), _agg(2), _agg(3)])
    w.close()
    w2 = Writer(_cfg(tmp_path), clock=lambda: now)
    w2.recover()
    path = csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "aggTrade", day)
    assert w2.status()["streams"]["BTCUSDT/aggTrade"] == {"day": day, "rows": 3, "bytes": os.path.getsize(path)}
    w2.close()


def test_rows_as_they_travel_joined_are_written_exactly_as_rows_as_lists(tmp_path):
    """messages.pack_rows joins a Rows' lines for the link; the writer reads
    them through Lines: the same bytes on disk, the same repeats dropped, the
    same hole seen (its times come from a line in the middle), as with the list."""
    first, again = [1, 2, 3], [2, 3, 4, 6, 7]          # 2, 3 repeated; 5 missing
    results = []
    for packed in (False, True):
        root, requests = tmp_path / str(packed), []
        w = Writer(_cfg(root), request_backfill=lambda *r: requests.append(r))
        for ids in (first, again):
            rows = Rows("BTCUSDT", "aggTrade", "2026-01-01", ids, [_agg(a) for a in ids], False)
            (msg,) = messages.pack_rows([rows]) if packed else [rows]
            assert isinstance(msg.lines, str) == packed
            w.take([msg])
        w.close()
        results.append((_read(root, "aggTrade"), w.seq.duplicates, requests))
    assert results[0] == results[1]
    assert [int(x.split(",")[0]) for x in results[1][0][1:]] == [1, 2, 3, 4, 6, 7] and results[1][1] == 2
    assert results[1][2] == [("BTCUSDT", "aggTrade", 5, 5)]


def test_ids_travel_packed_and_read_back_as_the_same_ints():
    """pack_rows packs a Rows' ids in 8 bytes each; unpack_ids reads them
    back (no copy); ids that are not 64-bit ints travel as they were."""
    ids = [12345678901] * 6 + [12345678950, 2**63 - 1, -1]
    lines = [["".join(_agg(1) for _ in range(6))] + [_agg(2)] * 3]      # one element may hold several lines
    (rows,) = messages.pack_rows([Rows("BTCUSDT", "depth@100ms", "2026-01-01", list(ids), lines[0], False)])
    assert isinstance(rows, Rows) and isinstance(rows.ids, bytes) and len(rows.ids) == 8 * len(ids)
    back = messages.unpack_ids(rows.ids)
    assert list(back) == ids and back[0] == ids[0] and back[-1] == -1 and len(back) == 9
    assert len(messages.Lines(rows.lines, len(back))) == 9 == len(messages.Lines(rows.lines))
    for odd in ([2**63], ["k1", "k2"], [], None):
        assert messages.pack_ids(odd) is odd
    assert messages.unpack_ids(["k1"]) == ["k1"]


def test_lines_reads_a_joined_text_as_its_lines():
    text = "".join(_agg(a) for a in (1, 2, 3))
    lines = messages.Lines(text)
    assert len(lines) == 3 and lines[0] == _agg(1) and lines[-1] == _agg(3) and lines[1] == _agg(2)
    assert list(lines) == [_agg(1), _agg(2), _agg(3)] and lines[-3] == _agg(1)
    assert not messages.Lines("") and list(messages.Lines("")) == []
    with pytest.raises(IndexError):
        messages.Lines("")[0]


def test_an_ack_is_due_every_interval_or_at_once_when_the_producer_keeps_a_share_of_its_limit():
    from binance_streamer.status import WRITER_BEHIND_SHARE
    from binance_streamer.writer import ACK_INTERVAL, PRESSURE, ack_due, pressed
    limit = 16_000_000
    at = int(limit * PRESSURE)
    assert PRESSURE < WRITER_BEHIND_SHARE < 1       # acted on before the status calls the writer behind
    assert not ack_due(10.0, 10.0 - ACK_INTERVAL / 2, 1000, limit)
    assert ack_due(10.0, 10.0 - ACK_INTERVAL, 1000, limit)
    assert not pressed(at - 1, limit) and pressed(at, limit)
    assert not ack_due(10.0, 10.0 - ACK_INTERVAL / 2, at - 1, limit)
    assert ack_due(10.0, 10.0 - ACK_INTERVAL / 2, at, limit)


def test_a_pressed_producer_has_its_rows_written_and_acknowledged_at_once(tmp_path):
    from binance_streamer import links
    from binance_streamer.writer import Producers
    writer_end, worker_end = links.pair()
    producers = Producers({"worker-0": writer_end}, {"worker-0": ["BTCUSDT"]}, limit=2000)
    worker = links.Link(worker_end, "writer")
    w = Writer(_cfg(tmp_path))
    gap = gap_row(1000, "orderbook", "resync", "", "", "lost")      # a book manager's row: no ids
    worker.send(messages.Batch(1, [_trade(5), Rows("BTCUSDT", "depth", "2026-01-01", [10], [_depth(8, 10)], False)]))
    worker.send(messages.Batch(2, [_trade(6), messages.Gap("BTCUSDT", gap)]))
    link = producers.links["worker-0"]
    for _ in range(100):
        if producers.unacked.get("worker-0") and len(producers.unacked["worker-0"]) == 2:
            break
        links.wait([link], [], 1.0)
        producers.receive(link, w)
    assert 0 < producers.unacked_bytes["worker-0"] == link.received
    now = time.monotonic()
    producers.acked_at["worker-0"] = now           # an Ack was just sent: none due by the interval
    producers.acknowledge(w.written_below, now)
    assert producers.unacked_bytes["worker-0"] == link.received     # held for flush_interval: no Ack
    producers.limit = producers.unacked_bytes["worker-0"]           # now it keeps its whole limit
    assert producers.pressed() == ["worker-0"]
    w.write_for("worker-0")
    assert [r.split(",")[0] for r in _read(tmp_path, "trade")[1:]] == ["5", "6"]
    assert len(_read(tmp_path, "depth")) == 2                       # header and the row
    producers.acknowledge(w.written_below, now)
    assert w.files[("BTCUSDT", "gaps", "1970-01-01")].rows == 1     # the ledger waits its hold...
    acks = []
    for _ in range(100):
        if acks:
            break
        links.wait([worker], [], 1.0)
        acks += worker.receive()
    assert acks == [messages.Ack(1)]               # ...so batch 2, whose gap row waits, is not acknowledged
    assert producers.unacked_bytes["worker-0"] > 0
    w.close()
