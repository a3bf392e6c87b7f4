"""ScaledNet: the paper's exact parameter count, shapes, LSTM resets inside a sequence, and the
points where the released network's computation is easy to get wrong (docs: model115.md, "What the
network computes"), each on a hand-made screen where a re-implementation that differs would fail."""

from __future__ import annotations

import pytest
import torch

from lit_rl.models.scaled_net import NUM_ACTIONS, BottomLinesEncoder, ScaledNet, TopLineEncoder


def count(modules) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def observations(*batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        tty_chars=torch.randint(0, 256, (*batch, 24, 80), generator=g, dtype=torch.uint8),
        tty_colors=torch.randint(0, 16, (*batch, 24, 80), generator=g, dtype=torch.int8),
        tty_cursor=torch.stack(
            [
                torch.randint(0, 24, batch, generator=g),
                torch.randint(0, 80, batch, generator=g),
            ],
            dim=-1,
        ).to(torch.uint8),
        prev_action=torch.randint(0, NUM_ACTIONS, batch, generator=g),
    )


def take(obs: dict[str, torch.Tensor], rows, steps) -> dict[str, torch.Tensor]:
    return {key: value[rows, steps] for key, value in obs.items()}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core box threads spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(one_thread) -> ScaledNet:
    torch.manual_seed(0)
    return ScaledNet("tiny").eval()


def test_paper_size_parameter_count():
    net = ScaledNet("paper")
    assert count([net]) == 32_931_352
    assert count(net.encoder_modules()) == 8_540_138
    assert count(net.core_modules()) == 24_179_056
    assert count(net.head_modules()) == 212_158


@pytest.mark.parametrize("size", ["small", "tiny"])
def test_groups_partition_the_parameters(size):
    net = ScaledNet(size)
    groups = net.encoder_modules() + net.core_modules() + net.head_modules()
    assert count(groups) == count([net])
    assert count([net]) < 5_000_000


def test_top_line_equals_one_hot_linear():
    encoder = TopLineEncoder(8)
    chars = torch.randint(0, 256, (5, 80))
    one_hot = torch.nn.functional.one_hot(chars, 256).flatten(1).float()
    expected = encoder.out(encoder.one_hot_linear(one_hot))
    torch.testing.assert_close(encoder(chars), expected)


def screen(status: str = "") -> dict[str, torch.Tensor]:
    """One hand-made screen: every map cell a distinct non-zero character and a non-zero colour
    (so a crop shows exactly which cells it took), and ``status`` on row 22."""
    rows, cols = torch.meshgrid(torch.arange(24), torch.arange(80), indexing="ij")
    chars = (1 + (rows * 80 + cols) % 250).to(torch.uint8)
    colors = (1 + (rows * 3 + cols) % 15).to(torch.uint8)
    line = torch.tensor([ord(c) for c in status.ljust(80)], dtype=torch.uint8)
    chars[22] = line
    return dict(tty_chars=chars[None], tty_colors=colors[None])


