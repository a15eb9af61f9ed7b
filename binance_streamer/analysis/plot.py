"""``--plot``: one PNG of a symbol's day: price, messages per second per
stream, and the gap ledger's holes shaded across both panels.

It draws the streams that were recorded (futures have no trade stream; a
config may leave out any stream) and raises :class:`~.catalog.NotRecorded`
when the day has none of them."""

import os

import pandas as pd

from .catalog import NotRecorded, days_text, symbol_streams
from .load import _US_FROM, load

_RATE_STREAMS = ("aggTrade", "trade", "depth", "bookTicker")
# Only what a panel needs: a day of depth rows is large.
_COLUMNS = {"depth": ["first_update_id", "final_update_id"], "bookTicker": ["best_bid_price", "best_ask_price"]}


def plot_day(data_dir, symbol, day, out_path, market="spot"):
    """Draw the day and write ``out_path``; returns what was drawn: the
    price series, the rate streams, and ``holes``, the shaded ``(from, to)``
    spans (``gaps`` counts them)."""
    plt = _pyplot()
    symbol = symbol.upper()
    start = pd.Timestamp(day, tz="UTC")
    end = start + pd.Timedelta(days=1)
    frames = _frames(data_dir, symbol, day, market, start, end)
    span = max(f.index.max() for f in frames.values()) - min(f.index.min() for f in frames.values())
    bucket = "1s" if span <= pd.Timedelta(hours=2) else "1min"
    seconds = pd.Timedelta(bucket).total_seconds()

    fig, (ax_price, ax_rate) = plt.subplots(2, 1, sharex=True, figsize=(12, 7),
                                            gridspec_kw={"height_ratios": [3, 2]})
    drawn = {"price": _price(ax_price, frames), "rate": [], "gaps": 0, "holes": []}
    ax_price.set_title(f"{symbol} {market} {day} (UTC)")
    for stream, df in frames.items():
        if stream == "depth":       # a row per level: count events
            df = df[~df.duplicated(["first_update_id", "final_update_id"])]
        rate = df.resample(bucket).size() / seconds
        ax_rate.plot(rate.index, rate.values, lw=0.8, label=stream)
        drawn["rate"].append(stream)
    ax_rate.set_ylabel(f"messages/s ({bucket} buckets)")
    ax_rate.legend(loc="upper left", fontsize=8, ncol=len(drawn["rate"]))

    # a hole of the day may be ledgered hours later (a restart the next morning)
    ledger = load(data_dir, symbol, "gaps", start - pd.Timedelta(days=1), end + pd.Timedelta(days=1), market,
                  exact=True)
    drawn["holes"] = hole_spans(ledger, start, end, pd.Timedelta(seconds=seconds))
    for lo, hi in drawn["holes"]:
        for ax in (ax_price, ax_rate):
            ax.axvspan(lo, hi, color="red", alpha=0.15, lw=0)
    drawn["gaps"] = len(drawn["holes"])
    if drawn["gaps"]:
        ax_rate.text(0.99, 0.95, f"{drawn['gaps']} gap-ledger rows (shaded)", transform=ax_rate.transAxes,
                     ha="right", va="top", fontsize=8, color="darkred")
    fig.autofmt_xdate()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return drawn


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: python -m pip install 'binance_streamer[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _frames(data_dir, symbol, day, market, start, end):
    """``{stream: rows of the day}`` of the rate streams that have rows then."""
    folder, recorded = symbol_streams(data_dir, symbol, market)
    frames = {}
    for stream in _RATE_STREAMS:
        if day in recorded.get(stream, {}):
            df = load(data_dir, symbol, stream, start, end, market, columns=_COLUMNS.get(stream))
            if len(df):
                frames[stream] = df
    if not frames:
        kept = [s for s in _RATE_STREAMS if s in recorded]
        days = set().union(*(recorded[s] for s in kept)) - {day}
        has = (f"it has them on {days_text(days)}" if days else "it has no rows of them on any other day" if kept
               else f"it has only {', '.join(sorted(recorded))}")
        raise NotRecorded(f"no {market} {symbol} {', '.join(kept or _RATE_STREAMS)} rows on {day} in "
                          f"'{folder}': {has}")
    return frames


def _price(ax, frames):
    """Trade prices and the bookTicker mid, whichever were recorded; their names."""
    drawn = []
    trades = frames.get("aggTrade", frames.get("trade"))
    if trades is not None:
        ax.plot(trades.index, trades["price"], lw=0.6, color="tab:blue", label="trade price")
        drawn.append("trade price")
    if "bookTicker" in frames:
        t = frames["bookTicker"]
        mid = (t["best_bid_price"] + t["best_ask_price"]) / 2
        ax.plot(t.index, mid, lw=0.6, color="tab:orange", alpha=0.7, label="mid (bookTicker)")
        drawn.append("mid")
    ax.set_ylabel("price")
    if drawn:
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trades or bookTickers recorded", transform=ax.transAxes, ha="center",
                color="gray")
    return drawn


def hole_spans(ledger, start, end, min_width):
    """``[(from, to)]`` of the gap-ledger rows (:func:`~.load.load` of
    ``gaps``) whose hole overlaps ``[start, end)``, cut to it.

    A hole runs from ``last_good_time`` to ``first_time_after``. Without
    ``first_time_after`` it ends when the row was written (the recorder
    noticed it then); without ``last_good_time`` it is a mark at its end.
    Spans shorter than ``min_width`` are widened to it, back from their end
    (a hole lies before the time it ended or was noticed), to stay visible."""
    spans = []
    for written, last_good, first_after in zip(ledger.index, ledger["last_good_time"], ledger["first_time_after"]):
        hi = _time(first_after) or written
        lo = _time(last_good) or hi
        lo, hi = min(lo, hi), max(lo, hi)
        lo = min(lo, hi - min_width)
        if lo < end and hi > start:
            spans.append((max(lo, start), min(hi, end)))
    return spans


def _time(value):
    """A ledger time (ms, or µs for a time only the local clock gave) as a UTC time; None when empty."""
    if value is None or value is pd.NA or value == "":
        return None
    value = int(value)
    return pd.Timestamp(value, unit="us" if value > _US_FROM else "ms", tz="UTC")
