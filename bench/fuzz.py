"""The fuzz properties of tests/unit/test_fuzz.py with a large budget.

    python bench/fuzz.py [--examples 20000]

Mutated real Binance frames and REST answers (../shared/realdata) thrown at
the parsers and the worker, as in the suite, but with ``--examples`` per
property (the suite runs 300, derandomized). Prints hypothesis's statistics
per property: examples run, how many were invalid, and any falsifying
example. The live counterpart is the simulator's ``mutate_every`` fault
(tests/integration/test_hostile.py).
"""

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=20_000, help="examples per property")
    args = p.parse_args(argv)
    env = dict(os.environ, HYPOTHESIS_PROFILE="long", BINANCE_STREAMER_FUZZ_EXAMPLES=str(args.examples))
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "3600",
                            "--hypothesis-show-statistics", "tests/unit/test_fuzz.py"], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
