"""The series users build first from trades, tickers and the gap ledger."""

import pandas as pd

from .load import load


def _trade_columns(trades):
    qty = "quantity" if "quantity" in trades.columns else "qty"
    if "price" not in trades.columns or qty not in trades.columns:
        raise ValueError("ohlcv needs aggTrade or trade rows (price and quantity columns)")
    return trades["price"].astype("float64"), trades[qty].astype("float64")


def ohlcv(trades, interval="1min", contract_size=None):
    """Trades (aggTrade or trade frames from :func:`load`) -> bars.

    One row per interval (left-labelled, left-closed, like Binance's klines):
    open, high, low, close, volume, quote_volume, count (trades), and
    taker_buy_volume (trades whose buyer was the taker). Intervals without
    a trade have NaN prices and zero volume.

    COIN-M quantities are contracts of ``contract_size`` USD each (its
    exchangeInfo ``contractSize``: 100 for BTCUSD, 10 for most others): pass
    it and the bars have ``base_volume`` (contracts x contract_size / price,
    in the base asset, as COIN-M's klines) in place of quote_volume."""
    price, qty = _trade_columns(trades)
    quote = price * qty if contract_size is None else qty * float(contract_size) / price
    frame = pd.DataFrame({"price": price, "qty": qty, "quote": quote})
    if "is_buyer_maker" in trades.columns:
        frame["taker_buy"] = qty.where(~trades["is_buyer_maker"].astype(bool), 0.0)
    if "first_trade_id" in trades.columns:      # an aggTrade row stands for several trades
        frame["n"] = (trades["last_trade_id"] - trades["first_trade_id"] + 1).astype("float64")
    else:
        frame["n"] = 1.0
    bars = frame.resample(interval, label="left", closed="left")
    out = bars["price"].ohlc()
    out["volume"] = bars["qty"].sum()
    out["quote_volume" if contract_size is None else "base_volume"] = bars["quote"].sum()
    out["count"] = bars["n"].sum().astype("int64")
    if "taker_buy" in frame.columns:
        out["taker_buy_volume"] = bars["taker_buy"].sum()
    return out


def spread(tickers):
    """bookTicker rows -> bid, ask, mid, spread and spread in basis points of mid."""
    bid = tickers["best_bid_price"].astype("float64")
    ask = tickers["best_ask_price"].astype("float64")
    mid = (bid + ask) / 2
    return pd.DataFrame({"bid": bid, "ask": ask, "mid": mid, "spread": ask - bid,
                         "spread_bps": (ask - bid) / mid * 1e4}, index=tickers.index)


def gaps(data_dir, symbol, start=None, end=None, market="spot"):
    """The gap ledger of a symbol over a time range, indexed by when each row
    was made (``local_time_us``) and sorted by it, with ``last_good_time`` and
    ``first_time_after`` (ms since the epoch in the file) as UTC times."""
    df = load(data_dir, symbol, "gaps", start, end, market, exact=True)
    for column in ("last_good_time", "first_time_after"):
        df[column] = pd.to_datetime(df[column], unit="ms", utc=True)
    return df
