"""Binance's documented depth sequencing (PROTOCOL.md section 4), case by case
and as properties over random diff streams."""

from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from binance_streamer.book import (APPLIED, BUFFERED, GAP, SNAPSHOT_TOO_OLD, STALE, SYNCED,
                                   Book, DepthSync, classify_next, drop_before_snapshot,
                                   first_event_fits)


def test_spot_first_event_must_straddle_last_update_id_plus_one():
    assert first_event_fits("spot", 100, 95, 101)
    assert first_event_fits("spot", 100, 101, 105)
    assert not first_event_fits("spot", 100, 102, 105)
    assert not first_event_fits("spot", 100, 90, 100)


@pytest.mark.parametrize("market", ["usdm", "coinm"])
def test_futures_first_event_must_straddle_last_update_id(market):
    assert first_event_fits(market, 100, 95, 100)
    assert first_event_fits(market, 100, 100, 105)
    assert not first_event_fits(market, 100, 101, 105)
    assert not first_event_fits(market, 100, 90, 99)


def test_drop_rules_differ_at_equality():
    assert drop_before_snapshot("spot", 100, 100)
    for market in ("usdm", "coinm"):
        assert not drop_before_snapshot(market, 100, 100)
        assert drop_before_snapshot(market, 100, 99)


def test_steady_state():
    assert classify_next("spot", 100, 101, 104, None) == APPLIED
    assert classify_next("spot", 100, 102, 104, None) == GAP
    assert classify_next("spot", 100, 90, 100, None) == STALE
    for market in ("usdm", "coinm"):
        assert classify_next(market, 100, 103, 110, 100) == APPLIED     # ids skip; pu chains
        assert classify_next(market, 100, 101, 110, 99) == GAP
        assert classify_next(market, 100, 95, 100, 94) == STALE


def test_book_levels_are_exact_strings_and_zero_deletes():
    b = Book()
    b.load(5, [["1.10", "2"], ["1.00", "0"]], [["1.20", "3.50"]])
    assert b.best_bid() == ("1.10", "2") and len(b.bids) == 1
    b.apply([["1.1000", "0.00000000"], ["1.05", "7"]], [], 6)
    assert b.best_bid() == ("1.05", "7") and b.update_id == 6
    assert not b.crossed()
    b.apply([["1.30", "1"]], [], 7)
    assert b.crossed()


def test_snapshot_older_than_buffer_is_refused():
    s = DepthSync("spot")
    assert s.on_diff(200, 205, None, [], []) == BUFFERED
    assert s.on_snapshot(150, [], []) == SNAPSHOT_TOO_OLD
    assert s.on_snapshot(202, [["1", "1"]], [["2", "1"]]) == SYNCED
    assert s.update_id == 205


def test_gap_resets_and_keeps_the_revealing_event():
    s = DepthSync("spot")
    s.on_snapshot(10, [["1", "1"]], [["2", "1"]])
    assert s.on_diff(11, 12, None, [], []) == APPLIED
    assert s.on_diff(14, 15, None, [], []) == GAP
    assert not s.synced and s.buffer[0][:2] == (14, 15) and s.last_gap == (12, 14)


# -- properties --------------------------------------------------------------------

def _stream(draw, market):
    """A true sequence of events plus what a client may see of it."""
    n = draw(st.integers(3, 25))
    start = draw(st.integers(1, 1000))
    events, uid = [], start
    for _ in range(n):
        skip = draw(st.integers(0, 2)) if market != "spot" else 0
        first = uid + 1 + skip
        last = first + draw(st.integers(0, 4))
        events.append((first, last, uid))
        uid = last
    return start, events


@st.composite
def scenarios(draw, market):
    start, events = _stream(draw, market)
    seen = []
    for ev in events:
        r = draw(st.integers(0, 9))
        if r == 0:
            continue                    # lost
        seen.append(ev)
        if r == 1:
            seen.append(ev)             # duplicate
    # snapshot at some id of the true history
    ids = [start] + [e[1] for e in events]
    snap = draw(st.sampled_from(ids))
    split = draw(st.integers(0, len(seen)))
    return market, start, events, seen, snap, split


