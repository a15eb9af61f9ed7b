"""What ``--daemon status`` shows: the report built from the manager's
status file (and psutil), its table, and the one line of ``--check``."""

import json
import time

from . import status as statusmod


def check_line(report):
    """``(exit code, one line)`` for ``--daemon status --check``: 0 OK,
    1 DEGRADED, 2 DOWN, 3 when the verdict is unknown."""
    health = report.get("health") or {}
    state = health.get("state")
    problems = health.get("problems") or []
    code = statusmod.CHECK_CODES.get(state, 3)
    detail = "; ".join(problems) if problems else "recording"
    return code, f"{state or 'UNKNOWN'}: {detail}"


def summarize(st):
    """What ``--daemon status`` shows, from the manager's status file and psutil."""
    import psutil
    now = time.time()
    procs, handles = [], []
    for p in st.get("processes", []):
        row = {k: p.get(k) for k in ("name", "state", "pid", "restarts", "heartbeat_age_s")}
        try:
            ps = psutil.Process(p["pid"]) if p.get("pid") else None
            if ps is not None:
                ps.cpu_percent(None)
                row["rss_mb"] = round(ps.memory_info().rss / 2**20, 1)
                handles.append((row, ps))
        except psutil.Error:
            pass
        procs.append(row)
    time.sleep(0.5)                  # CPU use over half a second, all processes at once
    for row, ps in handles:
        try:
            row["cpu_percent"] = ps.cpu_percent(None)
        except psutil.Error:
            pass
    children = st.get("children", {})
    return {"started": st.get("started"), "uptime_s": round(now - st["started"]) if st.get("started") else None,
            "health": st.get("health"), "connections": _connections(children),
            "manager_state": st.get("state"), "role": st.get("role", "all"), "market": st.get("market"),
            "data_dir": st.get("data_dir"),
            "processes": procs, "streams": streams(children, now),
            "unacked_bytes": {name: child.get("link", {}).get("unacked_bytes") for name, child in sorted(children.items())
                              if name.startswith("worker")},
            "disk_free_bytes": st.get("disk_free_bytes"),
            "books_in_sync": children.get("orderbook", {}).get("in_sync"),
            "writer": {k: v for k, v in children.get("writer", {}).items() if k not in ("streams", "gaps")},
            **cluster(children)}


def cluster(children):
    """Role sink: per worker, its consumer's lag and each collector feeding
    it; role collector: per worker, its publisher's buffer and errors."""
    sinks = {name: child["sink"] for name, child in sorted(children.items()) if "sink" in child}
    collectors = {name: {"collector": child.get("collector"), **child["publisher"]}
                  for name, child in sorted(children.items()) if "publisher" in child}
    return {**({"sink": sinks} if sinks else {}), **({"collector": collectors} if collectors else {})}


def collector_summary(children, read, elapsed):
    """The summary log line of a collector: what it read (``read`` messages
    in ``elapsed`` s) and what its publishers did, not rows or books."""
    pubs = [c["publisher"] for c in children.values() if "publisher" in c]
    held = sum(p.get("buffer_bytes") or 0 for p in pubs)
    return (f"{max(0, read) / max(1e-9, elapsed):.0f} msg/s read, "
            f"{sum(p.get('published') or 0 for p in pubs)} messages published to NATS, "
            f"{sum(p.get('buffer_messages') or 0 for p in pubs)} waiting ({held / 2**20:.1f} MB), "
            f"{sum(p.get('dropped_frames') or 0 for p in pubs)} frames dropped")


def stop_outcome(st, log_dir):
    """What a clean stop can truly say, from the last status: a collector's
    work is publishing to NATS, not writing rows."""
    if st.get("role") != "collector":
        return "every row was flushed"
    pubs = [c["publisher"] for c in st.get("children", {}).values() if "publisher" in c]
    left = sum(p.get("buffer_messages") or 0 for p in pubs)
    dropped = sum(p.get("dropped_frames") or 0 for p in pubs)
    if not pubs:
        return f"no worker reported what it published; see {log_dir}"
    if left:
        return (f"{left} messages were not taken by NATS before the stop: their frames are lost unless another "
                f"collector had them; see {log_dir}")
    return "every frame read was published to NATS" + (
        f" but {dropped} frames dropped while NATS did not take them (the sinks ledger them)" if dropped else "")


