"""The budgets hold across processes: a child's attempts count for the parent."""

import multiprocessing

from binance_streamer.binance.budgets import ConnectBudget


def _take(budget, q):
    q.put(budget.try_acquire())


def test_budgets_are_shared_between_processes():
    ctx = multiprocessing.get_context("spawn")
    b = ConnectBudget(ctx, limit=2, margin=0.0)
    assert b.try_acquire() == 0.0
    q = ctx.Queue()
    p = ctx.Process(target=_take, args=(b, q))
    p.start()
    assert q.get(timeout=30) == 0.0                              # the second attempt, in another process
    p.join(30)
    assert b.try_acquire() > 0                                  # the limit counts both processes
