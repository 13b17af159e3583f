"""Fuzz the environment with thousands of random cases (issue 15's hardening property).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/fuzz.py --examples 3000

Each case (``tests/fuzz_cases.py``) is a random small dataset, a protocol up to the edge where
it labels the whole pool, env arguments each valid or invalid, reset arguments and a mix of
allowed, masked, out-of-range and non-integer actions. It must either be refused at
construction by a ``ValueError`` naming an argument drawn invalid, or play to the end with
finite rewards and observations inside their spaces. Prints the count of every outcome and the
first cases of each failure kind; the targets are 0 crashes, 0 silent NaN, 0 observations
outside the space, 0 errors that do not name the offending argument (and 0 invalid inputs
accepted, 0 valid ones refused). Hypothesis draws the cases from ``--seed``, so a run repeats.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_cases import FAILURES, cases, run_case  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=3000, help="cases to draw and play")
    parser.add_argument("--seed", type=int, default=0, help="seed of hypothesis' draws")
    parser.add_argument("--show", type=int, default=3, help="cases shown per failure kind")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    counts: collections.Counter[str] = collections.Counter()
    shown: dict[str, list[str]] = collections.defaultdict(list)
    seen: set[tuple[str, str]] = set()
    t0 = time.perf_counter()

    @seed(args.seed)
    @settings(max_examples=args.examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def play(case):
        outcome = run_case(case)
        counts[outcome.kind] += 1
        # one example per distinct message (numbers blanked), up to --show per failure kind
        signature = (outcome.kind, re.sub(r"[-+.e\d]+", "#", outcome.detail)[:80])
        if outcome.kind in FAILURES and signature not in seen and len(shown[outcome.kind]) < args.show:
            seen.add(signature)
            shown[outcome.kind].append(f"{outcome.detail}\n      case: {case.describe()}")
        done = sum(counts.values())
        if done % 250 == 0:
            print(f"  {done} cases, {time.perf_counter() - t0:.0f} s: {dict(counts)}", flush=True)

    play()
    total = sum(counts.values())
    print(f"{total} cases in {time.perf_counter() - t0:.0f} s (seed {args.seed})")
    for kind in ("ok", "refused", *FAILURES):
        print(f"  {kind:17s} {counts[kind]}")
    for kind, examples in shown.items():
        print(f"\nfirst {kind} cases:")
        for example in examples:
            print(f"  - {example}")
    return 1 if any(counts[k] for k in FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
