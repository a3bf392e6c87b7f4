"""Issue 27, point 4: files that cannot run code. A checkpoint or policy crafted to write a file when
unpickled is refused in one line on every path that reads one (resume, evaluation, pre-trained
policy), and the file is never written: lit_rl has no way to read it with the full unpickler."""

from __future__ import annotations

import pytest
import torch

from lit_rl.checkpoint_io import AtomicCheckpointIO
from lit_rl.cli import main
from lit_rl.safe_load import UntrustedFile, safe_load
from tests.conftest import APPLE, TRAINER, fit


class WritesFile:
    """Unpickling this calls ``open(path, "w")``: what any crafted pickle could do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def real_checkpoint(pretrained_apple):
    """The ``last.ckpt`` of the pre-training run behind ``pretrained_apple``."""
    return pretrained_apple.parent / "run" / "checkpoints" / "last.ckpt"


def crafted(source, out, marker):
    """``source`` with an object added that writes ``marker`` when unpickled."""
    payload = torch.load(source, weights_only=True)
    payload["evil"] = WritesFile(marker)
    torch.save(payload, out)
    return out


def one_line_refusal(capsys, path) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-rl: error:")]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "could run code" in lines[0] and "torch.save its tensors" in lines[0]
    return lines[0]


def test_the_files_lit_rl_writes_need_no_trust(real_checkpoint, pretrained_apple):
    for path in (real_checkpoint, pretrained_apple):
        assert isinstance(safe_load(path), dict)


def test_resuming_from_a_crafted_checkpoint_runs_no_code(real_checkpoint, pretrained_apple, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    (run / "checkpoints").mkdir(parents=True)
    last = crafted(real_checkpoint, run / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(SystemExit) as stop:
        fit("--model.pretrained", str(pretrained_apple), "--run_dir", str(run), "--ckpt_path", "last")
    assert stop.value.code == 2 and not marker.exists()
    one_line_refusal(capsys, last)


def test_evaluating_a_crafted_checkpoint_runs_no_code(real_checkpoint, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = crafted(real_checkpoint, tmp_path / "given.ckpt", marker)
    with pytest.raises(SystemExit) as stop:
        main(["validate", *APPLE, *TRAINER, "--model.pretrained", "null", "--ckpt_path", str(path),
              "--run_dir", str(tmp_path / "eval")])  # fmt: skip
    assert stop.value.code == 2 and not marker.exists()
    one_line_refusal(capsys, path)


def test_lightnings_own_restore_runs_no_code_even_when_torch_is_told_to_unpickle(
    real_checkpoint, tmp_path, monkeypatch
):
    """Lightning restores through the checkpoint IO with ``weights_only=None``, which this
    environment variable turns into a full unpickling in torch.load."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = crafted(real_checkpoint, tmp_path / "given.ckpt", marker)
    with pytest.raises(UntrustedFile, match="could run code"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_a_crafted_policy_runs_no_code(pretrained_apple, tmp_path, capsys):
    marker = tmp_path / "pwned"
    policy = crafted(pretrained_apple, tmp_path / "policy.pt", marker)
    with pytest.raises(SystemExit) as stop:
        fit(
            "--model.pretrained",
            str(policy),
            "--model.budget.frames",
            "6400",
            "--run_dir",
            str(tmp_path / "a"),
        )
    assert stop.value.code == 2 and not marker.exists()
    one_line_refusal(capsys, policy)
    assert not (tmp_path / "a" / "checkpoints").exists(), "nothing written before the refusal"
