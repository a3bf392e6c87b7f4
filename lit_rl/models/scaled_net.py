"""ScaledNet: the tty-only recurrent actor-critic behind the paper's NetHack results (section 3).

The paper's size has exactly 32,931,352 parameters (encoder 8,540,138, LSTM 24,179,056, heads
212,158), the count of the public behavioural-cloning checkpoint this project fine-tunes. The
details the paper leaves out are pinned by that count: character and colour embeddings are
concatenated into the 32 input channels with no projection; the map's max-pools (kernel 3,
stride 2) have no padding, so 21x80 shrinks to 10x39 and then 4x19; the first convolution of
each IMPALA block has no BatchNorm; every convolution and linear layer has a bias; the LSTM has
both of PyTorch's bias vectors; the crop's convolutions keep 9x9 (padding 1) and flatten to
8x9x9 = 648 features.

What it computes follows the released network (Tuyls et al.'s ``NetHackNetTtyrec`` with the flags
of ``model_115.tar``), so the converted checkpoint (``lit_rl.models.model115``) gives the original's
logits. The places where a re-implementation easily differs, each pinned by a test in
``tests/test_scaled_net.py``:

1. status lines (rows 22-23, 160 characters): channels (c - 32) / 96 and a "number" channel
   (c - 47) / 10 for 44 < c < 58 (``-``, ``.``, ``/`` and the digits), else 0;
2. map encoder: embeddings -> IMPALA blocks -> flatten -> Linear -> ELU, with no activation
   between the last residual block and the flatten;
3. crop: a 9x9 window of the 21x80 map (screen rows 1-21), the cursor row shifted by -1 into map
   coordinates, offsets -5 ... +3 on both axes (the cursor sits at index 5), characters and colours
   0 outside the map (before embedding); the original's cursor is uint8, so a cursor on screen
   row 0 wraps to map row 255 and its crop is all zeros;
4. features into ``fc``: message, status, map, previous-action one-hot, crop;
5. the LSTM state is zeroed where an episode starts.

The character and colour embeddings are shared by the map and the crop, as in the original (where
they live inside its screen encoder).

Smaller sizes (``small``, ``tiny``) keep the layout and the computation and shrink the widths so
the model trains on a CPU. Rollouts should run the model in ``eval()`` mode: the BatchNorm layers
then use their running statistics, so a state's action does not depend on which other states
share its batch.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

NUM_ACTIONS = 121
COLS = 80
MAP_ROWS = slice(1, 22)  # rows 1-21: the dungeon; row 0 is messages, rows 22-23 the status
NUM_CHARS, NUM_COLORS = 256, 128
#: Bumped whenever the function a given set of weights computes changes, so a policy exported by an
#: older lit_rl (whose weights were trained for the old computation) fails to load in one line
#: instead of silently acting differently. 2: model_115's status channels, map encoder and crop.
COMPUTATION_VERSION = 2


def describe_scaled_net(size: str) -> dict:
    """What identifies a ScaledNet's weights in a policy export (the NetHack scenario's
    ``describe`` and the model_115 converter both write this)."""
    return {"model": "ScaledNet", "size": size, "computation": COMPUTATION_VERSION}


Hidden = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class ScaledNetConfig:
    """Widths of ScaledNet; the defaults are the paper's."""

    hidden: int = 1738  # both fully connected layers and the LSTM
    top_line: int = 64
    bottom_line: int = 128
    map_features: int = 512
    embedding: int = 16  # per embedding; map and crop see 2x this many channels
    map_channels: tuple[int, ...] = (16, 32)  # one IMPALA block per entry
    crop_channels: tuple[int, ...] = (16, 16, 16, 16, 8)
    crop_size: int = 9


SIZES = {
    "paper": ScaledNetConfig(),
    "small": ScaledNetConfig(
        hidden=512, top_line=32, bottom_line=64, map_features=256, crop_channels=(16, 16, 8)
    ),
    "tiny": ScaledNetConfig(
        hidden=128,
        top_line=16,
        bottom_line=32,
        map_features=64,
        embedding=8,
        map_channels=(8, 16),
        crop_channels=(8, 4),
    ),
}


