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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write the demo cohort (deterministic given --seed)")
    demo.add_argument("dir", help="output directory, e.g. demo")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--patients", type=int, default=48, help="cohort size (at least 4; smaller for quick tests)")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except TesseraError as e:
        print(f"tessera: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
