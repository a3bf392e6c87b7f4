"""Record expert NetHack demonstrations in the NLD layout, plus FAR start states for hand-over.

The real NetHack Learning Dataset cannot be fetched here, so the scripted expert plays with NLE's
recorder on: each run writes `OUT/<run>/nle.<pid>.<k>.ttyrec3.bz2` and `nle.<pid>.xlogfile`, which
`lit_rl.datasets.nld.build_index` indexes like NLD. Every game ends by death or by the env quitting at
the step cap, because nle.dataset only indexes games that ended. `--far-depths 2,4` also writes
`OUT/start_states_dlvl<k>.json`: start states (seeds plus the raw keys NetHack received) that
`NetHackBatchEnv` replays to Dlvl >= k (paper section 3, FAR evaluation), each checked by such a
replay before it is saved. `sokoban` among the depths writes `OUT/start_states_sokoban.json`,
states on Sokoban's first level (the expert then seeks Sokoban's entrance below the Oracle).
How often the expert got there is written to `OUT/start_states_report.json` (games tried, states
per target, expert steps, wall time).

    python -m lit_rl.recording.nethack_games --games 20 --out data/nethack --seed 0 --far-depths 2,4
    python -m lit_rl.recording.nethack_games --games 0 --out data/nethack --far-depths 4,8,sokoban \
        --far-count 200 --far-attempts 2000 --max-steps 20000
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
from lit_rl.experts.nethack_expert import SOKOBAN, NetHackExpert, make_env, play_to_depths, replay

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


def start_state_file(out: str | Path, target: int | str) -> Path:
    """Where the start states of a hand-over target live: ``start_states_dlvl<k>.json`` for a
    Dlvl, ``start_states_sokoban.json`` for Sokoban (the names ``lit_rl.scenarios.NetHack`` reads)."""
    name = SOKOBAN if target == SOKOBAN else f"dlvl{int(target)}"
    return Path(out) / f"start_states_{name}.json"


def parse_targets(text: str) -> list[int | str]:
    """``"4,8,sokoban"`` -> [4, 8, "sokoban"]; anything else stops with one line."""
    targets: list[int | str] = []
    for item in filter(None, (t.strip().lower() for t in text.split(","))):
        if item == SOKOBAN:
            targets.append(SOKOBAN)
        elif item.isdigit() and int(item) >= 2:
            targets.append(int(item))
        else:
            raise ValueError(f"far depth {item!r}: give Dlvls >= 2 and/or 'sokoban', e.g. 4,8,sokoban")
    return targets


def record_start_states(
    out: str | Path,
    depths: list[int | str],
    count: int,
    seed: int,
    max_steps: int = 20_000,
    attempts: int | None = None,
) -> dict[int | str, list[StartState]]:
    """Collect up to `count` replay-verified start states per target into their files
    (``start_state_file``): Dlvls and ``"sokoban"``.

    The files hold raw-key prefixes under the "raw_keys" format mark (`save_start_states`), so
    FAR resets replay them as saved; a state is kept only if `NetHackBatchEnv`, replaying it as
    those resets do, reaches the blstats the expert's game had there. One game serves every
    target it reaches. Games are tried until every target has `count` states or `attempts`
    games (default 5 * count) were played; ``start_states_report.json`` says how often each
    target was reached and at what cost.
    """
    attempts = 5 * count if attempts is None else attempts
    found: dict[int | str, list[StartState]] = {d: [] for d in depths}
    games, steps, deaths, start = 0, 0, 0, time.perf_counter()
    oracle_seen = 0
    for core, disp in game_seeds(seed, attempts, stream=1):
        wanted = [d for d in depths if len(found[d]) < count]
        if not wanted:
            break
        info: dict = {}
        reached = play_to_depths(core, disp, wanted, max_steps, info=info)
        games, steps = games + 1, steps + info["steps"]
        deaths += info["end"] == "died"
        oracle_seen += info["oracle_dlvl"] is not None
        for target, (state, blstats) in reached.items():
            if _replays_to(state, blstats):
                found[target].append(state)
            else:
                warnings.warn(f"seeds {core},{disp} did not replay to the same state", stacklevel=2)
        log.info("start-state game %d: %s", games, {str(t): len(v) for t, v in found.items()})
    wall = time.perf_counter() - start
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for target, states in found.items():
        if len(states) < count:
            warnings.warn(
                f"only {len(states)} of {count} start states reached {_label(target)}", stacklevel=2
            )
        save_start_states(start_state_file(out, target), states)
    report = {
        "games": games,
        "expert_steps": steps,
        "wall_time_s": round(wall, 1),
        "deaths": deaths,
        "oracle_seen": oracle_seen,
        "max_steps_per_game": max_steps,
        "states": {str(t): len(v) for t, v in found.items()},
        "reach_rate": {str(t): round(len(v) / max(1, games), 4) for t, v in found.items()},
    }
    (out / "start_states_report.json").write_text(json.dumps(report, indent=1))
    return found


def _label(target: int | str) -> str:
    return "Sokoban" if target == SOKOBAN else f"Dlvl {target}"


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
    parser.add_argument(
        "--far-depths", default="", help="comma-separated Dlvls and/or sokoban, e.g. 4,sokoban"
    )
    parser.add_argument("--far-count", type=int, default=20, help="start states per depth")
    parser.add_argument("--far-attempts", type=int, default=None, help="games to try (default 5 x count)")
    args = parser.parse_args(argv)
    try:
        depths = parse_targets(args.far_depths)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
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
    if depths:
        found = record_start_states(
            args.out, depths, args.far_count, args.seed, args.max_steps, args.far_attempts
        )
        report = json.loads((Path(args.out) / "start_states_report.json").read_text())
        print(
            "start states: "
            + ", ".join(f"{_label(d)}: {len(r)}" for d, r in found.items())
            + f" from {report['games']} games ({report['wall_time_s']:.0f} s)"
        )


if __name__ == "__main__":
    main()
