"""The metrics: the collector on a hand-built snapshot, /health's verdict,
and what the writer counts for them (metrics.py)."""

import json
import os
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from binance_streamer import config, csvfiles, metrics
from binance_streamer.metrics import LATENCY_BUCKETS, PREFIX, Collector, WriteCounts, health_answer
from binance_streamer.sequence import gap_row
from binance_streamer.writer import Writer

NOW = 1_800_000_000.0


class Budget:
    def usage(self):
        return {"spent": 1200.0, "used_minute": 40.0, "limit": 6000.0, "429": 2.0, "418": 1.0}

    def paused_for(self):
        return 12.5


def snapshot(**changes):
    """What ProcessManager.snapshot makes, small: a writer, a book manager,
    a worker running and one waiting to be restarted."""
    procs = [{"name": "writer", "role": "writer", "state": "RUNNING", "restarts": 0, "pid": 101,
              "heartbeat_age_s": 0.4},
             {"name": "orderbook", "role": "orderbook", "state": "RUNNING", "restarts": 1, "pid": 102,
              "heartbeat_age_s": 0.1},
             {"name": "worker-0", "role": "worker", "state": "RUNNING", "restarts": 0, "pid": 103,
              "heartbeat_age_s": 0.9},
             {"name": "worker-1", "role": "worker", "state": "BACKOFF", "restarts": 3, "pid": None,
              "heartbeat_age_s": None}]
    worker = {"streams": {"BTCUSDT/aggTrade": {"messages": 500, "last_recv_us": int((NOW - 2.5) * 1e6),
                                               "gaps": 1, "backfilled": 7, "last_id": 99}},
              "counts": {"malformed": 1, "unknown": 0, "duplicates": 4, "errors": 0, "open_klines": 9},
              "connections": [{"name": "ws-spot-btcusdt", "group": "spot", "connected": True, "reconnects": 2,
                               "failures": 1, "handovers": 3, "lag_s": 0.05, "lag_max_s": 0.2,
                               "unread_bytes": 100}],
              "link": {"unacked_bytes": 5000, "unacked_batches": 2, "book_events_dropped": 0,
                       "book_pending_bytes": 64},
              "rest_requests": 12, "rest_failures": 1}
    stale = {"streams": {"ETHUSDT/aggTrade": {"messages": 80, "last_recv_us": None, "backfilled": 0}},
             "connections": [{"name": "ws-spot-ethusdt", "connected": True, "reconnects": 0, "failures": 0,
                              "handovers": 0, "lag_s": 9.0, "lag_max_s": 9.0, "unread_bytes": 7}],
             "link": {"unacked_bytes": 77, "unacked_batches": 1}}
    writer = {"pending_rows": 10, "open_files": 4, "open_holes": 1, "write_errors": 0, "duplicates_dropped": 3,
              "written_total": {"BTCUSDT/aggTrade": {"rows": 490, "bytes": 45000},
                                "BTCUSDT/gaps": {"rows": 2, "bytes": 300}},
              "gaps_total": [["BTCUSDT", "aggTrade", "reconnect", "backfilled", 1],
                             ["BTCUSDT", "depth", "reconnect", "lost", 1]],
              "disk_latency": {"le": list(LATENCY_BUCKETS),
                               "streams": {"aggTrade": {"counts": [0, 0, 0, 0, 0, 100, 300, 80, 0, 0, 0, 0, 0, 0, 10],
                                                        "sum": 612.5}}}}
    book = {"books": {"BTCUSDT": {"state": "synced", "resyncs": 2, "snapshots": 3},
                      "ETHUSDT": {"state": "requested", "resyncs": 0, "snapshots": 1}},
            "link": {"unacked_bytes": 300, "unacked_batches": 1}}
    snap = {"state": "RUNNING", "pid": 100, "updated": NOW - 1.0, "status_interval": 2.0, "processes": procs,
            "children": {"worker-0": worker, "worker-1": stale, "writer": writer, "orderbook": book},
            "health": {"state": "DEGRADED", "problems": ["worker-1 is BACKOFF"]},
            "restarts": 4, "logs_dropped": 0, "rest_weight_spent": 1200, "disk_free_bytes": 5e9}
    snap.update(changes)
    return snap