def _reference(market, snap, seen):
    """The documented procedure, written out literally: (outcomes up to a gap, book id)."""
    book, first_done, outcomes = snap, False, []
    for first, last, prev in seen:
        if not first_done:
            drop = last <= snap if market == "spot" else last < snap
            if drop:
                outcomes.append(STALE)
                continue
            ok = first <= snap + 1 <= last if market == "spot" else first <= snap <= last
            if not ok:
                return outcomes + [GAP], None
            first_done, book = True, last
            outcomes.append(APPLIED)
        elif last <= book:
            outcomes.append(STALE)
        elif (market == "spot" and first > book + 1) or (market != "spot" and prev != book):
            return outcomes + [GAP], None
        else:
            book = last
            outcomes.append(APPLIED)
    return outcomes, book


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.one_of(scenarios("spot"), scenarios("usdm"), scenarios("coinm")))
def test_sync_follows_the_documented_procedure(scenario):
    market, start, events, seen, snap, split = scenario
    s = DepthSync(market)
    for ev in seen[:split]:
        assert s.on_diff(ev[0], ev[1], ev[2], [["1", "1"]], []) == BUFFERED
    result = s.on_snapshot(snap, [], [])
    if split and snap < seen[0][0]:
        assert result == SNAPSHOT_TOO_OLD
        return
    expected, book_id = _reference(market, snap, seen)
    if GAP in expected and expected.index(GAP) < split:
        assert result == GAP and not s.synced
        return
    assert result == SYNCED
    got = []
    for ev in seen[split:]:
        got.append(s.on_diff(ev[0], ev[1], ev[2], [["1", "1"]], []))
        if got[-1] == GAP:
            break
    assert got == expected[split:]
    if GAP not in expected:
        assert s.update_id == book_id
    # With no event lost that the procedure needs, it never reports a gap: spot
    # needs every event after the snapshot, USD-M also the one ending at it.
    needed = [e for e in events if (e[1] > snap if market == "spot" else e[1] >= snap)]
    lost = any(e not in seen for e in needed)
    bridged = any(first_event_fits(market, snap, e[0], e[1]) for e in events)
    if bridged and not lost:
        assert GAP not in expected
        assert book_id == max([snap] + [e[1] for e in events])


def test_an_ask_priced_beyond_decimal_precision_is_removed_as_its_own_level():
    long = "1.00000000000000000000000000001"       # 30 digits: rounds to 1 in a 28-digit context
    book = Book()
    book.load(1, [["0.5", "1"]], [["1", "3"], [long, "2"]])
    book.apply([], [[long, "0"]], 2)
    assert book.best_ask() == ("1", "3") and book.top(5)[1] == [("1", "3")]


def test_a_bid_priced_beyond_decimal_precision_is_its_own_level_too():
    long = "1.00000000000000000000000000001"
    book = Book()
    book.load(1, [["1", "3"], [long, "2"]], [["2", "1"]])
    assert book.best_bid() == (long, "2") and not book.crossed()
    book.apply([[long, "0"]], [], 2)
    assert book.top(5)[0] == [("1", "3")]


def test_sixteen_digits_without_a_point_are_two_levels_when_they_differ():
    # 2**53 + 1 has no float of its own: as a float key it would be 2**53's level
    book = Book()
    book.load(1, [["9007199254740992", "1"], ["9007199254740993", "2"]], [["9007199254740995", "1"]])
    assert book.top(5)[0] == [("9007199254740993", "2"), ("9007199254740992", "1")]
    book.apply([["9007199254740993", "0"]], [], 2)
    assert book.top(5)[0] == [("9007199254740992", "1")]


def test_one_price_written_two_ways_is_one_level_before_and_after_a_long_price():
    book = Book()
    book.load(1, [["0.10", "1"], ["0.09", "1"]], [["0.11000000", "1"]])
    book.apply([["0.1", "2"]], [["0.110", "0.00"]], 2)
    assert book.top(5) == ([("0.1", "2"), ("0.09", "1")], [])
    book.apply([], [["0.1100000000000000000001", "4"]], 3)       # 22 digits: keys become Decimal
    book.apply([["0.1000", "3"]], [["0.11", "5"]], 4)
    assert book.top(5) == ([("0.1000", "3"), ("0.09", "1")], [("0.11", "5"), ("0.1100000000000000000001", "4")])
    assert book.as_dict()["asks"] == {Decimal("0.11"): Decimal(5), Decimal("0.1100000000000000000001"): Decimal(4)}


_digits = st.text("0123456789", min_size=1, max_size=12)


@st.composite
def _price(draw):
    """A plain decimal as Binance writes one, sometimes long, with trailing
    zeros or not, sometimes a hair above a short one (the same float)."""
    whole = draw(st.sampled_from(["0", "1", "10", "99", "12345678", "9007199254740992", "9007199254740993"]))
    frac = draw(st.one_of(st.just(""), _digits, st.text("0123456789", min_size=13, max_size=30)))
    if draw(st.integers(0, 3)) == 0:
        frac = frac[:4] + "0" * 16 + "1"
    frac += "0" * draw(st.integers(0, 8))
    return whole + ("." + frac if frac else "")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.booleans(), _price(), st.sampled_from(["0", "0.000", "1", "2.50", "0.001"])),
                max_size=60), st.integers(0, 60))
def test_levels_and_their_order_are_those_of_decimal_keys(changes, loaded):
    """The book against a plain ``Decimal``-keyed reference, whatever the
    prices' lengths: the first ``loaded`` changes as a snapshot, the rest applied."""
    snap, changes = changes[:loaded], changes[loaded:]
    book = Book()
    book.load(0, [(p, q) for bid, p, q in snap if bid], [(p, q) for bid, p, q in snap if not bid])
    ref = tuple({Decimal(p): (p, q) for bid, p, q in snap if bid is side and Decimal(q)} for side in (True, False))
    for i, (bid, p, q) in enumerate(changes, 1):
        book.apply([(p, q)] if bid else [], [] if bid else [(p, q)], i)
        side = ref[0 if bid else 1]
        if Decimal(q):
            side[Decimal(p)] = (p, q)
        else:
            side.pop(Decimal(p), None)
    want_bids = [side for _, side in sorted(ref[0].items(), reverse=True)]
    want_asks = [side for _, side in sorted(ref[1].items())]
    assert book.top(len(snap) + len(changes) + 1) == (want_bids, want_asks)
    assert book.crossed() == bool(want_bids and want_asks and Decimal(want_bids[0][0]) >= Decimal(want_asks[0][0]))
    assert book.as_dict()["bids"] == {k: Decimal(q) for k, (_, q) in ref[0].items()}


