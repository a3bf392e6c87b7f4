"""Checkpoints are written atomically: a save that dies half-way leaves the previous file intact."""

import pytest
import torch

from lit_rl.checkpoint_io import AtomicCheckpointIO


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"env_frames": 100}, path)

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"env_frames": 200}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"env_frames": 100}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left behind"
