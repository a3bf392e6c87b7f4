"""Peak memory of BC replay streaming (`NLDSequences`) over a small and a 10× larger dataset.

The expert's recorded games (`lit_rl.recording.nethack_games.record_games`) are indexed once into
`bench/.cache/nld/` and reused by later runs. Each measurement runs in a fresh subprocess that
imports everything, notes its resident set, resets the kernel's peak mark (VmHWM via
/proc/self/clear_refs; `ru_maxrss` otherwise), streams `batches` [B, T] batches and reports the peak
resident set while streaming; streaming should cost the same however many games the index holds.
The baseline is a subprocess that opens the dataset and streams nothing.

    python -m bench.bc_memory --batches 200
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache" / "nld"
DATASET = "bench-expert"
MAX_STEPS = 2000


def prepare(
    games: int, seed: int = 0, cache: Path = CACHE, max_steps: int = MAX_STEPS
) -> tuple[Path, list[int]]:
    """Record (once) and index ``games`` expert games of at most ``max_steps`` steps; returns the
    index and its game ids."""
    from lit_rl.datasets import nld
    from lit_rl.recording.nethack_games import record_games

    folder = cache / f"games{games}-steps{max_steps}-seed{seed}"
    db = folder / "index.db"
    if not (folder / "done").exists():
        if folder.exists():  # an interrupted earlier attempt
            import shutil

            shutil.rmtree(folder)
        record_games(folder / "recordings", games, seed, max_steps=max_steps)
        nld.build_index(folder / "recordings", db, DATASET)
        (folder / "done").touch()
    return db, nld.select_gameids(db, DATASET)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so start-up's transient peak does not mask ours."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(db: str, gameids: list[int], batches: int, batch_size: int, seq_length: int) -> dict:
    """Runs in the subprocess: stream ``batches`` batches and report memory (kB) and speed."""
    import torch

    from lit_rl.datasets.nld import NLDSequences

    torch.set_num_threads(1)
    stream = NLDSequences(
        db, DATASET, batch_size=batch_size, seq_length=seq_length, gameids=gameids,
        loop_forever=True, seed=0,
    )  # fmt: skip
    before = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    frames, start = 0, time.perf_counter()
    if batches:
        for i, batch in enumerate(stream):
            frames += int(batch["valid"].sum())
            if i + 1 >= batches:
                break
    elapsed = time.perf_counter() - start
    return {
        "rss_before_kb": before,
        # VmHWM since the reset: the peak while streaming; ru_maxrss includes start-up
        "peak_rss_kb": _status_kb("VmHWM")
        if peak_reset
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "process_peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "frames": frames,
        "frames_per_s": frames / elapsed if elapsed > 0 else 0.0,
    }


def measure(db: Path, gameids: list[int], batches: int, batch_size: int, seq_length: int) -> dict:
    """One fresh subprocess per measurement, so peaks never mix."""
    spec = json.dumps([str(db), gameids, batches, batch_size, seq_length])
    out = subprocess.run(
        [sys.executable, "-m", "bench.bc_memory", "--child", spec],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _disk_bytes(db: Path, gameids: list[int]) -> int:
    import nle.dataset as nld_

    total = 0
    with nld_.db.db(filename=str(db)) as conn:
        root = Path(nld_.db.get_root(DATASET, conn=conn))
        wanted = set(gameids)
        for gameid, path in conn.execute("SELECT gameid, path FROM ttyrecs"):
            if gameid in wanted:
                total += (root / path).stat().st_size
    return total


def run(small: int = 2, factor: int = 10, batches: int = 200, batch_size: int = 4,
        seq_length: int = 32, game_steps: int = MAX_STEPS) -> dict:  # fmt: skip
    """Peak RSS streaming the first ``small`` games vs ``small × factor`` games of one index."""
    start = time.perf_counter()
    db, gameids = prepare(small * factor, max_steps=game_steps)
    prepare_s = time.perf_counter() - start
    sizes = {"small": gameids[:small], "large": gameids[: small * factor]}
    result = {"batches": batches, "batch_size": batch_size, "seq_length": seq_length,
              "prepare_s": prepare_s}  # fmt: skip
    result["baseline"] = measure(db, sizes["large"], 0, batch_size, seq_length)
    for label, ids in sizes.items():
        row = measure(db, ids, batches, batch_size, seq_length)
        row["games"] = len(ids)
        row["recording_bytes"] = _disk_bytes(db, ids)
        result[label] = row
    result["large_over_small_peak"] = result["large"]["peak_rss_kb"] / result["small"]["peak_rss_kb"]
    result["streaming_cost_kb"] = {
        label: result[label]["peak_rss_kb"] - result["baseline"]["peak_rss_kb"] for label in sizes
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=2, help="games in the small dataset")
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    print(json.dumps(run(args.small, batches=args.batches), indent=1))


if __name__ == "__main__":
    main()
