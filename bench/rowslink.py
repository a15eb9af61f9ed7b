"""CPU of the rows link per message, both ends, in one process.

    python bench/rowslink.py [--repeat 20] [--every 2000] [--flush 16000]

A worker (driven in-process) parses the real spot captures
(../shared/realdata/cryptofeed: BINANCE-b38f7c.0 and BINANCE-ee25be.0);
every ``--every`` frames its Batch is taken, as the worker's sender would.
Then, each timed alone (CPU time, the best of ``--repeat``):

- send: ``messages.pack_rows`` and ``links.Outbox.add`` (the frame kept
  until acknowledged), as the worker's hand-on to the writer, with the
  worker's setting of the C allocator (``proc.map_large_blocks``);
- receive: the frames decoded by a ``links.Link`` (``Link._decode``) and
  taken by a ``writer.Writer`` writing into a temporary directory, its
  files written every ``--flush`` frames (as due files are; no fsync).

Printed in microseconds per captured message (each depth diff is one
message of about six rows).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from binance_streamer import config, links, messages, proc, writer  # noqa: E402
from binance_streamer.worker import Worker  # noqa: E402
from replay import CAPTURES, MARKETS  # noqa: E402


def read_frames(folder):
    frames = []
    for name in MARKETS["spot"]:
        with open(os.path.join(folder, name), "rb") as f:
            for line in f:
                if line[:1].isdigit():
                    ts, _, text = line.rstrip(b"\n").partition(b": ")
                    frames.append((float(ts), text))
    return frames


def batches(cfg, symbols, frames, every):
    """The worker's batches, as taken by its sender."""
    w = Worker(cfg, symbols)
    out = []
    for i, (ts, text) in enumerate(frames, 1):
        w.on_frames([text], int(ts * 1e6))
        if i % every == 0:
            out.append(w.take_batch())
    out.append(w.take_batch())
    return [b for b in out if b]


def send(items_list):
    outbox = links.Outbox(1 << 62)
    t0 = time.process_time()
    for items in items_list:
        outbox.add(lambda seq: messages.Batch(seq, messages.pack_rows(items)))
    return time.process_time() - t0, outbox.all()


def receiver(cfg):
    """A writer with every file of the captures open (a first pass written,
    untimed): the timed passes see a running writer, not its start-up."""
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    os.makedirs(cfg.data_dir)
    return writer.Writer(cfg, clock=lambda: 1.6e9)


def receive(w, frames, flush_every):
    """One pass of ``frames`` into ``w``, its memory of ids forgotten first
    (each pass writes the same rows again, none of them a repeat)."""
    w.seq.last.clear()
    w.seq.tail.clear()
    w.keys.clear()
    a, b = links.pair()
    a.close()
    link = links.Link(b, "worker-0")
    t0 = time.process_time()
    for i, data in enumerate(frames, 1):
        link.inbuf += data
        for msg in link._decode():
            w.take(msg.items, "worker-0")
        if i % flush_every == 0:
            w.flush_due(float("inf"))
    w.flush_due(float("inf"))
    spent = time.process_time() - t0
    link.close()
    return spent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--every", type=int, default=2000, help="captured messages per Batch (about batch_interval at 20,000 messages a second)")
    ap.add_argument("--flush", type=int, default=16000, help="captured messages between two flushes of the due files")
    ap.add_argument("--captures", default=CAPTURES)
    args = ap.parse_args()
    frames = read_frames(args.captures)
    symbols = sorted({orjson.loads(t)["stream"].split("@")[0].upper() for _, t in frames})
    tmp = tempfile.mkdtemp(prefix="rowslink-")
    try:
        cfg = config.load(None, {"market": "spot", "symbols": ",".join(symbols), "data_dir": os.path.join(tmp, "data"),
                                 "run_dir": os.path.join(tmp, "run"), "log_dir": os.path.join(tmp, "logs"),
                                 "streams": "aggTrade,depth@100ms,kline_1m,bookTicker"})
        items = batches(cfg, symbols, frames, args.every)
        rows = sum(len(m.ids) for b in items for m in b if m.__class__ is messages.Rows)
        _, out = send(items)
        w = receiver(cfg)
        flush_every = max(1, args.flush // args.every)
        got = min(receive(w, out, flush_every) for _ in range(args.repeat + 1))
        w.close()
        proc.map_large_blocks()        # as a worker does (the writer does not)
        sent = min(send(items)[0] for _ in range(args.repeat))
        n = len(frames)
        print(f"{n} messages, {rows} rows, {len(items)} batches, {sum(map(len, out))} bytes framed")
        print(f"send    (pack_rows + frame): {sent / n * 1e6:.3f} us/msg")
        print(f"receive (decode + writer):   {got / n * 1e6:.3f} us/msg")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
