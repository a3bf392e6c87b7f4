"""ScaledNet: the tty-only recurrent actor-critic behind the paper's NetHack results (section 3).

The paper's size has exactly 32,931,352 parameters (encoder 8,540,138, LSTM 24,179,056, heads
212,158), the count of the public behavioural-cloning checkpoint this project fine-tunes. The
details the paper leaves out are pinned by that count: character and colour embeddings are
concatenated into the 32 input channels with no projection; the map's max-pools (kernel 3,
stride 2) have no padding, so 21x80 shrinks to 10x39 and then 4x19; the first convolution of
each IMPALA block has no BatchNorm; every convolution and linear layer has a bias; the LSTM has
both of PyTorch's bias vectors; the crop's convolutions keep 9x9 (padding 1) and flatten to
8x9x9 = 648 features.

Smaller sizes (``small``, ``tiny``) keep the layout and shrink the widths so the model trains on
a CPU. Rollouts should run the model in ``eval()`` mode: the BatchNorm layers then use their
running statistics, so a state's action does not depend on which other states share its batch.
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
BLANK = ord(" ")

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

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        chars = chars.flatten(-2).float()
        is_digit = (chars >= ord("0")) & (chars <= ord("9"))
        scaled = (chars - 32) / 96
        digits = is_digit * (chars - 47) / 10
        return self.net(torch.stack([scaled, digits], dim=1))


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
        self.map_encoder = nn.Sequential(
            *blocks,
            nn.ELU(),
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
        self.register_buffer("crop_offsets", torch.arange(cfg.crop_size), persistent=False)

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

    def _crop(self, grid: torch.Tensor, cursor: torch.Tensor, fill: int) -> torch.Tensor:
        """The crop_size-square window of ``grid`` [B, 24, 80] centred on ``cursor`` (row, col)."""
        half = self.config.crop_size // 2
        padded = F.pad(grid, (half, half, half, half), value=fill)
        rows = cursor[:, 0].long()[:, None] + self.crop_offsets
        cols = cursor[:, 1].long()[:, None] + self.crop_offsets
        batch = torch.arange(grid.shape[0], device=grid.device)[:, None, None]
        return padded[batch, rows[:, :, None], cols[:, None, :]]

    def encode(
        self,
        tty_chars: torch.Tensor,
        tty_colors: torch.Tensor,
        tty_cursor: torch.Tensor,
        prev_action: torch.Tensor,
    ) -> torch.Tensor:
        """Flat batch of observations [B, 24, 80] ... -> features [B, hidden] for the LSTM."""
        crop_chars = self._crop(tty_chars, tty_cursor, BLANK)
        crop_colors = self._crop(tty_colors, tty_cursor, 0)
        features = torch.cat(
            [
                self.top_line(tty_chars[:, 0]),
                self.bottom_lines(tty_chars[:, MAP_ROWS.stop :]),
                self.map_encoder(self._embed(tty_chars[:, MAP_ROWS], tty_colors[:, MAP_ROWS])),
                F.one_hot(prev_action.long(), NUM_ACTIONS).float(),
                self.crop_encoder(self._embed(crop_chars, crop_colors)),
            ],
            dim=-1,
        )
        return self.fc(features)

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
