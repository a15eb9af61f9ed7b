"""What the recorder's processes cost at rest: no resource tracker process,
no OpenSSL or zstandard in the processes that never use them, no
importlib.metadata in a worker. (The figures are bench/footprint.py's.)"""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support import Recorder

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

SCRIPT = textwrap.dedent("""
    import multiprocessing, os, sys
    from multiprocessing import resource_tracker
    from binance_streamer import proc
    from binance_streamer.binance.budgets import RestBudget

    def child(budget):
        budget.array[1] = 7.0           # the shared memory works without the tracker

    if __name__ == "__main__":
        done = proc.without_resource_tracker()
        other = None
        if sys.argv[1] == "detached":   # a daemon closes every descriptor; the number is used again
            os.close(resource_tracker._resource_tracker._fd)
            other = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT)
            done = proc.without_resource_tracker() and done
        ctx = multiprocessing.get_context("spawn")
        budget = RestBudget(ctx, 6000)
        p = ctx.Process(target=child, args=(budget,))
        p.start()
        p.join(60)
        kids = [int(t) for t in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()]
        cmdlines = [open(f"/proc/{k}/cmdline", "rb").read().replace(b"\\0", b" ").decode() for k in kids]
        print(done, p.exitcode, budget.array[1], [c for c in cmdlines if "resource_tracker" in c])
""")


@pytest.mark.parametrize("mode", ["started", "detached"])
def test_children_spawned_without_a_resource_tracker_process(tmp_path, mode):
    script, other = tmp_path / "spawn_one.py", tmp_path / "other-file"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), mode, str(other)], capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0", "7.0", "[]"], out.stdout + out.stderr
    assert not other.exists() or other.read_bytes() == b""      # no tracker message went into another file


OPENSSL = ("/_ssl.", "/_hashlib.", "libssl", "libcrypto", "zstandard", "libzstd")


def _mapped(pid):
    """The files a live process maps that belong to OpenSSL or zstandard."""
    with open(f"/proc/{pid}/maps") as f:
        return sorted({line.split()[-1] for line in f if any(name in line for name in OPENSSL)})


def test_only_the_workers_map_openssl(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=21, rate=50)
    assert sim.ca_file                                  # the manager checked a ca_file at start
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], compression="zstd").start()
    try:
        rec.wait_status(lambda s: s.get("children", {}).get("orderbook", {}).get("in_sync") == 1, 60,
                        "the book to sync")
        pids = {"manager": rec.proc.pid, **{name: rec.pid_of(name) for name in ("writer", "orderbook", "worker-0")}}
        mapped = {name: _mapped(pid) for name, pid in pids.items()}
    finally:
        code = rec.stop()
    assert code == 0, rec.log_tail()
    assert any("_ssl." in path for path in mapped.pop("worker-0"))      # TLS to the exchange
    assert mapped == {"manager": [], "writer": [], "orderbook": []}


CHECK_IMPORTS = textwrap.dedent("""
    import json, sys
    from binance_streamer import cli, config

    def errors():
        out = []
        for bad in sys.argv[2:]:
            try:
                config.load(None, {"ca_file": bad})
            except config.ConfigError as exc:
                out.append(str(exc))
        return out

    cfg = config.load(None, {"ca_file": sys.argv[1], "compression": "zstd"})
    apart = errors()                        # the CA file read by a short-lived process
    import binance_streamer.manager, binance_streamer.writer, binance_streamer.orderbook, binance_streamer.daemon
    heavy = ("ssl", "_ssl", "hashlib", "_hashlib", "zstandard", "importlib.metadata")
    manager = [m for m in heavy if m in sys.modules]
    import binance_streamer.worker, urllib3.http2
    worker = [m for m in heavy if m in sys.modules]
    print(json.dumps({"manager": manager, "worker": worker, "apart": apart, "here": errors(),
                      "version": urllib3.http2.version("urllib3")}))
""")


def test_the_manager_loads_neither_openssl_nor_zstandard_and_a_worker_no_importlib_metadata(tmp_path):
    import trustme
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    script = tmp_path / "check.py"
    script.write_text(CHECK_IMPORTS)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "ca.pem"), str(tmp_path / "junk.pem"),
                          str(tmp_path / "missing.pem")], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["manager"] == []
    assert got["worker"] == ["ssl", "_ssl", "hashlib", "_hashlib"]       # TLS, the handshake's hashes
    import urllib3
    assert got["version"] == urllib3.__version__          # importlib.metadata still answers when asked
    assert got["apart"] == got["here"]                    # the same errors as read in this process (ssl loaded)
    assert [e.split("' in --ca-file ")[1].split(" (")[0] for e in got["apart"]] == [
        "cannot be loaded", "does not exist; give the PEM file of the CA to trust"]
