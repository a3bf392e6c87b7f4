"""Record expert NetHack demonstrations in the NLD layout, plus FAR start states for hand-over.

The real NetHack Learning Dataset cannot be fetched here, so the scripted expert plays with NLE's
recorder on: each run writes `OUT/<run>/nle.<pid>.<k>.ttyrec3.bz2` and `nle.<pid>.xlogfile`, which
`lit_rl.datasets.nld.build_index` indexes like NLD. Every game ends by death or by the env quitting at
the step cap, because nle.dataset only indexes games that ended. `--far-depths 2,4` also writes
`OUT/start_states_dlvl<k>.json`: start states (seeds plus the raw keys NetHack received) that
`NetHackBatchEnv` replays to Dlvl >= k (paper section 3, FAR evaluation), each checked by such a
replay before it is saved.

    python -m lit_rl.data.record_nethack --games 20 --out data/nethack --seed 0 --far-depths 2,4
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
from nle import nethack

from lit_rl.envs.nethack import StartState, save_start_states
from lit_rl.experts.nethack_expert import NetHackExpert, make_env, play_to_depths, replay

log = logging.getLogger(__name__)


def game_seeds(seed: int, count: int, stream: int = 0) -> list[tuple[int, int]]:
    """Distinct (core, disp) seed pairs derived from one user seed; `stream` separates uses."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2 * count, dtype=np.uint32)
    return [(int(state[2 * i]), int(state[2 * i + 1])) for i in range(count)]


def _fresh_run_dir(out: Path, seed: int) -> Path:
    """A run folder no earlier recording used (NLE names files by pid, so reuse could clash)."""
    run = out / f"seed{seed}"
    suffix = 1
    while run.exists():
        run = out / f"seed{seed}-{suffix}"
        suffix += 1
    return run


def record_games(out: str | Path, games: int, seed: int, max_steps: int = 20_000) -> dict:
    """Let the expert play `games` recorded games; returns per-game results and throughput."""
    run = _fresh_run_dir(Path(out), seed)
    run.parent.mkdir(parents=True, exist_ok=True)
    env = make_env(save_ttyrec_every=1, savedir=str(run), max_episode_steps=max_steps)
    results, steps, start = [], 0, time.perf_counter()
    try:
        for core, disp in game_seeds(seed, games):
            expert = NetHackExpert(seed=core)
            env.seed(core, disp, False)
            obs, _ = env.reset()
            max_depth, score, game_steps, done = 1, 0, 0, False
            while not done:
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                game_steps += 1
                done = terminated or truncated
                if not done:  # blstats are zeroed once the game is over
                    max_depth = max(max_depth, int(obs["blstats"][nethack.NLE_BL_DEPTH]))
                    score = int(obs["blstats"][nethack.NLE_BL_SCORE])
            steps += game_steps
            end = "step cap" if info["end_status"] == env.StepStatus.ABORTED else "death"
            results.append(
                {
                    "core_seed": core,
                    "disp_seed": disp,
                    "steps": game_steps,
                    "max_dlvl": max_depth,
                    "score": score,
                    "end": end,
                }
            )
            log.info("game %d/%d: %s", len(results), games, results[-1])
    finally:
        env.close()
    wall = time.perf_counter() - start
    summary = {
        "run": run.name,
        "games": results,
        "env_steps": steps,
        "wall_time_s": wall,
        "env_steps_per_s": steps / wall,
    }
    (run / "games.json").write_text(json.dumps(summary, indent=1))
    return summary


def record_start_states(
    out: str | Path, depths: list[int], count: int, seed: int, max_steps: int = 20_000
) -> dict[int, list[StartState]]:
    """Collect up to `count` replay-verified start states per depth into start_states_dlvl<k>.json.

    The files hold raw-key prefixes under the "raw_keys" format mark (`save_start_states`), so
    FAR resets replay them as saved; a state is kept only if `NetHackBatchEnv`, replaying it as
    those resets do, reaches the blstats the expert's game had there. Games are tried until every
    depth has `count` states or 5 * count games were played.
    """
    found: dict[int, list[StartState]] = {d: [] for d in depths}
    for core, disp in game_seeds(seed, 5 * count, stream=1):
        wanted = [d for d in depths if len(found[d]) < count]
        if not wanted:
            break
        for dlvl, (state, blstats) in play_to_depths(core, disp, wanted, max_steps).items():
            if _replays_to(state, blstats):
                found[dlvl].append(state)
            else:
                warnings.warn(f"seeds {core},{disp} did not replay to the same state", stacklevel=2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for dlvl, states in found.items():
        if len(states) < count:
            warnings.warn(f"only {len(states)} of {count} start states reached Dlvl {dlvl}", stacklevel=2)
        save_start_states(out / f"start_states_dlvl{dlvl}.json", states)
    return found


def _replays_to(state: StartState, blstats: np.ndarray) -> bool:
    """Whether the batch env's replay stands where the expert's game stood (a RuntimeError means
    the replay ended the game or stopped on another Dlvl: the prefix is useless, not fatal)."""
    try:
        return np.array_equal(replay(state), blstats)
    except RuntimeError:  # the replay ended the game or stopped on another Dlvl
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--games", type=int, required=True, help="games to record")
    parser.add_argument("--out", required=True, help="dataset directory (runs go in subfolders)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=20_000, help="quit a game after this many")
    parser.add_argument("--far-depths", default="", help="comma-separated Dlvls, e.g. 2,4")
    parser.add_argument("--far-count", type=int, default=20, help="start states per depth")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)  # our progress lines, not nle's chatter

    if args.games > 0:
        summary = record_games(args.out, args.games, args.seed, args.max_steps)
        games = summary["games"]
        print(
            f"recorded {len(games)} games in {Path(args.out) / summary['run']}: "
            f"mean score {np.mean([g['score'] for g in games]):.0f}, "
            f"max Dlvl {max(g['max_dlvl'] for g in games)}, "
            f"{summary['env_steps_per_s']:.0f} steps/s"
        )
    if args.far_depths:
        depths = [int(d) for d in args.far_depths.split(",")]
        found = record_start_states(args.out, depths, args.far_count, args.seed, args.max_steps)
        print("start states: " + ", ".join(f"Dlvl {d}: {len(r)}" for d, r in found.items()))


if __name__ == "__main__":
    main()
