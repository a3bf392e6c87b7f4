"""Checkpoints that a fault cannot take away.

A run's progress lives in ``checkpoints/last.ckpt``. Three faults could take it away, and each is
handled here:

- a process killed during a save (preemption, OOM killer, SIGKILL): every file is written to a
  temporary file in the same folder, fsynced and renamed over the target, so the target is always
  either the old or the new complete file;
- a checkpoint damaged after it was written (a copy cut short, a disk fault): each overwrite keeps
  the file it replaces as ``<name>.prev.ckpt``, and :func:`resume_checkpoint` (what ``--ckpt_path
  last`` / ``RESUME=1`` resolves to) checks ``last.ckpt`` and falls back to ``last.prev.ckpt``;
- a disk that fills during a save: the temporary file is removed, both checkpoints stay as they
  were, and the run stops with one line (:class:`CheckpointWriteError`).

Every read goes through :func:`lit_rl.safe_load.safe_load` (``weights_only=True``), both the
readability check of ``--ckpt_path last`` and Lightning's own restore, which calls
:meth:`AtomicCheckpointIO.load_checkpoint`: a checkpoint cannot run code when a run resumes from it
or ``lit-rl validate`` evaluates it.
"""

from __future__ import annotations

import os
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_rl.safe_load import UntrustedFile, first_line, safe_load

PREVIOUS_SUFFIX = ".prev"


class CheckpointWriteError(SystemExit):
    """A checkpoint could not be written (disk full, quota, I/O error). A ``SystemExit`` with a
    message: Lightning still runs its interrupt hooks, then Python prints the one line to stderr
    and exits with code 1 instead of showing a traceback."""


def previous_path(path: str | os.PathLike) -> Path:
    """``last.ckpt`` → ``last.prev.ckpt``: where an overwrite keeps the file it replaces."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic writes and a kept previous checkpoint.

    The previous file is kept only if it is known to be good: this plugin wrote it or resumed from
    it. After a resume that fell back past a damaged ``last.ckpt``, the next save therefore replaces
    the damaged file without rotating it over the good ``last.prev.ckpt``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._good: set[str] = set()
        self._swept: set[str] = set()  # paths whose leftover temporary files were removed

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        if os.path.abspath(path) not in self._swept:
            remove_stale_temporaries(path)
            self._swept.add(os.path.abspath(path))
        keep_previous = os.path.abspath(path) in self._good and path.exists()
        try:
            atomic_save(checkpoint, path, keep_previous=keep_previous)
        except OSError as error:
            raise CheckpointWriteError(
                f"lit-rl: error: could not write checkpoint {path} ({error.strerror or error}); "
                "checkpoints already on disk are intact: free space or fix the disk, then resume with "
                "RESUME=1 (--ckpt_path last)"
            ) from error
        self._good.add(os.path.abspath(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        """Lightning's restore: read by :func:`safe_load` whatever ``weights_only`` Lightning passes
        (it passes ``None``, which torch's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns into a full
        unpickling)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        checkpoint = safe_load(path, map_location=map_location)
        self._good.add(os.path.abspath(path))
        return checkpoint


def atomic_save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    With ``keep_previous`` the current ``path`` is first hard-linked to ``<name>.prev.ckpt`` (a
    rename of a link, so that file too is always complete); where hard links are not supported it
    is renamed instead, which leaves a moment without ``path`` that :func:`resume_checkpoint`
    covers by reading the previous file. Any failure removes the temporary file and re-raises.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name opened exclusively, so the file gets the user's umask like any other output
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous:
            _keep_as_previous(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporary files that a process killed during a save of ``path`` left beside it.
    Only one process writes a run's checkpoints, so at its first save none of them is in use."""
    if not path.parent.is_dir():
        return []
    previous = previous_path(path)
    stale = [
        *path.parent.glob(f".{path.name}.*.tmp"),
        *path.parent.glob(f".{previous.name}.link"),
    ]
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def _keep_as_previous(path: Path) -> None:
    previous = previous_path(path)
    link = previous.with_name(f".{previous.name}.link")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:  # no hard links on this file system
        os.replace(path, previous)
        return
    os.replace(link, previous)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a crash of the machine right after a save keeps the new names)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unreadable_reason(path: Path) -> str | None:
    """``None`` if ``path`` is a complete Lightning checkpoint, else why not (one short phrase).

    ``torch.load`` alone notices a truncated file but not damaged bytes inside it, so the zip
    archive's CRC-32 of every record is checked first (it reads the file once).

    Raises:
        UntrustedFile: the file could run code when read; that is not damage to pass over.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            return f"record {bad} fails its checksum"
        checkpoint = safe_load(path, mmap=True)
    except UntrustedFile:
        raise
    except Exception as error:  # any failure to read means: do not resume from it
        return first_line(error)[:160]
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def resume_checkpoint(folder: str | os.PathLike, name: str = "last.ckpt") -> Path | None:
    """The checkpoint ``--ckpt_path last`` resumes from: ``last.ckpt`` if readable, else
    ``last.prev.ckpt`` (saying so in one line on stderr); ``None`` when the folder holds neither
    (the run had not saved yet, so it starts from the beginning).

    Raises:
        ValueError: checkpoints exist but none is readable (one line naming each and why).
        UntrustedFile: a checkpoint could run code when read; a crafted file is refused, not passed
            over for an older one.
    """
    candidates = [Path(folder) / name, previous_path(Path(folder) / name)]
    if not any(path.exists() for path in candidates):
        return None
    problems = []
    for path in candidates:
        reason = unreadable_reason(path) if path.exists() else "missing"
        if reason is None:
            if problems:
                print(f"lit-rl: warning: {problems[0]}; resuming from {path}", file=sys.stderr)
            return path
        problems.append(f"{path}: {reason}")
    raise ValueError(
        f"no readable checkpoint to resume from ({'; '.join(problems)}): "
        "restore one, or start afresh with another --run_dir / SEED"
    )
