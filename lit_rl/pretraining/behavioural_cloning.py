"""Pre-training π* for NetHack by behavioural cloning of recorded expert games (paper section 3).

The paper's π* is Tuyls et al.'s ScaledNet cloned from AutoAscend on NLD-AA; here the same recipe
runs on games our scripted expert recorded (``make data ENV=nethack``): [B, T] chunks stream from
``NLDSequences``, the loss is the cross-entropy to the expert's action on every valid frame

    L_BC(θ) = − E_{(s,a)∼D} log π_θ(a | s),

and the LSTM state is carried from one chunk to the next (each row plays its games back to back)
and reset where an episode starts. The trained network is exported with ``save_policy`` in the
NetHack scenario's actor/critic layout, so ``make finetune ENV=nethack`` starts from it.

Optional critic-only warm-up (``critic_warmup_frames``): after cloning, π* plays that many frames
of new games and only the value head regresses on their (clipped, undiscounted) returns, so
fine-tuning does not start with an untrained critic. The paper warmed the critic up inside its
fine-tuning run instead; the same is available there by freezing everything but the value head
(see docs/nethack.md).

    lit-rl fit --config configs/pretrain/nethack.yaml      (make nethack-pretrain)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import LightningModule
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives.value import GAE

from lit_rl.datasets.nld import NLDSequences, build_index, policy_chunks
from lit_rl.models.policy_io import save_policy
from lit_rl.retention.distillation import CarriedSequence, sequence_cross_entropy
from lit_rl.scenarios.nethack import NetHack
from lit_rl.training.settings import Export, record_settings, settings


class BehaviouralCloning(LightningModule):
    """Behavioural cloning of a recorded NetHack dataset into the scenario's ScaledNet.

    Args:
        scenario: the NetHack scenario: its ScaledNet size and ``describe()`` go into the export,
            and its dataset selection (``data_dir``, ``dataset_index``, ``dataset_name``, the
            character, ``dataset_games``) is the data cloned here — the same games BC replay and
            EWC read during fine-tuning.
        refresh_index: rebuild the dataset index (built when missing) after recording more games.
        batch_size, seq_length: rows and steps of one [B, T] chunk.
        lr, max_grad_norm: Adam settings.
        critic_warmup_frames: env frames of value-head-only training after cloning (0: none).
        warmup_envs: parallel games of the critic warm-up.
        export: where π* is written (``export.policy``; the fine-tuning trainers' ``Export`` group).
        seed: shuffling seed of the dataset stream.
    """

    def __init__(
        self,
        scenario: NetHack,
        refresh_index: bool = False,
        batch_size: int = 16,
        seq_length: int = 32,
        lr: float = 1e-3,
        max_grad_norm: float | None = 4.0,
        critic_warmup_frames: int = 0,
        warmup_envs: int = 8,
        export: Export = Export(policy="pretrained/nethack.pt"),
        seed: int = 0,
    ):
        super().__init__()
        self.export = settings(Export, export)
        self.save_hyperparameters(ignore=["scenario"])
        record_settings(self)
        self.scenario = scenario
        self.policy = scenario.make_policy().modules()
        self.policy.requires_grad_(True)  # the scenario freezes encoders for fine-tuning only
        self.policy["critic"].step.freeze_batchnorm = False  # BatchNorm learns its statistics here
        self.policy.train()
        self.net = self.policy["actor"].module[0].net
        self.replay = CarriedSequence()

    # --- data -----------------------------------------------------------------------------------
    def train_dataloader(self):
        hp, scenario = self.hparams, self.scenario
        if not Path(scenario.data_dir).is_dir():
            raise FileNotFoundError(
                f"NetHack dataset {scenario.data_dir} not found: run `make data ENV=nethack` first"
            )
        build_index(
            scenario.data_dir, scenario.dataset_index, scenario.dataset_name, refresh=hp.refresh_index
        )
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        stream = NLDSequences(
            scenario.dataset_index,
            scenario.dataset_name,
            batch_size=hp.batch_size,
            seq_length=hp.seq_length,
            gameids=scenario.dataset_gameids(),
            loop_forever=True,
            rank=rank,
            world_size=world,
            seed=hp.seed,
        )
        return policy_chunks(iter(stream.dataloader()))

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, TensorDictBase) else batch

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, eps=1e-7)

    def bc_loss(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked cross-entropy to the expert's actions (the same loss as BC replay's
        ``target: action``, from the same carried-state replay) and the greedy accuracy."""
        logits = self.replay.logits(self.policy["actor"], batch)
        valid = batch["valid"].reshape(-1).float()
        accuracy = (logits.argmax(-1).reshape(-1) == batch["action"].reshape(-1)).float() * valid
        return sequence_cross_entropy(logits, batch), accuracy.sum() / valid.sum().clamp(min=1)

    def training_step(self, batch: TensorDictBase, batch_idx: int) -> torch.Tensor:
        loss, accuracy = self.bc_loss(batch)
        frames = batch["valid"].sum().float()
        self.log_dict(
            {"train/bc_loss": loss, "train/bc_accuracy": accuracy, "train/frames": frames},
            on_step=True,
            prog_bar=True,
            batch_size=1,
        )
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.hparams.max_grad_norm)

    # --- export ---------------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        if self.hparams.critic_warmup_frames > 0:
            self.warm_up_critic(self.hparams.critic_warmup_frames)
        if self.export.policy and self.trainer.is_global_zero:
            save_policy(self.export.policy, self.policy, self.scenario.describe())

    def warm_up_critic(self, frames: int, rollout_length: int = 32) -> None:
        """Regress the value head alone on π*'s own returns (clipped training reward, γ = 1)."""
        actor, critic = self.policy["actor"], self.policy["critic"]
        self.policy.eval()  # before the collector, whose set-up already runs the actor once
        envs = self.hparams.warmup_envs
        env = self.scenario.make_env(envs, "close", self.hparams.seed + 1, training=True)
        per_batch = envs * rollout_length
        collector = Collector(
            env,
            actor,
            frames_per_batch=per_batch,
            total_frames=max(1, frames // per_batch) * per_batch,
            auto_register_policy_transforms=False,
        )
        estimator = GAE(gamma=1.0, lmbda=1.0, value_network=critic, average_gae=False)
        optimizer = torch.optim.Adam(self.net.value.parameters(), lr=self.hparams.lr)
        with set_exploration_type(ExplorationType.RANDOM):
            for batch in collector:
                with torch.no_grad():
                    estimator(batch)
                value = critic(batch.copy())["state_value"]
                loss = F.mse_loss(value, batch["value_target"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        collector.shutdown()
        env.close()
