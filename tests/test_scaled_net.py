"""ScaledNet: the paper's exact parameter count, shapes, and LSTM resets inside a sequence."""

from __future__ import annotations

import pytest
import torch

from lit_rl.models.scaled_net import NUM_ACTIONS, ScaledNet, TopLineEncoder


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


def test_crop_is_centred_on_cursor_and_padded(tiny):
    grid = torch.arange(24 * 80).reshape(1, 24, 80)
    crop = tiny._crop(grid, torch.tensor([[10, 40]]), fill=-1)
    assert crop[0, 4, 4] == grid[0, 10, 40] and crop[0, 0, 0] == grid[0, 6, 36]
    corner = tiny._crop(grid, torch.tensor([[0, 0]]), fill=-1)
    assert corner[0, 4, 4] == 0 and (corner[0, :4] == -1).all() and (corner[0, :, :4] == -1).all()


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
