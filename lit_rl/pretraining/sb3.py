"""π* for a Gymnasium preset, trained by Stable-Baselines3 on one of its subspaces (the FAR one):
``python -m lit_rl.pretraining.sb3 --env configs/env/<preset>.yaml --config configs/pretrain/<preset>.yaml``
(``make pretrain ENV=<preset>`` when that file has an ``sb3:`` section).

The environment is the preset's own: its ``env_id``, ``make_kwargs`` and the subspace's start rule
(``lit_rl.envs.gymnasium_env.subspace_env``), so π* learns exactly the states the fine-tuning run
evaluates as FAR. SB3 is an optional extra (``pip install 'lit_rl[sb3]'``); the zip it writes is
read back by ``lit_rl.models.sb3`` without unpickling.

The ``sb3:`` section: ``algorithm`` (ppo, a2c, sac), ``subspace``, ``steps`` (environment steps),
``out`` (the zip), ``policy`` (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``; default
``MlpPolicy``), ``kwargs`` (the algorithm's constructor arguments), ``seed``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from lit_rl.envs.gymnasium_env import subspace_env
from lit_rl.models.sb3 import INSTALL_HINT
from lit_rl.scenarios.gymnasium import check_subspaces

ALGORITHMS = {"ppo": "PPO", "a2c": "A2C", "sac": "SAC"}


def scenario_settings(env_config: str | Path) -> dict:
    """The Gymnasium scenario's ``init_args`` of an env preset (flat or ``init_args`` model)."""
    model = OmegaConf.to_container(OmegaConf.load(env_config), resolve=True)["model"]
    scenario = model.get("init_args", model)["scenario"]
    if not scenario["class_path"].endswith("Gymnasium"):
        raise ValueError(f"{env_config} is not a Gymnasium preset (its scenario is {scenario['class_path']})")
    return scenario["init_args"]


def train(env_config: str | Path, recipe: dict) -> Path:
    """Train SB3's ``algorithm`` on the preset's ``subspace`` for ``steps`` steps; save the zip."""
    try:
        sb3 = importlib.import_module("stable_baselines3")
    except ImportError:
        raise ValueError(f"training π* with Stable-Baselines3 needs the sb3 extra: {INSTALL_HINT}") from None
    settings = scenario_settings(env_config)
    rules = check_subspaces(settings.get("subspaces"))
    subspace = recipe.get("subspace", "far")
    if subspace not in rules:
        raise ValueError(f"sb3.subspace = {subspace!r} is not a subspace of {env_config}: {sorted(rules)}")
    algorithm = recipe.get("algorithm", "ppo")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"sb3.algorithm = {algorithm!r} is unknown: choose one of {sorted(ALGORITHMS)}")
    seed = int(recipe.get("seed", 0))
    env = subspace_env(settings["env_id"], settings.get("make_kwargs"), rules[subspace], seed)
    model = getattr(sb3, ALGORITHMS[algorithm])(
        recipe.get("policy", "MlpPolicy"), env, seed=seed, device="cpu", **(recipe.get("kwargs") or {})
    )
    start = time.time()
    model.learn(int(recipe["steps"]))
    out = Path(recipe["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(f"π*: {out} ({algorithm}, {recipe['steps']} steps on {subspace}, {time.time() - start:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="the env preset, configs/env/<preset>.yaml")
    parser.add_argument("--config", required=True, help="the recipe, configs/pretrain/<preset>.yaml")
    parser.add_argument("--seed", type=int, default=None, help="overrides sb3.seed")
    args = parser.parse_args(argv)
    recipe = OmegaConf.to_container(OmegaConf.load(args.config), resolve=True).get("sb3")
    try:
        if not recipe:
            raise ValueError(f"{args.config} has no sb3: section")
        if args.seed is not None:
            recipe["seed"] = args.seed
        train(args.env, recipe)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"lit_rl.pretraining.sb3: error: {str(error).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
