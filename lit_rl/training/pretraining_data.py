"""States of the pre-training distribution, for methods that replay or estimate from it.

The paper's EWC and BC read the pre-training data. A scenario with a recorded dataset streams it
(``Scenario.pretraining_sequences``); otherwise π*'s own rollouts in the subspace it was trained on
stand in for it. Flat states sit in a TorchRL replay buffer and are sampled uniformly; recurrent
policies read consecutive sequence chunks instead, so LSTM states can be carried across them.
A recorded dataset's chunks are read ahead in a background thread (``Prefetched``).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lit_rl.retention.base import sequence_model
from lit_rl.scenarios.base import Scenario


def teacher_rollout(scenario: Scenario, teacher, num_envs: int, steps: int, seed: int) -> TensorDictBase:
    """[num_envs, steps] frames π* plays from the scenario's pre-training starts, without the
    ``next`` entries and logits (the states alone, with the action π* took)."""
    env = scenario.make_env(num_envs, scenario.pretraining_subspace, seed)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(steps, teacher, break_when_any_done=False)
    env.close()
    return rollout.exclude("next", "logits")


class TeacherRolloutStates:
    """A replay buffer of ``frames`` states visited by π* from the scenario's pre-training starts."""

    def __init__(self, scenario: Scenario, teacher, frames: int, num_envs: int, seed: int):
        rollout = teacher_rollout(scenario, teacher, num_envs, max(1, frames // num_envs), seed).reshape(-1)
        self.buffer = ReplayBuffer(storage=LazyTensorStorage(rollout.numel()))
        self.buffer.extend(rollout)

    def __call__(self, n: int) -> TensorDictBase:
        return self.buffer.sample(n)


class RolloutSequences:
    """π*'s own rollouts from the pre-training subspace as [envs, steps] rows, handed out in
    consecutive [envs, seq_length] chunks (cycling back to the start), for recurrent BC replay when
    a scenario has no recorded dataset. Each row's first frame starts an episode (``is_init``), so
    the carried LSTM states reset when the cycle begins again."""

    def __init__(self, scenario: Scenario, teacher, frames: int, rows: int, seq_length: int, seed: int):
        steps = seq_length * max(1, math.ceil(frames / (rows * seq_length)))
        self.rollout = teacher_rollout(scenario, teacher, rows, steps, seed)
        self.rollout.set("valid", torch.ones(self.rollout.shape, dtype=torch.bool))
        self.seq_length, self.cursor = seq_length, 0

    def __iter__(self) -> Iterator[TensorDictBase]:
        return self

    def __next__(self) -> TensorDictBase:
        chunk = self.rollout[:, self.cursor : self.cursor + self.seq_length]
        self.cursor = (self.cursor + self.seq_length) % self.rollout.shape[1]
        return chunk


class DatasetStates:
    """Flat frames of a recorded dataset, each carrying the LSTM state π* had before it.

    π* replays the chunk stream with its state carried from chunk to chunk
    (``RecurrentLogits.annotate_states``), so a single-step evaluation (EWC's Fisher) sees each
    frame as π* would have in the recorded game. Padding frames are dropped. Consecutive frames
    are strongly correlated, so ``spread`` times the requested frames are read and a uniform
    subset is returned: the states then reach further into each game (deeper levels included).
    """

    def __init__(self, chunks: Iterator[TensorDictBase], teacher, spread: int = 4, seed: int = 0):
        self.chunks, self.teacher, self.spread = chunks, teacher, spread
        self.device = next(teacher.parameters()).device
        self.generator = torch.Generator().manual_seed(seed)
        self.hidden: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self, n: int) -> TensorDictBase:
        frames, total = [], 0
        while total < self.spread * n:
            chunk = next(self.chunks).to(self.device)
            self.hidden = sequence_model(self.teacher).annotate_states(chunk, self.hidden)
            flat = chunk.reshape(-1)
            flat = flat[flat["valid"]]
            frames.append(flat)
            total += flat.numel()
        pool = torch.cat(frames)
        return pool[torch.randperm(pool.numel(), generator=self.generator)[:n].sort().values.to(self.device)]


class Prefetched:
    """Iterates ``source`` in a background thread, up to ``depth`` items ahead of the consumer, so
    BC replay's recorded-game chunks are decoded while the learner trains and ``next`` returns a
    ready chunk. The items and their order are the source's own.

    A thread, not a torch ``DataLoader`` worker process: the source is whatever iterator the
    scenario hands out (NetHack: a generator over ``NLDSequences``, which cannot be pickled into a
    worker), a thread shares the finished chunk with the learner without copying it through shared
    memory, and the two overlap well enough in one process: the learner's time is in torch kernels,
    which release the GIL, and part of a chunk's (nle's C++ bzip2/ttyrec converter) does too (a
    pure-Python loop kept 66 % of its speed beside a decoding thread, load 5.6 on 2 cores). An error
    in the source is raised by the consumer's next ``next``. ``close`` stops the thread (also when
    it is blocked on a full queue); it is a daemon, so even an unclosed one never keeps the process
    alive.
    """

    def __init__(self, source: Iterator, depth: int = 2, name: str = "lit_rl-prefetch"):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), name=name, daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except Exception as error:  # handed to the consumer, which raises it
            self._put((_ERROR, error))

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        while True:
            if self._stop.is_set():
                raise RuntimeError("the prefetched stream was closed")
            try:
                kind, value = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the prefetch thread ended without a result") from None
        if kind is _ERROR:
            raise value
        if kind is _END:
            self._stop.set()
            raise StopIteration
        return value

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (it finishes the item it is reading first)."""
        self._stop.set()
        self._thread.join(timeout)


_ITEM, _END, _ERROR = object(), object(), object()
#: how often a blocked prefetch thread or consumer checks for a stop
_POLL_S = 0.05
