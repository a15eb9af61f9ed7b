"""The worker's read path alone: CPU per message of reading WebSocket frames over TLS.

    python bench/readpath.py --runs 5

A server process encrypts the real spot captures' frames (../shared/
realdata/cryptofeed: BINANCE-b38f7c.0 + BINANCE-ee25be.0, looped up to
``--messages``) as text frames, one TLS record per frame as Binance writes
them, and sends them over loopback (encrypted before the client starts
reading, so the server costs the reader little). The client reads them
through tls.TLSSocket and frames.FrameReader as a worker's reader thread
does: a read, then ``--interval`` seconds of rest unless that read was full.
Per run: the reader's thread CPU per message (its sleeps do not count);
the table shows the min and median of ``--runs`` (the min is the figure
least moved by other load on the machine).

``--instructions`` runs the client once under valgrind's callgrind for
``--messages`` and once for a tenth of them and prints the instructions per
message of the difference (start-up and handshake cancel out): a count that
other load does not move.
"""

import argparse
import json
import multiprocessing
import os
import queue
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from binance_streamer import frames, tls  # noqa: E402
from binance_streamer.simulator.replay import parse_capture  # noqa: E402

CAPTURES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "realdata", "cryptofeed")
SPOT = ["BINANCE-b38f7c.0", "BINANCE-ee25be.0"]


def text_frame(payload):
    """An unmasked FIN+TEXT frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def load_frames(count, captures=CAPTURES):
    _, captured, _ = parse_capture([os.path.join(captures, name) for name in SPOT])
    one = [text_frame(text) for _, text in captured]
    return (one * (count // len(one) + 1))[:count]


def serve(listener, ca_dir, count, captures, ready):
    """The server process: for each connection, a TLS handshake, then every
    frame encrypted as its own record and the lot sent at once."""
    from binance_streamer.simulator.tls import Certificates
    certs = Certificates(directory=ca_dir)
    records = load_frames(count, captures)
    ready.put(certs.ca_file)
    while True:
        conn, _ = listener.accept()
        with conn:
            incoming, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = certs.context.wrap_bio(incoming, out, server_side=True)
            try:
                while True:
                    try:
                        obj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        if out.pending:
                            conn.sendall(out.read())
                        data = conn.recv(65536)
                        if not data:
                            raise ConnectionResetError
                        incoming.write(data)
                blob = [out.read()]
                for record in records:
                    obj.write(record)
                    blob.append(out.read())
                conn.sendall(b"".join(blob))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)             # until the client closes
            except OSError:
                pass


class Peer:
    """What FrameReader needs of websocket-client's WebSocket (the replay
    sends neither pings nor a close)."""

    def __init__(self, sock):
        self.sock = sock
        self.pong = self.send_close = None


def one_run(port, ca_file, count, interval):
    """Read ``count`` messages; the reader's thread CPU seconds."""
    ctx = tls.Context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    reader = frames.FrameReader(Peer(sock))
    got, cpu, last = 0, 0.0, 0.0
    while got < count:
        if interval and not reader.full:
            wait = last + interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        start = time.thread_time()
        messages = reader.read(1.0)
        cpu += time.thread_time() - start
        last = time.monotonic()
        got += len(messages)
    sock.close()
    if got != count:
        raise SystemExit(f"read {got} messages, expected {count}")
    return cpu


def instructions(args):
    """Callgrind's instruction count per message (difference of two sizes)."""
    counts = {}
    for n in (args.messages // 10, args.messages):
        with tempfile.NamedTemporaryFile(suffix=".out") as out:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}", sys.executable,
                   os.path.abspath(__file__), "--runs", "1", "--messages", str(n), "--json", "--interval", "0",
                   "--captures", args.captures]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            text = open(out.name).read()
        counts[n] = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
    small, large = sorted(counts)
    return (counts[large] - counts[small]) / (large - small)


def server_ready(server, ready):
    """The CA file the server trusts, once it is ready; an error if it died."""
    for _ in range(600):
        try:
            return ready.get(timeout=0.5)
        except queue.Empty:
            if not server.is_alive():
                raise SystemExit("the server process failed (its error is above)")
    raise SystemExit("the server process did not start in 300 s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--messages", type=int, default=150_000)
    p.add_argument("--interval", type=float, default=0.05, help="read_interval (0: read again at once)")
    p.add_argument("--instructions", action="store_true", help="callgrind instructions per message instead")
    p.add_argument("--captures", default=CAPTURES, help="the folder of the spot captures")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.instructions:
        print(json.dumps({"instructions_per_message": round(instructions(args))}))
        return 0
    ctx = multiprocessing.get_context("spawn")
    listener = socket.create_server(("127.0.0.1", 0))
    ready = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="readpath-") as ca_dir:
        server = ctx.Process(target=serve, args=(listener, ca_dir, args.messages, args.captures, ready))
        server.start()
        try:
            ca_file = server_ready(server, ready)
            us = [one_run(listener.getsockname()[1], ca_file, args.messages, args.interval) / args.messages * 1e6
                  for _ in range(args.runs)]
        finally:
            server.terminate()
            server.join(10)
    result = {"messages": args.messages, "runs_us_per_message": [round(u, 3) for u in us],
              "min": round(min(us), 3), "median": round(statistics.median(us), 3)}
    print(json.dumps(result) if args.json else
          f"read path: {result['min']:.3f} us/msg min, {result['median']:.3f} median over {args.runs} runs "
          f"({args.messages} messages each): {result['runs_us_per_message']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
