"""A save that fails half-way through its write never costs the run its checkpoints.

A real Lightning ``Trainer`` (Lightning's demo model, ``ModelCheckpoint(save_last=True)``, the
checkpoint IO under test) runs in a child process whose file-size limit (``RLIMIT_FSIZE``) is
lowered before its third save, so the operating system fails that write part-way, as a filling disk
does. What a resume reads must come through whole: ``last.ckpt`` is the second checkpoint,
``last.prev.ckpt`` the first, nothing half-written is left in the folder, and the run stops with one
line. Lightning's default writer (``TorchCheckpointIO``) keeps no previous checkpoint and ends in a
traceback, so swapping it in fails this test.
"""

import subprocess
import sys
import textwrap

import pytest
import torch

from lit_rl.checkpoint_io import AtomicCheckpointIO
from tests.conftest import ROOT

IO = AtomicCheckpointIO

CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys
    from lightning import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel
    from {module} import {name} as IO

    folder = sys.argv[1]
    last = os.path.join(folder, "last.ckpt")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    class DiskFillsBeforeThirdSave(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                # room for only part of the next checkpoint, in any file of this process
                limit = os.path.getsize(last) // 2
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    checkpoint = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[DiskFillsBeforeThirdSave(), checkpoint], plugins=[IO()])
    trainer.fit(BoringModel())
    """
)


def test_a_save_that_fails_midway_keeps_both_checkpoints_whole(tmp_path):
    folder = tmp_path / "checkpoints"
    script = CHILD.format(module=IO.__module__, name=IO.__name__)
    child = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert child.returncode != 0, "the third save should have failed: the limit did not bite"
    last_line = child.stderr.strip().splitlines()[-1]
    assert last_line.startswith("lit-rl: error: could not write checkpoint"), child.stderr[-2000:]
    assert "RESUME=1" in last_line and "Traceback" not in child.stderr

    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "last.prev.ckpt"], (
        "a half-written file was left where a resume looks"
    )
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 2
    assert torch.load(folder / "last.prev.ckpt", weights_only=False)["global_step"] == 1


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C (or any exception) inside ``torch.save`` removes the temporary file it wrote into."""
    path = tmp_path / "last.ckpt"
    IO().save_checkpoint({"state_dict": {}, "global_step": 1}, path)

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        IO().save_checkpoint({"state_dict": {}, "global_step": 2}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=False)["global_step"] == 1


def test_the_first_save_clears_what_a_killed_save_left_behind(tmp_path):
    """A SIGKILL during a save leaves its temporary file; the resumed process's first save removes
    it (after loading ``last.ckpt``, which it then keeps as ``last.prev.ckpt``)."""
    path = tmp_path / "last.ckpt"
    IO().save_checkpoint({"state_dict": {}, "global_step": 1}, path)
    (tmp_path / ".last.ckpt.4242-0badf00d.tmp").write_bytes(b"half a checkpoint")
    resumed = IO()
    resumed.load_checkpoint(path)
    resumed.save_checkpoint({"state_dict": {}, "global_step": 2}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"]
    assert torch.load(tmp_path / "last.prev.ckpt", weights_only=False)["global_step"] == 1
