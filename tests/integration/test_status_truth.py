"""What the status calls "today" is what today's files hold: rows and bytes
per stream, and the gap ledger's rows by stream and action, across a
restart of the recorder on the same day."""

import csv
import os

import pytest

from binance_streamer import csvfiles, statusreport
from tests.support import Recorder

pytestmark = pytest.mark.timeout(150)


def _on_disk(rec):
    files, gaps = {}, {}
    for path in rec.files():
        parsed = csvfiles.parse_name(os.path.basename(path))
        if parsed is None:
            continue
        symbol, stream, _ = parsed
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        files[f"{symbol}/{stream}"] = (len(rows), os.path.getsize(path))
        if stream == "gaps":
            for row in rows:
                by = gaps.setdefault(f"{symbol}/{row['stream']}", {})
                by[row["action"]] = by.get(row["action"], 0) + 1
    return files, gaps


def _differences(rec):
    st = rec.status()
    shown = statusreport.streams(st["children"], st["updated"])
    files, gaps = _on_disk(rec)
    out = [(key, (s["rows_today"], s["bytes_today"]), files.get(key)) for key, s in shown.items()
           if (s["rows_today"], s["bytes_today"]) != files.get(key)]
    out += [(key, "missing from the status") for key in files if key not in shown and not key.endswith("/gaps")]
    out += [(key, s["gaps_by_action"], gaps.get(key, {})) for key, s in shown.items()
            if s["gaps_by_action"] != gaps.get(key, {})]
    out += [(key, "ledger rows of a stream the status does not show") for key in gaps if key not in shown]
    return out


def test_rows_bytes_and_gaps_today_are_the_files(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=41, rate=150)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade", "trade", "depth@100ms", "bookTicker"])
    rec.start()
    rec.wait_status(lambda s: s["children"].get("writer", {}).get("streams", {}).get("BTCUSDT/aggTrade", {})
                    .get("rows", 0) > 50, 30, "rows written by the first run")
    assert rec.stop() == 0
    first_run = _on_disk(rec)[0]["BTCUSDT/aggTrade"][0]

    rec.start()                 # the same day, the same files: "today" includes the first run's rows
    rec.wait_status(lambda s: s["children"].get("orderbook", {}).get("in_sync") == 1, 30, "the book in sync")
    sim.faults(drop="abort")    # connections cut: ledger rows in this run
    rec.wait_status(lambda s: any(c["reconnects"] for c in s["children"]["worker-0"]["connections"]), 30,
                    "a reconnect")
    assert rec.stop() == 0
    # The writer's last report, taken after its last write, is in the final status.
    assert rec.status()["state"] == "STOPPED"
    assert _differences(rec) == []
    files, gaps = _on_disk(rec)
    assert files["BTCUSDT/aggTrade"][0] > first_run and sum(sum(g.values()) for g in gaps.values()) > 0