def killed_outcome(role):
    """What ``--daemon stop --force`` can truly say of what a kill lost."""
    if role == "sink":
        return ("nothing is lost: what it had not written stays in JetStream, unacknowledged, and the next sink "
                "start resumes from its consumer (torn lines are repaired then)")
    if role == "collector":
        return ("the frames it had not yet published to NATS were lost (the sinks ledger the hole unless another "
                "collector had them)")
    return "rows not yet flushed were lost, torn lines are repaired at the next start"


def _cluster_lines(report):
    lines = []
    for name, s in report.get("sink", {}).items():
        lines += ["", f"{name}: consumer {s['consumer']}, NATS {'up' if s.get('nats_connected') else 'DOWN'}, "
                      f"{_dash(s['num_pending'])} messages pending ({s.get('lag_s', 0)} s behind), read to "
                      f"{s['last_stream_seq']}, acknowledged to {s['acked_stream_seq']}, "
                      f"NATS errors {s['nats_errors']}, {s.get('foreign_messages', 0)} foreign messages refused"
                      + _last_error(s),
                  f"{'collector':<20} {'state':<9} {'last msg s':>10} {'frames':>10} {'holes filled by others':>22} "
                  f"{'dropped':>8}"]
        for c, info in sorted(s["collectors"].items()):
            lines.append(f"{c:<20} {info.get('state', '-'):<9} {info['last_message_age_s']:>10} {info['frames']:>10} "
                         f"{info['holes_filled_by_others']:>22} {info['dropped_frames']:>8}"
                         + (f"  ({' and '.join(info['duplicate'])})" if info.get("duplicate") else ""))
        for symbol, age in sorted((s.get("unpublished_symbols") or {}).items()):
            lines.append(f"{symbol}: no collector published it for {age} s")
    for name, p in report.get("collector", {}).items():
        lines += ["", f"{name}: collector {p['collector']}, NATS {'up' if p['nats_connected'] else 'DOWN'}, "
                      f"{p['buffer_messages']} messages ({p['buffer_bytes']} bytes) waiting, {p['published']} "
                      f"published, {p['publish_errors']} publish errors, {p['dropped_frames']} frames dropped"
                      + _last_error(p)]
    return lines


def _last_error(s):
    """``; last error 12 s ago: ...``, or nothing when there was none."""
    if not s.get("last_error"):
        return ""
    age = s.get("last_error_age_s")
    return f"; last error{'' if age is None else f' {age:.0f} s ago'}: {s['last_error']}"


def streams(children, now):
    """Per ``SYMBOL/stream``: what its worker receives, and what today's
    files hold (rows, bytes and ledger rows by action, counted by the writer
    from the files): the figures of the status table."""
    writer = children.get("writer", {})
    files, ledgers = writer.get("streams", {}), writer.get("gaps", {})
    books = children.get("orderbook", {}).get("books", {})
    received = {key: (s, child) for name, child in children.items() if name.startswith("worker")
                for key, s in child.get("streams", {}).items()}
    streams = {}
    for key in sorted(set(received) | {k for k in files if not k.endswith("/gaps")}):
        symbol, stream = key.split("/", 1)
        s, child = received.get(key, ({}, {}))
        f = files.get(key, {})
        gaps = ledgers.get(symbol, {}).get("by_stream", {}).get(stream, {})
        streams[key] = {"messages": s.get("messages"), "messages_per_s": s.get("rate"),
                        "last_message_age_s": _age(s, child, now),
                        "gaps": sum(gaps.values()), "gaps_by_action": gaps,
                        "reconnects": sum(c["reconnects"] for c in child.get("connections", [])) if child else None,
                        "resyncs": books.get(symbol, {}).get("resyncs") if stream == "depth" else None,
                        "day": f.get("day"), "rows_today": f.get("rows", 0), "bytes_today": f.get("bytes", 0)}
    return streams


