"""The metrics endpoint of a running recorder: its counters against the
files on disk, /health, a port that is taken, and a real Prometheus server
scraping it (skipped where the prometheus binary is absent)."""

import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from binance_streamer import config, csvfiles, metrics
from tests.support import Recorder, wait_for
from tests.unit.test_metrics import dashboard_queries

pytestmark = pytest.mark.timeout(150)

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PREFIX = metrics.PREFIX
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http():
    session = requests.Session()
    session.trust_env = False         # a proxy in the environment must not take 127.0.0.1
    return session


def scrape(port):
    """``{(name without the prefix, sorted labels): value}`` of one scrape,
    parsed by prometheus_client's own parser."""
    text = http().get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name[len(PREFIX):], tuple(sorted(s.labels.items())))] = s.value
    return out


def by_symbol_stream(samples, name):
    return {(dict(labels)["symbol"], dict(labels)["stream"]): value for (n, labels), value in samples.items()
            if n == name}


def rows_on_disk(rec):
    """``{(symbol, stream): data rows}`` of every CSV file: lines less headers."""
    out = {}
    for path in glob.glob(os.path.join(rec.dir, "data", rec.market, "*", "*.csv")):
        symbol, stream, _ = csvfiles.parse_name(os.path.basename(path))
        with open(path, "rb") as f:
            lines = f.read().count(b"\n")
        out[(symbol, stream)] = out.get((symbol, stream), 0) + lines - 1
    return out


def _start(simulator, tmp_path, port, **settings):
    sim = simulator(symbols=tuple(SYMBOLS), seed=7, rate=150)
    # One orderbook row per symbol at the start, none later: while the
    # exchange is silent, nothing more reaches the files.
    rec = Recorder(tmp_path, sim, SYMBOLS, metrics_port=port, orderbook_interval=3600, **settings).start()
    return sim, rec


def test_counters_match_the_files_and_health_answers(simulator, tmp_path):
    port = free_port()
    sim, rec = _start(simulator, tmp_path, port)
    try:
        health = http().get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.status_code == 200 and health.json()["state"] in ("OK", "DEGRADED"), health.text
        wait_for(lambda: all(scrape(port).get(("book_in_sync", (("symbol", s),))) == 1 for s in SYMBOLS), 30,
                 "both books in sync")
        sim.faults(drop="abort")          # a reconnect: ledger rows, backfills, resyncs
        wait_for(lambda: sum(v for (n, _), v in scrape(port).items() if n == "reconnects_total") >= 2, 30,
                 "both workers reconnected")
        wait_for(lambda: sum(v for (n, _), v in scrape(port).items() if n == "gaps_total") > 0, 30,
                 "ledger rows")
        sim.faults(stall=25)              # the exchange falls silent: the counters must settle on the files
        samples = _settled(rec, port)
        assert http().get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        code = rec.stop()
    assert code == 0, rec.log_tail()
    written, disk = by_symbol_stream(samples, "rows_written_total"), rows_on_disk(rec)
    assert {k for k in disk if k[1] != "gaps"} >= {(s, st) for s in SYMBOLS for st in
                                                    ("aggTrade", "trade", "depth", "bookTicker", "orderbook",
                                                     "depthSnapshot")}
    for symbol in SYMBOLS:
        gaps = sum(v for (n, labels), v in samples.items() if n == "gaps_total" and ("symbol", symbol) in labels)
        assert gaps == disk.get((symbol, "gaps"), 0) > 0, symbol
    for stream in {st for _, st in disk} - {"gaps"}:
        count = samples[("receive_to_disk_seconds_count", (("stream", stream),))]
        assert count == sum(n for (_, st), n in written.items() if st == stream), stream
        mean = samples[("receive_to_disk_seconds_sum", (("stream", stream),))] / count
        assert 0 <= mean < 3.0, (stream, mean)
    for role in ("manager", "writer", "orderbook", "worker"):
        assert any(n == "process_cpu_seconds_total" and ("role", role) in labels and v > 0
                   for (n, labels), v in samples.items()), role


