"""What the recorder's processes cost at rest: no resource tracker process."""

import subprocess
import sys
import textwrap

import pytest

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
