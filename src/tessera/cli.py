"""The ``tessera`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from tessera.errors import TesseraError


def _demo(args: argparse.Namespace) -> None:
    from tessera.demo import make_demo_cohort

    start = time.perf_counter()
    out = make_demo_cohort(args.dir, seed=args.seed, n_patients=args.patients)
    print(f"demo cohort written to {out}/ in {time.perf_counter() - start:.1f} s (planted truth: {out}/README.md)")


def _compare_runs(args: argparse.Namespace) -> int:
    from tessera.rundiff import ALLOWED, compare_runs

    diff = compare_runs(args.a, args.b)
    for label, paths in (("only in A", diff.only_a), ("only in B", diff.only_b), ("differ", diff.differ)):
        for path in paths:
            print(f"{label}: {path}")
    allowed = "; ".join(ALLOWED)
    if diff.identical:
        print(f"results/ of {args.a} and {args.b} are byte-identical (allow-list not compared: {allowed})")
        return 0
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the demo cohort (deterministic given --seed)")
    demo.add_argument("dir", help="output directory, e.g. demo")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--patients", type=int, default=48, help="cohort size (at least 4; smaller for quick tests)")
    demo.set_defaults(func=_demo)
    compare = sub.add_parser("compare-runs", help="check that two runs wrote byte-identical results/ "
                             "(except the determinism allow-list, README 'Determinism')")
    compare.add_argument("a", help="working directory of the first run")
    compare.add_argument("b", help="working directory of the second run")
    compare.set_defaults(func=_compare_runs)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except TesseraError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
