"""The continuity rules, stream by stream, without a worker."""

import pytest

from binance_streamer import streams
from binance_streamer.continuity import (BACKFILL, CONTINUES, DUPLICATE, FIRST, LOST, backfill_range, chained,
                                         consecutive, handed_over, increasing, linked)


def _can_backfill(stream):
    return streams.backfillable(stream)


@pytest.mark.parametrize("stream", ["aggTrade", "trade", "kline_1m"])
def test_consecutive_ids(stream):
    step, can = streams.id_step(stream), _can_backfill(stream)
    last = 100 * step
    assert consecutive(None, "start", last, step, can) == FIRST
    assert consecutive(last, "live", last, step, can) == DUPLICATE
    assert consecutive(last, "live", last - step, step, can) == DUPLICATE
    assert consecutive(last, "live", last + step, step, can) == CONTINUES
    assert consecutive(last, "reconnected", last + step, step, can) == CONTINUES   # nothing missed
    jump = consecutive(last, "reconnected", last + 4 * step, step, can)
    assert jump == (LOST if stream == "trade" else BACKFILL)
    assert backfill_range(last, last + 4 * step, step) == (last + step, last + 3 * step)


def test_a_jump_is_lost_when_no_rest_client_can_backfill():
    assert consecutive(5, "live", 9, 1, False) == LOST


def test_monthly_klines_have_no_step_so_any_later_candle_continues():
    assert consecutive(1000, "live", 5000, streams.id_step("kline_1M"), True) == CONTINUES
    assert consecutive(1000, "live", 1000, None, True) == DUPLICATE


def test_usdm_depth_is_chained_by_pu():
    assert chained("usdm", None, "start", 157, 160, 149) == LOST         # a book needs its snapshot first
    assert chained("usdm", 149, "live", 157, 160, 149) == CONTINUES       # U may jump: pu links
    assert chained("usdm", 149, "live", 157, 160, 148) == LOST
    assert chained("usdm", 160, "live", 157, 160, 149) == DUPLICATE
    assert chained("usdm", 149, "reconnected", 150, 160, 149) == CONTINUES


def test_spot_depth_continues_when_U_is_the_last_u_plus_one():
    assert chained("spot", 156, "live", 157, 160, None) == CONTINUES
    assert chained("spot", 155, "live", 157, 160, None) == LOST
    assert chained("spot", 170, "live", 157, 160, None) == DUPLICATE
    assert linked("spot", 156, 157, None) and not linked("usdm", 156, 157, None)


def test_book_tickers_only_increase_and_lose_events_on_a_reconnect_only():
    assert increasing(None, "start", 10) == LOST
    assert increasing(10, "live", 500) == CONTINUES                      # u counts every book change
    assert increasing(10, "live", 10) == DUPLICATE
    assert increasing(10, "reconnected", 11) == LOST


@pytest.mark.parametrize("stream, overlap_needed", [("aggTrade", 1), ("trade", 1), ("depth", 0),
                                                    ("bookTicker", 0), ("markPrice@1s", 0)])
def test_handover_overlap_per_stream(stream, overlap_needed):
    overlap = streams.lookup(stream).overlap
    assert overlap == overlap_needed
    assert handed_over(overlap, 10, 10 + overlap)
    assert not handed_over(overlap, 10, 11 + overlap)
    assert not handed_over(overlap, 10, None)                           # nothing seen yet on the new socket
    assert handed_over(overlap, None, None)                             # no data yet: nothing to match


def test_klines_need_no_overlap():
    assert handed_over(streams.lookup("kline_1m").overlap, 10, 10_000_000)
