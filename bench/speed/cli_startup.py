"""How fast the command line starts: `qssm --help` (median of 5 wall-clock runs) beside the floor of
a bare interpreter and the cost of the imports `--help` no longer pays (torch, Qiskit).

    python -m bench.speed.cli_startup [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

from bench.harness import cpu_model


def wall(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run warms the file cache
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    rows = [("python -c pass (the floor)", [py, "-c", "pass"]),
            ("qssm --help", [py, "-m", "qssm.cli", "--help"]),
            ("import qssm (the lazy API)", [py, "-c", "import qssm"]),
            ("import torch, qiskit (what --help used to load)", [py, "-c", "import torch, qiskit"])]
    print(f"CPU: {cpu_model()}; Python {platform.python_version()}; median of {args.repeats} runs")
    print(f"{'command':<50}{'median s':>10}{'vs floor':>10}")
    floor = None
    for label, argv in rows:
        t = wall(argv, args.repeats)
        floor = floor or t
        print(f"{label:<50}{t:>10.3f}{t / floor:>9.1f}x")


if __name__ == "__main__":
    main()
