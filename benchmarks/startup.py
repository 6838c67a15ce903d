"""Start-up time of ``live-unet --help`` against ``python -c "import torch"`` (issue 24).

Each command runs as a whole new process, ``--runs`` times, interleaved (so a busy spell
on a shared machine hits every command alike); the medians are printed with their
difference. Target: ``live-unet --help`` at most 0.3 s beyond importing torch.

    python benchmarks/startup.py --runs 7

Run it with the Python of the environment that has ``live-unet`` installed: the command is
looked up next to that interpreter first, then on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import cpu_model


def live_unet_command() -> str:
    """Path of the ``live-unet`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "live-unet"
    found = str(beside) if beside.is_file() else shutil.which("live-unet")
    if found is None:
        sys.exit("live-unet not found: install the package (pip install -e .)")
    return found


def wall_time(argv: list[str]) -> float:
    """Seconds from starting ``argv`` to its exit; its output is discarded."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description="Start-up of live-unet --help against import torch.")
    p.add_argument("--runs", type=int, default=7, help="runs of each command (default: 7)")
    args = p.parse_args()

    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "live-unet --help": [live_unet_command(), "--help"],
    }
    for argv in commands.values():  # warm the file cache before timing
        wall_time(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            times[name].append(wall_time(argv))

    print(f"CPU: {cpu_model()}; Python {sys.version.split()[0]}; {args.runs} runs each")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:28s} median {medians[name]:.3f} s  (min {min(t):.3f}, max {max(t):.3f})")
    beyond = medians["live-unet --help"] - medians['python -c "import torch"']
    print(f"live-unet --help beyond import torch: {beyond:+.3f} s (target: at most +0.300 s)")


if __name__ == "__main__":
    main()
