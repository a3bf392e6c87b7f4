"""The test suite's wall time on every core (pytest-xdist, as `make test` runs it) against one
process, side by side: the same tests, alternated (xdist, one process, xdist, …) so a drift of the
machine's load hits both.

    python -m bench.suite --tests tests/test_vtrace.py tests/test_cli.py --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: `make test`'s distribution (Makefile TEST_WORKERS, tests/conftest.py)
XDIST = ["-n", "2", "--dist", "loadgroup"]


def timed_pytest(tests: list[str], parallel: bool) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(XDIST if parallel else []),
               *tests]  # fmt: skip
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return {"seconds": seconds, "load_average_before": load, "summary": done.stdout.strip().splitlines()[-1]}


def run(tests: list[str], rounds: int = 1) -> dict:
    runs: dict[str, list[dict]] = {"xdist": [], "one_process": []}
    for _ in range(rounds):
        runs["xdist"].append(timed_pytest(tests, parallel=True))
        runs["one_process"].append(timed_pytest(tests, parallel=False))
    mean = {mode: sum(r["seconds"] for r in rows) / len(rows) for mode, rows in runs.items()}
    return {"tests": tests, "rounds": rounds, "runs": runs, "seconds": mean,
            "speedup": mean["one_process"] / mean["xdist"]}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="+", default=["tests"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.tests, args.rounds), indent=1))


if __name__ == "__main__":
    main()