def scrape(snap, budget=Budget()):
    """The text a scrape answers, parsed back by prometheus_client's parser:
    ``{(sample name, sorted labels): value}``."""
    usage = {100: (1.5, 70e6), 101: (2.0, 30e6), 102: (0.5, 40e6), 103: (9.25, 45e6)}.get
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(lambda: snap, budget, usage=usage, clock=lambda: NOW))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith(PREFIX) and family.name[len(PREFIX):] in _declared(), family.name
        for s in family.samples:
            out[(s.name[len(PREFIX):], tuple(sorted(s.labels.items())))] = s.value
    return out


def _declared():
    """Family names as the parser gives them (counters without _total)."""
    return {n[:-len("_total")] if kind == "counter" else n for n, (kind, _, _) in metrics.METRICS.items()}


def v(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_the_collector_turns_a_snapshot_into_metric_families():
    m = scrape(snapshot())
    assert v(m, "messages_received_total", symbol="BTCUSDT", stream="aggTrade") == 500
    assert v(m, "last_message_age_seconds", symbol="BTCUSDT", stream="aggTrade") == 2.5
    assert v(m, "backfilled_rows_total", symbol="BTCUSDT", stream="aggTrade") == 7
    assert v(m, "rows_written_total", symbol="BTCUSDT", stream="aggTrade") == 490
    assert v(m, "bytes_written_total", symbol="BTCUSDT", stream="gaps") == 300
    assert v(m, "gaps_total", symbol="BTCUSDT", stream="depth", reason="reconnect", action="lost") == 1
    assert v(m, "reconnects_total", process="worker-0", connection="ws-spot-btcusdt") == 2
    assert v(m, "handovers_total", process="worker-0", connection="ws-spot-btcusdt") == 3
    assert v(m, "connection_failures_total", process="worker-0", connection="ws-spot-btcusdt") == 1
    assert v(m, "connection_lag_max_seconds", process="worker-0", connection="ws-spot-btcusdt") == 0.2
    assert v(m, "events_dropped_total", process="worker-0", reason="duplicates") == 4
    assert ("events_dropped_total", (("process", "worker-0"), ("reason", "open_klines"))) not in m
    assert v(m, "link_unacked_bytes", process="worker-0") == 5000
    assert v(m, "link_unacked_bytes", process="orderbook") == 300
    assert v(m, "book_link_pending_bytes", process="worker-0") == 64
    assert v(m, "writer_pending_rows") == 10 and v(m, "duplicates_dropped_total") == 3
    assert v(m, "book_in_sync", symbol="BTCUSDT") == 1 and v(m, "book_in_sync", symbol="ETHUSDT") == 0
    assert v(m, "book_resyncs_total", symbol="BTCUSDT") == 2
    assert v(m, "rest_weight_used_total") == 1200 and v(m, "rest_weight_used_minute") == 40
    assert v(m, "rest_limited_total", code="429") == 2 and v(m, "rest_limited_total", code="418") == 1
    assert v(m, "rest_paused_seconds") == 12.5
    assert v(m, "rest_requests_total", process="worker-0") == 12


def test_processes_and_health():
    m = scrape(snapshot())
    assert v(m, "process_cpu_seconds_total", process="worker-0", role="worker") == 9.25
    assert v(m, "process_resident_memory_bytes", process="manager", role="manager") == 70e6
    assert v(m, "process_restarts_total", process="worker-1", role="worker") == 3
    assert v(m, "process_running", process="worker-1", role="worker") == 0
    assert ("process_cpu_seconds_total", (("process", "worker-1"), ("role", "worker"))) not in m     # no pid
    assert [v(m, "health", state=s) for s in ("OK", "DEGRADED", "DOWN")] == [0, 1, 0]
    assert v(m, "health_problems") == 1 and v(m, "recorder_state", state="RUNNING") == 1
    assert v(m, "status_age_seconds") == 1.0 and v(m, "disk_free_bytes") == 5e9


def test_a_process_that_is_not_running_shows_no_stale_gauges():
    """worker-1 waits for its restart: its last report's counters stay, its
    connection is not counted as up and its lag and link are not shown."""
    m = scrape(snapshot())
    assert v(m, "messages_received_total", symbol="ETHUSDT", stream="aggTrade") == 80
    assert v(m, "connected", process="worker-1", connection="ws-spot-ethusdt") == 0
    assert ("connection_lag_seconds", (("connection", "ws-spot-ethusdt"), ("process", "worker-1"))) not in m
    assert ("link_unacked_bytes", (("process", "worker-1"),)) not in m
    assert not any(k[0] == "last_message_age_seconds" and ("symbol", "ETHUSDT") in k[1] for k in m)


def test_the_latency_histogram_is_cumulative():
    m = scrape(snapshot())
    bucket = {le: v(m, "receive_to_disk_seconds_bucket", stream="aggTrade", le=le)
              for le in ("0.75", "1.0", "1.25", "1.5", "60.0", "+Inf")}
    assert bucket == {"0.75": 0, "1.0": 100, "1.25": 400, "1.5": 480, "60.0": 480, "+Inf": 490}
    assert v(m, "receive_to_disk_seconds_count", stream="aggTrade") == 490
    assert v(m, "receive_to_disk_seconds_sum", stream="aggTrade") == 612.5


def test_health_states_are_shown_generically():
    m = scrape(snapshot(health={"state": "PAUSED", "problems": []}))
    assert v(m, "health", state="PAUSED") == 1 and v(m, "health", state="OK") == 0


def test_without_a_budget_the_snapshot_gives_the_weight_spent():
    m = scrape(snapshot(), budget=None)
    assert v(m, "rest_weight_used_total") == 1200
    assert not any(k[0] == "rest_limited_total" for k in m)


def test_no_snapshot_yet_means_no_metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(lambda: None, None, usage=lambda pid: None))
    assert generate_latest(registry) == b""


