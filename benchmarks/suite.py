"""The classic-strategy leaderboard: every strategy on the development suite and AV-Digits.

    python benchmarks/suite.py                                  # 10 datasets x 11 strategies x 5 seeds
    python benchmarks/suite.py --agents random margin badge --seeds 20000 --out-dir runs/benchmark/subset
    python benchmarks/suite.py --ray local

``rlmba benchmark`` (``agents/benchmark.py``) with this leaderboard's defaults; every option of
it works here. Resumable: rerun the same command after an interruption.
"""

import sys

from agents.benchmark import main

if __name__ == "__main__":
    sys.exit(main(["--out-dir", "runs/benchmark/suite", *sys.argv[1:]], prog="suite.py"))