def test_a_refresh_compares_levels_in_range_by_price_whatever_the_keys():
    old, new = Book(), Book()
    old.load(1, [["1.0", "5"], ["0.9", "1"], ["0.5", "3"]], [["2.0", "5"]])
    new.load(1, [["1.00", "5"], ["0.9", "2"]], [["2.0", "5"], ["2.1", "1"], ["2.10000000000000000001", "1"]])
    assert new._exact and not old._exact            # Decimal keys beside float keys
    assert old.differences(new) == 4                 # 0.9's quantity; 0.5, 2.1 and the long one on one side only
    assert old.differences(new, Decimal("0.9"), Decimal("2.0")) == 1


@st.composite
def _near_price(draw):
    """A price as parse.num accepts it, near where floats stop telling decimals
    apart: 15, 16 or 17 significant digits with the point anywhere, 2**53's
    neighbours, one unit in the last place apart from a shorter price, with
    leading zeros (``"00.1"``), ``".5"`` or ``"5."``."""
    digits = draw(st.sampled_from(["9007199254740992", "9007199254740993", "9007199254740991", "123456789012345",
                                   "1234567890123456", "12345678901234567", "100000000000000", "1000000000000001",
                                   "999999999999999", "9999999999999999", "1", "10", "5"]))
    digits = digits[:draw(st.integers(1, len(digits)))] if draw(st.booleans()) else digits
    if draw(st.integers(0, 3)) == 0:                 # one unit in the last place off
        digits = str(int(digits) + draw(st.sampled_from([-1, 1]))).zfill(len(digits))
    point = draw(st.one_of(st.just(None), st.just(None), st.integers(0, len(digits))))
    text = digits if point is None else digits[:point] + "." + digits[point:]
    if draw(st.integers(0, 3)) == 0:
        text = "0" * draw(st.integers(1, 3)) + text + ("0" * draw(st.integers(0, 3)) if "." in text else "")
    return text if len(text) <= 40 and text != "." else "1"


def _reference_apply(ref, levels):
    for p, q in levels:
        if Decimal(q):
            ref[Decimal(p)] = (p, q)
        else:
            ref.pop(Decimal(p), None)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_near_price(), st.sampled_from(["1", "0", "0.000", "2.5"])), max_size=20),
       st.lists(st.tuples(st.lists(st.tuples(_near_price(), st.sampled_from(["1", "0", "00.0", ".0", "3."])),
                                   max_size=6),
                          st.lists(st.tuples(_near_price(), st.sampled_from(["1", "0", "7"])), max_size=6),
                          st.one_of(st.none(), st.integers(1, 8))), max_size=12))
def test_a_book_fed_prices_near_float_precision_is_a_decimal_book(snapshot, diffs):
    """Snapshot, then packed diffs of several levels a side (a long price can
    turn the keys into Decimal in the middle of one), sometimes a prune: after
    each step the levels, their order, best, crossed and as_dict are those of
    a book keyed by Decimal."""
    half = len(snapshot) // 2
    book = Book()
    book.load(0, snapshot[:half], snapshot[half:])
    ref = [{Decimal(p): (p, q) for p, q in side if Decimal(q)} for side in (snapshot[:half], snapshot[half:])]
    for i, (bids, asks, prune) in enumerate(diffs, 1):
        book.apply_packed(",".join(f"{p},{q}" for p, q in bids), ",".join(f"{p},{q}" for p, q in asks), i)
        _reference_apply(ref[0], bids)
        _reference_apply(ref[1], asks)
        if prune is not None:
            book.prune(prune)
            for side, best_first in ((ref[0], True), (ref[1], False)):
                for k in sorted(side, reverse=best_first)[prune:]:
                    del side[k]
        want = ([ref[0][k] for k in sorted(ref[0], reverse=True)], [ref[1][k] for k in sorted(ref[1])])
        assert book.top(100) == want
        assert book.top(2) == (want[0][:2], want[1][:2])
        assert (book.best_bid(), book.best_ask()) == (want[0][0] if want[0] else None, want[1][0] if want[1] else None)
        assert book.crossed() == bool(want[0] and want[1] and Decimal(want[0][0][0]) >= Decimal(want[1][0][0]))
        assert book.as_dict() == {"lastUpdateId": i, "bids": {k: Decimal(q) for k, (_, q) in ref[0].items()},
                                  "asks": {k: Decimal(q) for k, (_, q) in ref[1].items()}}