@pytest.mark.parametrize("state, problems, updated, code", [
    ("OK", [], NOW - 1, 200),
    ("DEGRADED", ["worker-1 is BACKOFF"], NOW - 1, 200),
    ("DOWN", ["writer is FATAL"], NOW - 1, 503),
    ("SOMETHING_NEW", [], NOW - 1, 503),
    ("OK", [], NOW - 60, 503),             # no status for a minute (status_interval 2 s): the manager is hung
])
def test_health_answer(state, problems, updated, code):
    got, body = health_answer(snapshot(health={"state": state, "problems": problems}, updated=updated), NOW, 2.0)
    stale = updated < NOW - 16
    assert got == code
    assert body["state"] == ("DOWN" if stale else state) and body["recorder"] == "RUNNING"
    assert problems[0] in body["problems"] if problems else True
    if stale:
        assert body["problems"][0].startswith("the status file was last updated 60 s ago")


def test_health_answer_before_the_first_snapshot():
    code, body = health_answer(None, NOW, 2.0)
    assert code == 503 and body["state"] == "DOWN" and body["recorder"] is None


# -- what the writer counts -----------------------------------------------------------------
@pytest.mark.parametrize("stream", ["aggTrade", "trade", "kline_1m", "bookTicker", "depth", "depthSnapshot",
                                    "orderbook"])
def test_the_receive_time_is_read_from_its_column(stream):
    cols = csvfiles.columns("spot", stream)
    line = ",".join(str(1000 + i) for i in range(len(cols))) + "\n"
    where = metrics.receive_column("spot", stream)
    name = "response_time_us" if stream == "depthSnapshot" else "local_time_us"
    assert metrics.receive_time(line, where) == 1000 + cols.index(name)