def _age(stream, child, now):
    """Seconds from a stream's last message to its worker's last report (not
    to now: reports come every status_interval, and a busy stream's age
    would be mostly that)."""
    last = stream.get("last_recv_us")
    if not last:
        return None
    return round(max(0.0, (child.get("time") or now) - last / 1e6), 2)


def _connections(children):
    return [{"process": name, **{k: c.get(k) for k in ("name", "connected", "reconnects", "failures", "handovers",
                                                      "lag_s", "lag_max_s", "unread_bytes")}}
            for name, child in sorted(children.items()) if name.startswith("worker")
            for c in child.get("connections", [])]


def _dash(value):
    return "-" if value is None else value


def _num(value):
    return "-" if value is None else f"{value:.2f}"


def format_status(code, report):
    if report["state"] != "running":
        return {"stopped": f"binance-streamer is not running ({report['looked']})",
                "dead": f"binance-streamer is dead but its pidfile remains (pid {report['pid']}, "
                        f"{report['looked']})"}[report["state"]]
    health = report.get("health") or {"state": "unknown", "problems": []}
    lines = [f"binance-streamer is running (pid {report['pid']}, up {report['uptime_s']} s, "
             f"{report['market']}, data in {report['data_dir']})",
             f"health: {health['state']}" + "".join(f"\n  - {p}" for p in health["problems"]), "",
             f"{'process':<12} {'state':<9} {'pid':>7} {'restarts':>8} {'cpu%':>6} {'rss MB':>7} {'beat s':>6}"]
    for p in report["processes"]:
        beat = p.get("heartbeat_age_s")
        lines.append(f"{p['name']:<12} {p['state']:<9} {p['pid'] or '-':>7} {p['restarts']:>8} "
                     f"{p.get('cpu_percent', '-'):>6} {p.get('rss_mb', '-'):>7} {'-' if beat is None else beat:>6}")
    collector = report.get("role") == "collector"      # reads and publishes: no files, no books
    w = max([24] + [len(k) for k in report["streams"]])      # USD-M's REST series make keys of up to 38
    lines += ["", f"{'symbol/stream':<{w}} {'msg/s':>7} {'last msg':>8} {'reconn':>6}"
              + ("" if collector else f" {'gaps':>5} {'resyncs':>7} {'rows today':>10} {'MB today':>8}")]
    for key, s in sorted(report["streams"].items()):
        age = "-" if s["last_message_age_s"] is None else f"{s['last_message_age_s']}s"
        rate = "-" if s["messages_per_s"] is None else s["messages_per_s"]
        lines.append(f"{key:<{w}} {rate:>7} {age:>8} {_dash(s['reconnects']):>6}" + ("" if collector else
                     f" {s['gaps']:>5} {'-' if s['resyncs'] is None else s['resyncs']:>7} {s['rows_today']:>10} "
                     f"{s['bytes_today'] / 2**20:>8.2f}"))
    if report.get("role") != "sink" or report.get("connections"):      # a sink reads NATS, not the exchange
        lines += ["", f"{'connection':<28} {'up':>3} {'reconn':>6} {'failed':>6} {'lag s':>7} {'worst s':>7} "
                      f"{'unread KB':>9}"]
    for c in report.get("connections", []):
        lines.append(f"{c['name'] or c['process']:<28} {'yes' if c['connected'] else 'no':>3} {c['reconnects']:>6} "
                     f"{_dash(c.get('failures')):>6} "
                     f"{_num(c['lag_s']):>7} {_num(c['lag_max_s']):>7} "
                     f"{'-' if c['unread_bytes'] is None else round(c['unread_bytes'] / 1024, 1):>9}")
    free = report.get("disk_free_bytes")
    if not collector:
        lines += ["", f"not yet written (bytes per worker): {json.dumps(report.get('unacked_bytes'))}; "
                      f"books in sync: {report.get('books_in_sync')}; "
                      f"free disk: {'-' if free is None else f'{free / 2**30:.1f} GiB'}"]
    lines += _cluster_lines(report)
    return "\n".join(lines)
