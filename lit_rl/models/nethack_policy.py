"""One ScaledNet as a TorchRL recurrent actor and critic (paper section 3: shared trunk, two heads).

The LSTM state travels in the TensorDict, TorchRL-style: ``recurrent_state_h`` / ``recurrent_state_c``
([N, hidden]) hold the state *before* the frame, the actor writes the state after it to
``("next", recurrent_state_*)`` (the collector's ``step_mdp`` moves it to the root) and ``is_init``
(TorchRL's ``InitTracker``) zeroes it where an episode starts. ``recurrent_primer`` makes the env
emit zeros for those keys at reset.

Two ways to evaluate a TensorDict:

- flat ``[N]`` (collector steps, evaluation, BC replay / EWC states): one step per row from its
  stored state. The LSTM step is written out as the cell equations (same weights as ``nn.LSTM``), so
  it works under ``torch.func.vmap`` (TorchRL's GAE and the per-sample EWC Fisher vmap the network).
- ``[B, T]`` (PPO and kickstarting minibatches, whole rows of a rollout): the actor replays the
  sequence through the fused LSTM from the stored state of its first step, resetting at ``is_init``,
  so gradients flow through time and, before any update, reproduces the collector's log-probs.

The critic (``RecurrentValue``) reads each frame's stored state (one step): the bootstrap values GAE
needs past a rollout's end. BatchNorm layers stay in eval mode during fine-tuning
(``freeze_batchnorm``), as ScaledNet's docstring asks for rollouts: a frame's action must not depend
on its batch mates.

No pass is run twice (issue 14). While collecting (flat input, training mode), the student's actor
also writes each frame's ``state_value`` (the value head on the LSTM output it computed anyway) and,
while the encoders are fixed, their output ``features``; GAE reads the stored values and the PPO
replay reads the stored features, so the encoders run once per frame. A sequence replay writes its
LSTM outputs (``core``, with their graph) beside the logits, and the PPO loss's critic is only the
value head reading them (``RecurrentValue.head_on_actor_outputs``): one trunk pass serves actor and
critic. Before any update both equal the separate passes they replace (tests/test_throughput_passes.py);
after one, the critic reads the replayed state instead of the stored one, as Sample Factory's
learner does, and its gradient flows through the sequence.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torch import nn
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import TensorDictPrimer
from torchrl.modules import ProbabilisticActor

from lit_rl.models.scaled_net import NUM_ACTIONS, ScaledNet

# TorchRL's GAE vmaps the critic; the message-line encoder's embedding_bag then takes PyTorch's
# (correct, merely slower) per-sample fallback, which warns on every batch.
warnings.filterwarnings("ignore", message=".*batching rule for aten::embedding_bag")

OBSERVATION_KEYS = ["tty_chars", "tty_colors", "tty_cursor", "prev_action"]
STATE_KEYS = ["recurrent_state_h", "recurrent_state_c"]
#: π*'s own LSTM state when kickstarting runs it next to the student in the collector
TEACHER_STATE_KEYS = ["teacher_state_h", "teacher_state_c"]
IN_KEYS = [*OBSERVATION_KEYS, "is_init", *STATE_KEYS]
#: output of the fixed encoders (``ScaledNet.encode``) per collected frame, read by the PPO replay
FEATURES_KEY = "features"
#: LSTM outputs of a sequence replay (with their graph), read by the loss's value head
CORE_KEY = "core"


class PassCounter:
    """Counts frames through ScaledNet's encoders and through its LSTM core while active (``with
    PassCounter() as passes``), in this process: how tests and the benchmark show the passes per
    collected frame. A frame through the core is one ScaledNet pass; ``encoder`` counts the frames
    whose encoders actually ran (fewer when fixed features are carried)."""

    active: list[PassCounter] = []

    def __init__(self):
        self.encoder = self.core = 0

    def __enter__(self) -> PassCounter:
        PassCounter.active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        PassCounter.active.remove(self)

    @classmethod
    def add(cls, encoder: int, core: int) -> None:
        for counter in cls.active:
            counter.encoder += encoder
            counter.core += core


def lstm_step(lstm: nn.LSTM, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """One step of a one-layer ``nn.LSTM`` from its own weights (vmap-friendly)."""
    gates = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(h, lstm.weight_hh_l0, lstm.bias_hh_l0)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def _flat_inputs(td: TensorDictBase, net: ScaledNet, state_keys: list[str] = STATE_KEYS):
    """Observation tensors and (h, c) of a TensorDict, flattened to one step per row."""
    n = td.numel()
    obs = [td.get(k).reshape(n, *td.get(k).shape[td.ndim :]) for k in OBSERVATION_KEYS]
    is_init = td.get("is_init", None)
    is_init = torch.zeros(n, dtype=torch.bool, device=obs[0].device) if is_init is None else is_init
    state = []
    for key in state_keys:
        value = td.get(key, None)
        if value is None:
            value = obs[0].new_zeros(n, net.config.hidden, dtype=torch.float32)
        state.append(value.reshape(n, -1))
    return obs, is_init.reshape(n), state


class SingleStep(nn.Module):
    """ScaledNet for one step per row: (obs, is_init, h, c) -> (logits, value, h', c').

    Its BatchNorm layers stay in eval mode whatever ``train()`` says, unless ``freeze_batchnorm``
    is False (behavioural cloning sets it). Actor and critic both hold this module, so the rule
    holds whichever of them is switched last.
    """

    freeze_batchnorm = True

    def __init__(self, net: ScaledNet):
        super().__init__()
        self.net = net

    def encode(self, tty_chars, tty_colors, tty_cursor, prev_action) -> torch.Tensor:
        """``ScaledNet.encode`` itself (vmap-friendly), so steps and sequences compute one function."""
        return self.net.encode(tty_chars, tty_colors, tty_cursor, prev_action)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_batchnorm:
            set_batchnorm_eval(self)
        return self

    def forward(self, tty_chars, tty_colors, tty_cursor, prev_action, is_init, h, c):
        keep = (~is_init.reshape(-1).bool()).to(h.dtype).unsqueeze(-1)
        x = self.encode(tty_chars, tty_colors, tty_cursor, prev_action)
        PassCounter.add(x.shape[0], x.shape[0])
        h, c = lstm_step(self.net.lstm, x, h * keep, c * keep)
        return self.net.policy(h), self.net.value(h), h, c


class StepLogits(nn.Module):
    """The logits alone of ``SingleStep``: the plain network the per-sample EWC Fisher calls."""

    def __init__(self, step: SingleStep):
        super().__init__()
        self.step = step

    def forward(self, tty_chars, tty_colors, tty_cursor, prev_action, is_init, h, c):
        return self.step(tty_chars, tty_colors, tty_cursor, prev_action, is_init, h, c)[0]


class RecurrentLogits(TensorDictModuleBase):
    """Writes ``logits`` (and the next LSTM state for flat inputs) from a TensorDict; see module doc.

    ``module`` (a ``StepLogits``) and ``in_keys`` follow ``TensorDictModule``'s attribute names, so
    code that calls the logits network on plain tensors (EWC's per-sample Fisher) finds it.
    ``state_keys`` / ``logits_key`` rename what it reads and writes: kickstarting runs π* beside the
    student with ``TEACHER_STATE_KEYS`` and ``teacher_logits`` (``with_keys``), so each keeps its
    own recurrent state in the same rollout.
    """

    def __init__(self, net: ScaledNet, state_keys: list[str] = STATE_KEYS, logits_key: str = "logits"):
        super().__init__()
        self.module = StepLogits(SingleStep(net))
        self.state_keys, self.logits_key = list(state_keys), logits_key
        self.in_keys = [*OBSERVATION_KEYS, "is_init", *self.state_keys]
        self.out_keys = [logits_key, *(("next", k) for k in self.state_keys)]
        #: the student's collection pass also writes ``state_value`` and fixed ``features``, and its
        #: replays read them; a teacher running beside it (``with_keys``, or a copy the trainer
        #: switched off) does neither, so it never reads the student's features as its own
        self.carries_outputs = self.state_keys == STATE_KEYS and logits_key == "logits"
        #: set by ``share_features_of``: read the student's ``features`` instead of encoding
        self.reads_features = False

    def features_fixed(self) -> bool:
        """True while no encoder parameter trains, so a frame's ``features`` never change."""
        return not any(p.requires_grad for m in self.net.encoder_modules() for p in m.parameters())

    @property
    def net(self) -> ScaledNet:
        return self.module.step.net

    def share_features_of(self, student: RecurrentLogits) -> bool:
        """Read the ``features`` the student wrote for the same frame instead of running these
        encoders, when they compute the same function: both fixed and equal (π* is the start
        point and fine-tuning keeps the encoders frozen). Kickstarting's π* beside the student
        then costs an LSTM step per frame, not a second ScaledNet pass. Returns whether it does."""
        mine = [t for m in self.net.encoder_modules() for t in [*m.parameters(), *m.buffers()]]
        theirs = [t for m in student.net.encoder_modules() for t in [*m.parameters(), *m.buffers()]]
        self.reads_features = (
            student.features_fixed()
            and self.features_fixed()
            and len(mine) == len(theirs)
            and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(mine, theirs))
        )
        return self.reads_features

    def with_keys(self, state_keys: list[str], logits_key: str) -> RecurrentLogits:
        """The same network (shared weights) reading and writing other keys."""
        return RecurrentLogits(self.net, state_keys, logits_key)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        if td.ndim == 2:
            return self._sequence(td)
        obs, is_init, (h, c) = _flat_inputs(td, self.net, self.state_keys)
        step = self.module.step
        collecting = self.carries_outputs and self.training
        keep = (~is_init.reshape(-1).bool()).to(h.dtype).unsqueeze(-1)
        x = td.get(FEATURES_KEY, None) if self.reads_features else None
        if x is None:
            x = step.encode(*obs)
            PassCounter.add(x.shape[0], 0)
        else:
            x = x.reshape(h.shape[0], -1)
        PassCounter.add(0, x.shape[0])
        h, c = lstm_step(self.net.lstm, x, h * keep, c * keep)
        td.set(self.logits_key, self.net.policy(h).reshape(*td.shape, NUM_ACTIONS))
        td.set(("next", self.state_keys[0]), h.reshape(*td.shape, -1))
        td.set(("next", self.state_keys[1]), c.reshape(*td.shape, -1))
        if collecting:  # the same pass's value and fixed features, so learning need not redo them
            td.set("state_value", self.net.value(h).reshape(*td.shape, 1))
            if self.features_fixed():
                td.set(FEATURES_KEY, x.reshape(*td.shape, -1))
        return td

    def replay(self, td: TensorDictBase, hidden: tuple[torch.Tensor, torch.Tensor] | None):
        """Logits of [B, T] rows replayed through the fused LSTM from ``hidden`` (zeros if None),
        resetting where ``is_init`` is set; returns them with the state after the last step."""
        logits, _, hidden = self._replay_core(td, hidden)
        return logits, hidden

    def _replay_core(self, td: TensorDictBase, hidden):
        """(logits, LSTM outputs, final state) of [B, T] rows; the encoders are skipped when the
        rows carry the ``features`` this student's collection pass stored and they cannot have
        changed since (encoders fixed)."""
        batch, steps = td.shape
        is_init = td.get("is_init", None)
        if is_init is None:
            device = td.get(OBSERVATION_KEYS[0]).device
            is_init = torch.zeros(batch, steps, dtype=torch.bool, device=device)
        is_init = is_init.reshape(batch, steps).bool()
        features = td.get(FEATURES_KEY, None) if self.carries_outputs else None
        if features is None or not self.features_fixed():
            obs = [td.get(k).flatten(0, 1) for k in OBSERVATION_KEYS]
            features = self.module.step.encode(*obs).view(batch, steps, -1)
            PassCounter.add(batch * steps, 0)
        PassCounter.add(0, batch * steps)
        core, hidden = self.net._core(features, hidden, is_init)
        return self.net.policy(core), core, hidden

    def annotate_states(self, td: TensorDictBase, hidden: tuple[torch.Tensor, torch.Tensor] | None):
        """Write into [B, T] rows the LSTM state before each frame (``state_keys``), stepping one
        frame at a time from ``hidden``; returns the state after the last frame. Turns recorded
        sequences into flat states a single-step evaluation (the per-sample EWC Fisher) can read."""
        batch, steps = td.shape
        if hidden is None:
            zeros = torch.zeros(batch, self.net.config.hidden, device=td.get(OBSERVATION_KEYS[0]).device)
            hidden = (zeros, zeros)
        h, c = hidden
        before_h, before_c = [], []
        for t in range(steps):
            obs, is_init, _ = _flat_inputs(td[:, t], self.net, [])
            before_h.append(h)
            before_c.append(c)
            _, _, h, c = self.module.step(*obs, is_init, h, c)
        td.set(self.state_keys[0], torch.stack(before_h, 1))
        td.set(self.state_keys[1], torch.stack(before_c, 1))
        return h, c

    def _sequence(self, td: TensorDictBase) -> TensorDictBase:
        """[B, T] rows replayed through the LSTM from the stored state of their first step."""
        hidden = None
        if self.state_keys[0] in td.keys():
            hidden = (td.get(self.state_keys[0])[:, 0], td.get(self.state_keys[1])[:, 0])
        logits, core, _ = self._replay_core(td, hidden)
        td.set(self.logits_key, logits)
        if self.carries_outputs:
            td.set(CORE_KEY, core)
        return td


