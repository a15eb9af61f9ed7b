"""``--plot``: one PNG of a symbol's day: price, messages per second per
stream, and the gap ledger's holes shaded across both panels."""

import os

import pandas as pd

from .load import load

_RATE_STREAMS = ("aggTrade", "trade", "depth", "bookTicker")


def plot_day(data_dir, symbol, day, out_path, market="spot"):
    """Draw the day and write ``out_path``; returns what was drawn, per panel."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: python -m pip install 'binance_streamer[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = pd.Timestamp(day, tz="UTC")
    end = start + pd.Timedelta(days=1)
    frames = {s: load(data_dir, symbol, s, start, end, market) for s in _RATE_STREAMS}
    if all(f.empty for f in frames.values()):
        raise RuntimeError(f"nothing recorded for {symbol} on {day} in {data_dir}/{market}; "
                           f"see binance-streamer --status")
    span = max(f.index.max() for f in frames.values() if len(f)) - min(f.index.min() for f in frames.values()
                                                                      if len(f))
    bucket = "1s" if span <= pd.Timedelta(hours=2) else "1min"
    seconds = pd.Timedelta(bucket).total_seconds()

    fig, (ax_price, ax_rate) = plt.subplots(2, 1, sharex=True, figsize=(12, 7),
                                            gridspec_kw={"height_ratios": [3, 2]})
    drawn = {"price": [], "rate": [], "gaps": 0}
    trades = frames["aggTrade"] if len(frames["aggTrade"]) else frames["trade"]
    if len(trades):
        ax_price.plot(trades.index, trades["price"], lw=0.6, color="tab:blue", label="trade price")
        drawn["price"].append("trade price")
    if len(frames["bookTicker"]):
        t = frames["bookTicker"]
        mid = (t["best_bid_price"] + t["best_ask_price"]) / 2
        ax_price.plot(t.index, mid, lw=0.6, color="tab:orange", alpha=0.7, label="mid (bookTicker)")
        drawn["price"].append("mid")
    ax_price.set_ylabel("price")
    ax_price.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_price.legend(loc="upper left", fontsize=8)
    ax_price.set_title(f"{symbol} {market} {day} (UTC)")

    for stream, df in frames.items():
        if not len(df):
            continue
        if stream == "depth":       # a row per level: count events
            df = df[~df.duplicated(["first_update_id", "final_update_id"])]
        rate = df.resample(bucket).size() / seconds
        ax_rate.plot(rate.index, rate.values, lw=0.8, label=stream)
        drawn["rate"].append(stream)
    ax_rate.set_ylabel(f"messages/s ({bucket} buckets)")
    ax_rate.legend(loc="upper left", fontsize=8, ncol=len(drawn["rate"]) or 1)

    gaps = load(data_dir, symbol, "gaps", start - pd.Timedelta(hours=1), end + pd.Timedelta(hours=1), market,
                exact=True)
    for when, row in gaps.iterrows():
        lo = _ms(row["last_good_time"]) or _ms(row["first_time_after"]) or when
        hi = _ms(row["first_time_after"]) or when
        lo, hi = min(lo, hi), max(lo, hi)
        if hi - lo < pd.Timedelta(seconds=seconds):
            hi = lo + pd.Timedelta(seconds=seconds)      # keep short holes visible
        for ax in (ax_price, ax_rate):
            ax.axvspan(lo, hi, color="red", alpha=0.15, lw=0)
        drawn["gaps"] += 1
    if drawn["gaps"]:
        ax_rate.text(0.99, 0.95, f"{drawn['gaps']} gap-ledger rows (shaded)", transform=ax_rate.transAxes,
                     ha="right", va="top", fontsize=8, color="darkred")
    fig.autofmt_xdate()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return drawn


def _ms(value):
    if value is pd.NA or value is None or value == "":
        return None
    return pd.Timestamp(int(value), unit="ms", tz="UTC")
