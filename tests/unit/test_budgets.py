"""The daemon-wide budgets for Binance's per-IP limits, with a fake clock."""

from binance_streamer.binance.budgets import ROUTINE, URGENT, ConnectBudget, RestBudget


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def test_weight_budget_keeps_a_margin_and_lets_urgent_requests_go_first():
    clock = Clock(60.0)
    b = RestBudget(None, 100, margin=0.2, clock=clock)          # 80 usable a minute
    assert b.try_acquire(30, ROUTINE) == 0.0
    assert b.try_acquire(20, ROUTINE) > 0                       # routine work may use half of it
    assert b.try_acquire(50, URGENT) == 0.0                     # urgent work may use all of it
    assert b.try_acquire(1, URGENT) == 60.05                    # until the next minute
    clock.t = 120.0
    assert b.try_acquire(80, URGENT) == 0.0 and b.spent == 160


def test_the_exchanges_count_and_retry_after_win():
    clock = Clock(60.0)
    b = RestBudget(None, 100, margin=0.0, clock=clock)
    b.observe(95)                                               # another client on the same IP
    assert b.try_acquire(10) > 0
    clock.t = 130.0
    b.pause(7, 429)
    assert 6.9 < b.try_acquire(1) <= 7.0                        # nobody sends before Retry-After
    clock.t = 137.5
    assert b.try_acquire(1) == 0.0
    b.pause(1, 418)
    b.pause(1, 418)
    assert b.usage() == {"spent": 1.0, "used_minute": 1.0, "limit": 100.0, "429": 1.0, "418": 2.0}
    clock.t = 181.0                                             # a new minute: nothing used in it yet
    assert b.usage()["used_minute"] == 0.0 and b.usage()["spent"] == 1.0


def test_connection_attempts_stay_under_the_limit():
    clock = Clock(1000.0)
    b = ConnectBudget(None, limit=10, window=300.0, margin=0.1, clock=clock)      # 9 attempts per 5 minutes
    assert [b.try_acquire() for _ in range(9)] == [0.0] * 9
    wait = b.try_acquire()
    assert 299.9 < wait <= 300.01
    clock.t += wait
    assert b.try_acquire() == 0.0
