"""How often a fresh process's first vector-math call gives other bits, with and without the set-up.

torch's exp, log, sqrt, sin, cos, tanh and erf call MKL's vector-math library in the x86 CPU builds.
Each trial is a fresh Python process that sets ``--threads`` CPU threads and applies one function to
the NT rotary table (256 positions x 16, the tensor where a run's embeddings first differed), twice.
The first call is compared with the second, which always gives the usual bits. ``bare`` calls
``torch.set_num_threads``; ``tessera`` calls :func:`tessera.devices.use_cpu_threads`, which every
torch job of the workflow uses. tests/test_devices.py runs this trial, with the set-up, in 30 processes.

    .venv/bin/python benchmarks/vml_first_call.py --trials 40
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

TRIAL = """
import sys, torch
threads, name, setup = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if setup == "tessera":
    from tessera.devices import use_cpu_threads
    use_cpu_threads(threads)
else:
    torch.set_num_threads(threads)
inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
freqs = torch.outer(torch.arange(256, dtype=torch.float32), inv_freq)
table = torch.cat((freqs, freqs), dim=-1)
f = getattr(torch, name)
print(int(torch.equal(f(table), f(table))))
"""


def first_call_differs(threads: int, name: str, setup: str) -> bool:
    out = subprocess.run([sys.executable, "-c", TRIAL, str(threads), name, setup],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip() == "0"


def main() -> None:
    from tessera.devices import VML_FUNCTIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="fresh processes per function and set-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in each process")
    parser.add_argument("--parallel", type=int, default=2, help="processes at once")
    args = parser.parse_args()
    print(f"first call on {args.threads} threads differs from the second, in {args.trials} fresh processes each")
    print(f"{'function':<10}{'bare':>8}{'tessera':>10}")
    totals = {"bare": 0, "tessera": 0}
    with ThreadPoolExecutor(args.parallel) as pool:
        for name in VML_FUNCTIONS:
            row = {}
            for setup in totals:
                row[setup] = sum(pool.map(lambda _: first_call_differs(args.threads, name, setup), range(args.trials)))
                totals[setup] += row[setup]
            print(f"{name:<10}{row['bare']:>8}{row['tessera']:>10}")
    n = args.trials * len(VML_FUNCTIONS)
    print(f"{'all':<10}{totals['bare']:>8}{totals['tessera']:>10}   of {n} processes each "
          f"({100 * totals['bare'] / n:.1f} % vs {100 * totals['tessera'] / n:.1f} %)")


if __name__ == "__main__":
    main()
