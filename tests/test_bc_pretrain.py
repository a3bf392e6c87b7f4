"""BC pre-training's critic-only warm-up (paper §3: the baseline's critic was trained first)."""

from __future__ import annotations

import torch

from lit_rl.pretraining.behavioural_cloning import BehaviouralCloning
from lit_rl.scenarios import NetHack
from lit_rl.training.settings import Export


def test_critic_warm_up_trains_the_value_head_alone(tmp_path):
    """After warm-up the value head has moved and every other weight is bit-identical."""
    torch.manual_seed(0)
    module = BehaviouralCloning(NetHack(size="tiny", max_episode_steps=50, data_dir=str(tmp_path)),
                                export=Export(policy=None), warmup_envs=2)  # fmt: skip
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    module.warm_up_critic(frames=128, rollout_length=16)
    after = module.net.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(k.startswith("value.") for k in moved), moved