def _settled(rec, port, timeout=20):
    """The first scrape whose rows_written_total equals the files on disk for
    every file, and whose trades received equal the trades written (each
    process's report is up to a second old, the workers' and the writer's
    not equally)."""
    last = {}

    def same():
        samples = scrape(port)
        written, disk = by_symbol_stream(samples, "rows_written_total"), rows_on_disk(rec)
        received = by_symbol_stream(samples, "messages_received_total")
        last["diff"] = {k: (written.get(k), n) for k, n in disk.items() if written.get(k) != n}
        last["diff"].update({("received", k): (received.get(k), written.get(k)) for k in written
                             if k[1] == "trade" and received.get(k) != written.get(k)})
        return samples if disk and not last["diff"] else None
    try:
        return wait_for(same, timeout, "the counters to match the files", interval=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (metric, on disk) that differ: {last.get('diff')}") from None


def test_a_port_in_use_is_refused_at_start_in_one_line(simulator, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    sim = simulator(symbols=tuple(SYMBOLS), seed=7, rate=50)
    rec = Recorder(tmp_path, sim, SYMBOLS, metrics_port=port)
    try:
        for command in ([], ["--daemon", "start"]):
            out = subprocess.run([sys.executable, "-m", "binance_streamer", "--config", rec.config, *command],
                                 cwd=rec.dir, capture_output=True, text=True, timeout=60)
            assert out.returncode == 2, out.stderr
            assert out.stderr == (f"binance-streamer: error: metrics: cannot listen on 127.0.0.1:{port} (Address "
                                  "already in use); free the port or set another metrics_port\n"), out.stderr
    finally:
        taken.close()
    assert rec.files() == []


def test_the_endpoint_before_and_after_the_first_snapshot(caplog):
    cfg = config.load(None, {"metrics_port": free_port()})
    endpoint = metrics.Endpoint(cfg)
    assert endpoint.start()
    try:
        base = f"http://127.0.0.1:{endpoint.port}"
        first = http().get(f"{base}/health", timeout=5)
        assert first.status_code == 503 and first.json()["state"] == "DOWN"
        assert http().get(f"{base}/metrics", timeout=5).text == ""
        assert http().get(f"{base}/nothing", timeout=5).status_code == 404
        endpoint.update({"state": "RUNNING", "updated": time.time(), "processes": [], "children": {},
                         "health": {"state": "DEGRADED", "problems": ["worker-0 is BACKOFF"]}})
        answer = http().get(f"{base}/health", timeout=5)
        assert answer.status_code == 200 and answer.json()["problems"] == ["worker-0 is BACKOFF"]
        assert 'binance_streamer_health{state="DEGRADED"} 1.0' in http().get(f"{base}/metrics", timeout=5).text
        # A second endpoint on the same port: one ERROR line, no exception.
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="binance_streamer.metrics"):
            assert metrics.Endpoint(cfg).start() is False
        assert [r.levelname for r in caplog.records if r.name == "binance_streamer.metrics"] == ["ERROR"]
    finally:
        endpoint.stop()


# -- a real Prometheus server ------------------------------------------------------------------
def prometheus_binary():
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("no prometheus binary (Debian: apt-get install prometheus; .ci/run installs it as root)")
    return path


def test_prometheus_scrapes_the_recorder_and_loads_the_alert_rules(simulator, tmp_path):
    binary = prometheus_binary()
    port, web = free_port(), free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(textwrap.dedent(f"""\
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        rule_files: ["{REPO}/docs/prometheus-alerts.yml"]
        scrape_configs:
          - job_name: binance_streamer
            static_configs:
              - targets: ["127.0.0.1:{port}"]
        """))
    (tmp_path / "rec").mkdir()
    sim, rec = _start(simulator, tmp_path / "rec", port)
    log = open(tmp_path / "prometheus.log", "w")
    server = subprocess.Popen([binary, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{web}"], stdout=subprocess.DEVNULL, stderr=log,
                              start_new_session=True)
    api = f"http://127.0.0.1:{web}/api/v1"
    try:
        def query(q):
            try:
                answer = http().get(f"{api}/query", params={"query": q}, timeout=5).json()
            except (requests.RequestException, ValueError):
                return []
            return answer.get("data", {}).get("result", [])
        rows = wait_for(lambda: query('sum by (symbol) (binance_streamer_rows_written_total{stream="trade"}) > 0'),
                        60, "Prometheus to have the recorder's trade rows", interval=0.5)
        assert {r["metric"]["symbol"] for r in rows} == set(SYMBOLS)
        assert wait_for(lambda: query('up{job="binance_streamer"} == 1'), 30, "the target to be up", interval=0.5)
        wait_for(lambda: query("histogram_quantile(0.99, sum by (le) "
                               "(rate(binance_streamer_receive_to_disk_seconds_bucket[10s])))"),
                 30, "a latency quantile", interval=0.5)

        def rules_evaluated():
            groups = http().get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None
        rules = wait_for(rules_evaluated, 30, "every alert rule evaluated", interval=0.5)
        assert [r["name"] for r in rules if r["health"] != "ok"] == []
        for expr in dashboard_queries():      # Grafana's variables as Grafana fills them in
            for var, value in (("$__rate_interval", "5s"), ("$__interval", "5s"), ("$__range", "1m"),
                               ("$instance", ".*"), ("$symbol", ".*")):
                expr = expr.replace(var, value)
            answer = http().get(f"{api}/query", params={"query": expr}, timeout=5).json()
            assert answer["status"] == "success", (expr, answer)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nprometheus said:\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}") from None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        log.close()
        code = rec.stop()
    assert code == 0, rec.log_tail()


def test_the_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool (Debian: apt-get install prometheus)")
    done = subprocess.run([promtool, "check", "rules", os.path.join(REPO, "docs", "prometheus-alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