def _conv_bn_elu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ELU(),
    )


class ResidualBlock(nn.Module):
    """x + ([conv3x3, BatchNorm, ELU] x 2)(x), as in the IMPALA encoder."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_elu(channels, channels), _conv_bn_elu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def impala_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 to ``out_channels``, max-pool 3 stride 2, two residual blocks."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.MaxPool2d(3, stride=2),
        ResidualBlock(out_channels),
        ResidualBlock(out_channels),
    )


class TopLineEncoder(nn.Module):
    """Message line: one-hot 80x256 -> Linear -> ELU -> Linear -> ELU.

    The one-hot product is computed as a sum of the 80 weight columns the characters select, which
    is the same function with the same ``nn.Linear`` weights but without materialising the
    20,480-wide one-hot (84 MB per 1,024 states).
    """

    def __init__(self, width: int):
        super().__init__()
        self.one_hot_linear = nn.Linear(COLS * NUM_CHARS, width)
        self.out = nn.Sequential(nn.ELU(), nn.Linear(width, width), nn.ELU())
        self.register_buffer("offsets", torch.arange(COLS) * NUM_CHARS, persistent=False)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        index = chars.long() + self.offsets
        selected = F.embedding_bag(index, self.one_hot_linear.weight.t(), mode="sum")
        return self.out(selected + self.one_hot_linear.bias)


class BottomLinesEncoder(nn.Module):
    """Status lines as two 160-long channels (scaled characters, digit values) through a 1-D CNN."""

    def __init__(self, width: int):
        super().__init__()
        length = 2 * COLS
        length = (length - 8) // 4 + 1  # Conv1d k8 s4
        length = length - 4 + 1  # Conv1d k4 s1
        self.net = nn.Sequential(
            nn.Conv1d(2, 32, 8, stride=4),
            nn.ELU(),
            nn.Conv1d(32, 64, 4, stride=1),
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(64 * length, width),
            nn.ELU(),
            nn.Linear(width, width),
            nn.ELU(),
        )

    @staticmethod
    def channels(chars: torch.Tensor) -> torch.Tensor:
        """[B, 2, 80] status characters -> [B, 2, 160]: (c - 32) / 96, and (c - 47) / 10 where
        44 < c < 58 (``-``, ``.``, ``/`` and the digits; the original's "number" mask), else 0."""
        chars = chars.flatten(-2).float()
        is_number = (chars > 44) & (chars < 58)
        scaled = (chars - 32) / 96
        numbers = is_number * (chars - 47) / 10
        return torch.stack([scaled, numbers], dim=1)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        return self.net(self.channels(chars))


class ScaledNet(nn.Module):
    """tty observation + previous action -> (policy logits [..,121], value [..,1], LSTM state).

    ``size`` is ``"paper"``, ``"small"``, ``"tiny"`` or a ``ScaledNetConfig``.
    """

    def __init__(self, size: str | ScaledNetConfig = "paper"):
        super().__init__()
        cfg = SIZES[size] if isinstance(size, str) else size
        self.config = cfg
        channels = 2 * cfg.embedding
        self.char_embedding = nn.Embedding(NUM_CHARS, cfg.embedding)
        self.color_embedding = nn.Embedding(NUM_COLORS, cfg.embedding)
        self.top_line = TopLineEncoder(cfg.top_line)
        self.bottom_lines = BottomLinesEncoder(cfg.bottom_line)

        blocks, height, width = [], MAP_ROWS.stop - MAP_ROWS.start, COLS
        for out in cfg.map_channels:
            blocks.append(impala_block(channels, out))
            channels, height, width = out, (height - 3) // 2 + 1, (width - 3) // 2 + 1
        # No activation between the last residual block and the flatten (as in the original).
        self.map_encoder = nn.Sequential(
            *blocks,
            nn.Flatten(),
            nn.Linear(channels * height * width, cfg.map_features),
            nn.ELU(),
        )

        crop_layers, channels = [], 2 * cfg.embedding
        for out in cfg.crop_channels:
            crop_layers.append(_conv_bn_elu(channels, out))
            channels = out
        self.crop_encoder = nn.Sequential(*crop_layers, nn.Flatten())
        crop_features = channels * cfg.crop_size**2

        features = cfg.top_line + cfg.bottom_line + cfg.map_features + NUM_ACTIONS + crop_features
        self.fc = nn.Sequential(
            nn.Linear(features, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(cfg.hidden, cfg.hidden, batch_first=True)
        self.policy = nn.Linear(cfg.hidden, NUM_ACTIONS)
        self.value = nn.Linear(cfg.hidden, 1)
        # The original's window offsets: arange(-size // 2, size // 2) = -5 ... +3 for 9.
        offsets = torch.arange(-cfg.crop_size // 2, cfg.crop_size // 2)
        self.register_buffer("crop_offsets", offsets, persistent=False)
        self.register_buffer("action_ids", torch.arange(NUM_ACTIONS), persistent=False)

    # -- parameter groups (the paper's split; fine-tuning froze the encoder) --------------------

    def encoder_modules(self) -> list[nn.Module]:
        return [
            self.char_embedding,
            self.color_embedding,
            self.top_line,
            self.bottom_lines,
            self.map_encoder,
            self.crop_encoder,
            self.fc,
        ]

    def core_modules(self) -> list[nn.Module]:
        return [self.lstm]

    def head_modules(self) -> list[nn.Module]:
        return [self.policy, self.value]

    # -- forward ---------------------------------------------------------------------------------

    def _embed(self, chars: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
        """[B, H, W] characters and colours -> [B, 2*embedding, H, W]."""
        colors = colors.long().clamp(0, NUM_COLORS - 1)
        embedded = torch.cat([self.char_embedding(chars.long()), self.color_embedding(colors)], dim=-1)
        return embedded.permute(0, 3, 1, 2)

    def _crop(self, grid: torch.Tensor, cursor: torch.Tensor) -> torch.Tensor:
        """The crop_size-square window of the map rows of ``grid`` [B, 24, 80] around ``cursor``.

        ``cursor`` is the screen's (row, col). The row is moved into map coordinates (-1) and wraps
        as uint8 does in the original (screen row 0 -> 255, so that crop is all zeros), whatever
        the cursor's dtype. Window offsets are ``crop_offsets`` (-5 ... +3 for 9) on both axes;
        cells outside the 21x80 map are 0 (the original samples with zero padding). Written as a
        clamped gather plus a mask, with no data-dependent branch, so it runs under ``vmap``.
        """
        height = MAP_ROWS.stop - MAP_ROWS.start
        map_grid = grid[:, MAP_ROWS]
        row = (cursor[:, 0].long() - MAP_ROWS.start) % 256
        rows = row[:, None] + self.crop_offsets
        cols = cursor[:, 1].long()[:, None] + self.crop_offsets
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < COLS))[:, None, :]
        batch = torch.arange(grid.shape[0], device=grid.device)[:, None, None]
        values = map_grid[batch, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, COLS - 1)[:, None, :]]
        return torch.where(inside, values, torch.zeros_like(values))

    def features(
        self,
        tty_chars: torch.Tensor,
        tty_colors: torch.Tensor,
        tty_cursor: torch.Tensor,
        prev_action: torch.Tensor,
    ) -> torch.Tensor:
        """Flat batch [B, 24, 80] ... -> the vector ``fc`` reads, in the original's order: message,
        status, map, previous-action one-hot, crop.

        The one-hot is a comparison with ``action_ids`` rather than ``F.one_hot``, which checks its
        input's range (a data-dependent branch ``vmap`` rejects; EWC's per-sample Fisher vmaps this).
        """
        crop = self._embed(self._crop(tty_chars, tty_cursor), self._crop(tty_colors, tty_cursor))
        return torch.cat(
            [
                self.top_line(tty_chars[:, 0]),
                self.bottom_lines(tty_chars[:, MAP_ROWS.stop :]),
                self.map_encoder(self._embed(tty_chars[:, MAP_ROWS], tty_colors[:, MAP_ROWS])),
                (prev_action.long().unsqueeze(-1) == self.action_ids).float(),
                self.crop_encoder(crop),
            ],
            dim=-1,
        )

    def encode(
        self,
        tty_chars: torch.Tensor,
        tty_colors: torch.Tensor,
        tty_cursor: torch.Tensor,
        prev_action: torch.Tensor,
    ) -> torch.Tensor:
        """Flat batch of observations [B, 24, 80] ... -> features [B, hidden] for the LSTM."""
        return self.fc(self.features(tty_chars, tty_colors, tty_cursor, prev_action))

    def _core(self, x: torch.Tensor, hidden: Hidden | None, is_init: torch.Tensor) -> tuple:
        """Runs the LSTM over [B, T, hidden], zeroing the state of rows where an episode starts.

        The sequence is cut where any row starts an episode, and each piece runs through the
        fused ``nn.LSTM``; rows reset at a cut start from zeros, the others carry on.
        """
        batch, steps = x.shape[:2]
        if hidden is None:
            h = x.new_zeros(batch, self.config.hidden)
            c = x.new_zeros(batch, self.config.hidden)
        else:
            h, c = hidden
        cuts = (torch.nonzero(is_init[:, 1:].any(0)).flatten() + 1).tolist()
        outputs = []
        for start, stop in zip([0, *cuts], [*cuts, steps]):
            keep = (~is_init[:, start]).to(x.dtype).unsqueeze(-1)
            out, (h, c) = self.lstm(x[:, start:stop], ((h * keep)[None], (c * keep)[None]))
            h, c = h[0], c[0]
            outputs.append(out)
        return torch.cat(outputs, dim=1), (h, c)

    def forward(
        self,
        tty_chars: torch.Tensor,
        tty_colors: torch.Tensor,
        tty_cursor: torch.Tensor,
        prev_action: torch.Tensor,
        hidden: Hidden | None = None,
        is_init: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Hidden]:
        """One step ([B, 24, 80] inputs) or a sequence ([B, T, 24, 80] inputs).

        Args:
            tty_chars, tty_colors: [B, 24, 80] or [B, T, 24, 80].
            tty_cursor: [B, 2] or [B, T, 2], (row, col).
            prev_action: [B] or [B, T], indices into the 121 actions.
            hidden: (h, c), each [B, hidden], the state before the first step; None for zeros.
            is_init: bool [B] / [B, T] (a trailing 1 is allowed): True where an episode starts,
                so the LSTM state entering that step is zeroed.

        Returns:
            logits [B(, T), 121], value [B(, T), 1], and the (h, c) state after the last step.
        """
        sequence = tty_chars.dim() == 4
        if not sequence:
            tty_chars, tty_colors, tty_cursor, prev_action = (
                t.unsqueeze(1) for t in (tty_chars, tty_colors, tty_cursor, prev_action)
            )
        batch, steps = tty_chars.shape[:2]
        if is_init is None:
            is_init = torch.zeros(batch, steps, dtype=torch.bool, device=tty_chars.device)
        is_init = is_init.reshape(batch, steps).bool()

        features = self.encode(
            tty_chars.flatten(0, 1),
            tty_colors.flatten(0, 1),
            tty_cursor.flatten(0, 1),
            prev_action.flatten(0, 1),
        )
        core, hidden = self._core(features.view(batch, steps, -1), hidden, is_init)
        logits, value = self.policy(core), self.value(core)
        if not sequence:
            logits, value = logits.squeeze(1), value.squeeze(1)
        return logits, value, hidden