def test_write_counts_rows_bytes_gaps_and_latency():
    c = WriteCounts("spot")
    key = ("BTCUSDT", "trade", "2026-01-01")
    recv = int(NOW * 1e6)
    trade = "1,1.0,2.0,2.0,{t},True,True,{t},{r}\n"
    c.arrived(key, [trade.format(t=1, r=recv), trade.format(t=1, r=recv + 100_000)])      # 2 rows at NOW
    c.arrived(key, [trade.format(t=1, r=recv + 2_000_000)])                               # 1 row 2 s later
    c.arrived(key, [trade.format(t=1, r="")])            # no receive time: not in the histogram
    c.gap("BTCUSDT", gap_row(recv, "trade", "reconnect", 5, 9, "lost"))
    c.gap("BTCUSDT", gap_row(recv, "trade", "reconnect", 12, 15, "lost"))
    c.written(key, 4, 400, NOW + 2.6)
    r = c.report()
    assert r["written_total"] == {"BTCUSDT/trade": {"rows": 4, "bytes": 400}}
    assert r["gaps_total"] == [["BTCUSDT", "trade", "reconnect", "lost", 2]]
    counts = r["disk_latency"]["streams"]["trade"]["counts"]
    assert counts[LATENCY_BUCKETS.index(0.75)] == 1 and counts[LATENCY_BUCKETS.index(3.0)] == 2
    assert sum(counts) == 3
    assert r["disk_latency"]["streams"]["trade"]["sum"] == pytest.approx(2 * 2.6 + 0.6)
    c.written(key, 0, 0, NOW + 3)                       # nothing pending any more: nothing counted twice
    assert sum(c.report()["disk_latency"]["streams"]["trade"]["counts"]) == 3


def test_the_writer_reports_what_reached_its_files(tmp_path):
    cfg = config.load(None, {"data_dir": str(tmp_path / "data"), "symbols": "BTCUSDT"})
    w = Writer(cfg)
    recv = int(NOW * 1e6)
    agg = "{a},1.00,2.00,{a},{a},1000,True,True,1000,{r},0\n"
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1, 2], [agg.format(a=1, r=recv), agg.format(a=2, r=recv)])
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [2, 3], [agg.format(a=2, r=recv), agg.format(a=3, r=recv)])
    w.add_gap("BTCUSDT", gap_row(recv, "orderbook", "depth gap", 5, 9, "resync"))
    w.close()
    r = w.status()
    path = csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "aggTrade", "2026-01-01")
    with open(path, "rb") as f:
        data = f.read()
    assert r["written_total"]["BTCUSDT/aggTrade"] == {"rows": 3, "bytes": len(data)}    # the duplicate is not
    assert r["written_total"]["BTCUSDT/gaps"]["rows"] == 1
    assert r["gaps_total"] == [["BTCUSDT", "orderbook", "depth gap", "resync", 1]]
    assert sum(r["disk_latency"]["streams"]["aggTrade"]["counts"]) == 3
    assert "gaps" not in r["disk_latency"]["streams"]


# -- the docs name only metrics that exist ------------------------------------------------------
def _doc(*parts):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", *parts), encoding="utf-8") as f:
        return f.read()


def _names_in(text):
    names = set(re.findall(rf"{PREFIX}([a-z0-9_]+)", text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) if n.startswith("receive_to_disk_seconds") else n for n in names}


def dashboard_queries():
    dash = json.loads(_doc("docs", "grafana-dashboard.json"))
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", ())]


def alert_rules():
    return [r for g in yaml.safe_load(_doc("docs", "prometheus-alerts.yml"))["groups"] for r in g["rules"]]


def test_the_dashboard_and_the_alert_rules_use_declared_metrics():
    queries = dashboard_queries()
    rules = alert_rules()
    assert len(queries) > 20 and len(rules) > 10
    for text in queries + [r["expr"] for r in rules]:
        assert _names_in(text) <= set(metrics.METRICS), text
    used = _names_in(" ".join(queries + [r["expr"] for r in rules]))
    assert {"rows_written_total", "gaps_total", "receive_to_disk_seconds", "book_in_sync", "health"} <= used


def test_the_readme_lists_every_metric():
    assert metrics.render_markdown() in _doc("README.md")


def test_every_declared_family_is_served_before_its_first_sample():
    """A rule on gaps_total or rest_limited_total works before the first gap
    or 429: the family (HELP and TYPE) is there from the first scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(lambda: {"state": "RUNNING", "updated": NOW}, Budget(), usage=lambda pid: None,
                                clock=lambda: NOW))
    text = generate_latest(registry).decode()
    served = {f.name[len(PREFIX):] for f in text_string_to_metric_families(text)}
    # (the parser names a counter family without its _total)
    assert served >= {"gaps", "rest_limited", "receive_to_disk_seconds"}
    assert served == {n[:-len("_total")] if n.endswith("_total") else n for n in metrics.METRICS}