def expected_crop(grid: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """The released network's crop, cell by cell: the 21x80 map is screen rows 1-21; the cursor
    row moves by -1 and wraps as uint8 (row 0 -> 255); offsets -5..+3; 0 outside the map."""
    map_row = (row - 1) % 256
    out = torch.zeros(9, 9, dtype=grid.dtype)
    for i in range(9):
        for j in range(9):
            r, c = map_row + i - 5, col + j - 5
            if 0 <= r < 21 and 0 <= c < 80:
                out[i, j] = grid[1 + r, c]
    return out


#: a cursor near each edge and corner of the map, on the message row (0) and the status rows
EDGE_CURSORS = [(1, 0), (1, 79), (21, 0), (21, 79), (1, 40), (21, 40), (11, 0), (11, 79), (2, 4),
                (20, 76), (0, 5), (0, 79), (22, 10), (23, 70)]  # fmt: skip


def test_status_number_channel_covers_minus_dot_slash():
    """Point 1: (c - 47) / 10 for 44 < c < 58, so '-', '.', '/' and the digits, else 0."""
    text = "Dlvl:1 $:0 HP:12(12) Pw:5/5 AC:-1 Xp:1/0 T:3.5 ,:"
    chars = torch.full((1, 2, 80), ord(" "), dtype=torch.uint8)
    chars[0, 0, : len(text)] = torch.tensor([ord(c) for c in text], dtype=torch.uint8)
    channels = BottomLinesEncoder.channels(chars)
    assert channels.shape == (1, 2, 160)
    for k, character in enumerate(text):
        number = (ord(character) - 47) / 10 if character in "-./0123456789" else 0.0
        assert channels[0, 1, k].item() == pytest.approx(number), character
        assert channels[0, 0, k].item() == pytest.approx((ord(character) - 32) / 96), character
    minus, dot = text.index("-"), text.index(".")
    assert channels[0, 1, minus].item() == pytest.approx(-0.2)
    assert channels[0, 1, dot].item() == pytest.approx(-0.1)
    encoder = BottomLinesEncoder(8)
    torch.testing.assert_close(encoder(chars), encoder.net(channels))


@torch.no_grad()
def test_map_encoder_has_no_activation_before_the_flatten(tiny):
    """Point 2: embeddings -> blocks -> flatten -> Linear -> ELU, nothing between the last residual
    block and the flatten. The block output has negative values, so an ELU there would show."""
    obs = screen()
    x = tiny._embed(obs["tty_chars"][:, 1:22], obs["tty_colors"][:, 1:22])
    blocks = [m for m in tiny.map_encoder if isinstance(m, torch.nn.Sequential)]
    linear = next(m for m in tiny.map_encoder if isinstance(m, torch.nn.Linear))
    y = x
    for block in blocks:
        y = block(y)
    assert (y < -0.1).any()
    expected = torch.nn.functional.elu(linear(y.flatten(1)))
    torch.testing.assert_close(tiny.map_encoder(x), expected)


@pytest.mark.parametrize("cursor_dtype", [torch.uint8, torch.int64])
def test_crop_window_rows_offsets_and_zero_fill(tiny, cursor_dtype):
    """Point 3: map rows only, cursor row -1, offsets -5..+3 (cursor at index 5), zeros outside
    the map for characters and colours, an all-zero crop for a cursor on screen row 0."""
    obs = screen()
    for row, col in EDGE_CURSORS:
        cursor = torch.tensor([[row, col]], dtype=cursor_dtype)
        for key in ("tty_chars", "tty_colors"):
            crop = tiny._crop(obs[key], cursor)
            assert torch.equal(crop[0], expected_crop(obs[key][0], row, col)), (key, row, col)
    middle = tiny._crop(obs["tty_chars"], torch.tensor([[10, 40]], dtype=cursor_dtype))[0]
    assert middle[5, 5] == obs["tty_chars"][0, 10, 40] and middle[0, 0] == obs["tty_chars"][0, 5, 35]
    assert middle[8, 8] == obs["tty_chars"][0, 13, 43]
    assert not tiny._crop(obs["tty_chars"], torch.tensor([[0, 40]], dtype=cursor_dtype)).any()


@torch.no_grad()
def test_features_in_the_original_order_with_the_shared_embeddings(tiny):
    """Points 3 and 4: fc reads message, status, map, previous-action one-hot, crop; the crop is
    embedded with the map's own embeddings, after zero fill."""
    obs = screen("Dlvl:1 $:0 HP:12(12) Pw:5/5 AC:-1")
    chars, colors = (
        obs["tty_chars"].expand(len(EDGE_CURSORS), -1, -1),
        obs["tty_colors"].expand(len(EDGE_CURSORS), -1, -1),
    )
    cursor = torch.tensor(EDGE_CURSORS, dtype=torch.uint8)
    prev_action = torch.arange(len(EDGE_CURSORS)) * 7
    features = tiny.features(chars, colors, cursor, prev_action)
    crop_chars = torch.stack([expected_crop(chars[0], r, c) for r, c in EDGE_CURSORS]).long()
    crop_colors = torch.stack([expected_crop(colors[0], r, c) for r, c in EDGE_CURSORS]).long()
    crop_input = torch.cat([tiny.char_embedding(crop_chars), tiny.color_embedding(crop_colors)], -1)
    parts = [
        tiny.top_line(chars[:, 0]),
        tiny.bottom_lines(chars[:, 22:]),
        tiny.map_encoder(tiny._embed(chars[:, 1:22], colors[:, 1:22])),
        torch.nn.functional.one_hot(prev_action, NUM_ACTIONS).float(),
        tiny.crop_encoder(crop_input.permute(0, 3, 1, 2)),
    ]
    torch.testing.assert_close(features, torch.cat(parts, -1))
    torch.testing.assert_close(tiny.encode(chars, colors, cursor, prev_action), tiny.fc(features))


def test_paper_feature_width_is_1473():
    """Point 4's widths at the paper size: 64 + 128 + 512 + 121 + 648."""
    assert ScaledNet("paper").fc[0].in_features == 64 + 128 + 512 + 121 + 648 == 1473


def test_single_step_and_sequence_shapes(tiny):
    logits, value, (h, c) = tiny(**observations(3))
    assert logits.shape == (3, NUM_ACTIONS) and value.shape == (3, 1)
    assert h.shape == c.shape == (3, 128)
    logits, value, (h, c) = tiny(**observations(3, 5), hidden=(h, c))
    assert logits.shape == (3, 5, NUM_ACTIONS) and value.shape == (3, 5, 1)
    assert h.shape == (3, 128)


@torch.no_grad()
def test_sequence_matches_step_by_step(tiny):
    obs = observations(2, 4)
    hidden = (torch.randn(2, 128), torch.randn(2, 128))
    logits, value, final = tiny(**obs, hidden=hidden)
    state = hidden
    for t in range(4):
        step_logits, step_value, state = tiny(**take(obs, slice(None), t), hidden=state)
        torch.testing.assert_close(step_logits, logits[:, t])
        torch.testing.assert_close(step_value, value[:, t])
    torch.testing.assert_close(state, final)


@torch.no_grad()
def test_reset_mid_sequence_equals_starting_fresh(tiny):
    obs = observations(2, 6)
    hidden = (torch.randn(2, 128), torch.randn(2, 128))
    is_init = torch.zeros(2, 6, 1, dtype=torch.bool)
    is_init[0, 3] = True  # row 0 starts a new episode at t = 3; row 1 runs on
    logits, _, (h, _) = tiny(**obs, hidden=hidden, is_init=is_init)

    fresh, _, (fresh_h, _) = tiny(**take(obs, slice(0, 1), slice(3, None)))
    torch.testing.assert_close(logits[0, 3:], fresh[0])
    torch.testing.assert_close(h[0], fresh_h[0])
    unreset, _, _ = tiny(**obs, hidden=hidden)
    torch.testing.assert_close(logits[1], unreset[1])
    assert not torch.allclose(logits[0, 3:], unreset[0, 3:])

    at_start = torch.zeros(2, 6, dtype=torch.bool)
    at_start[:, 0] = True  # a reset on the first step discards the incoming state
    torch.testing.assert_close(tiny(**obs, hidden=hidden, is_init=at_start)[0], tiny(**obs)[0])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = ScaledNet("tiny")
    logits, value, _ = net(**observations(2, 3))
    (logits.logsumexp(-1).sum() + value.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