class RecurrentValue(TensorDictModuleBase):
    """Writes ``state_value`` for every frame from its stored LSTM state (one step, vmap-friendly)."""

    def __init__(self, step: SingleStep):
        super().__init__()
        self.step = step
        self.in_keys = list(IN_KEYS)
        self.out_keys = ["state_value"]

    def head_on_actor_outputs(self) -> TensorDictModule:
        """The value head alone, reading the ``core`` the actor's sequence replay just wrote into
        the same TensorDict: the PPO loss's critic, so one trunk pass serves actor and critic."""
        return TensorDictModule(self.step.net.value, in_keys=[CORE_KEY], out_keys=["state_value"])

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs, is_init, (h, c) = _flat_inputs(td, self.step.net)
        _, value, _, _ = self.step(*obs, is_init, h, c)
        td.set("state_value", value.reshape(*td.shape, 1))
        return td


def set_batchnorm_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def make_actor_critic(net: ScaledNet) -> tuple[ProbabilisticActor, RecurrentValue]:
    """Actor (categorical over the 121 actions, writes ``logits``) and critic sharing ``net``."""
    logits = RecurrentLogits(net)
    actor = ProbabilisticActor(
        logits,
        in_keys=["logits"],
        out_keys=["action"],
        spec=Categorical(NUM_ACTIONS),
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    logits.module.step.train()  # BatchNorm to eval mode
    critic = RecurrentValue(logits.module.step)
    return actor, critic


def recurrent_primer(num_envs: int, hidden: int, keys: list[str] = STATE_KEYS) -> TensorDictPrimer:
    """Env transform that puts zero LSTM states in every reset (and keeps the policy's on steps):
    the student's, or (``TEACHER_STATE_KEYS``) a kickstarting teacher's running beside it."""
    specs = {key: Unbounded(shape=(num_envs, hidden), dtype=torch.float32) for key in keys}
    return TensorDictPrimer(Composite(specs, shape=(num_envs,)), reset_key="_reset")
