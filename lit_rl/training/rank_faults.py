"""Faults under DDP: one rank's failure stops every rank, promptly, in one line.

Under DDP every rank meets the others in collectives (the gradient all-reduce, synced metrics,
Lightning's barrier after a checkpoint save). Two things can leave a rank waiting there forever:

- ranks that take different paths: a non-finite loss on one rank made that rank skip its update
  while the others entered the gradient all-reduce. :func:`nonfinite_ranks` makes the skip a
  decision of all ranks (one all-reduce of a flag per rank), so every rank skips the same updates and,
  when the non-finite budget is spent, every rank stops at the same update;
- a failed rank that does not exit: a peer notices a failure only when the failed process is gone
  (gloo then reports "Connection closed by peer" at its next collective); a failed process whose
  clean-up waits on something (collector processes, an evaluation worker, a thread) holds every
  other rank. :func:`report` therefore arms a watchdog that ends the process ``grace_s`` after the
  failure if it has not exited by then.

:func:`report` also prints the one line (``lit-rl: error: rank <r> failed: <cause>``, or, on a rank
that stopped because another one failed, ``lit-rl: rank <r> stopped: another rank failed``) and
keeps the traceback in ``<run>/errors/rank<r>.txt``; ``lit_rl.cli.main`` then exits with code 1
without a traceback. The ``RankFaults`` callback (callbacks/rank_faults.py) calls it.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from pathlib import Path

import torch

#: words of the errors torch.distributed raises at a collective whose peer is gone or hung
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "timed out",
             "Timed out", "NCCL communicator was aborted", "ProcessGroupGloo", "connectFullMesh")  # fmt: skip

_reported: list[str] = []


def nonfinite_ranks(loss: torch.Tensor, trainer) -> list[int]:
    """The ranks whose ``loss`` is not finite, the same list on every rank (an all-reduce of one
    flag per rank under DDP; no communication in a single process)."""
    bad = not bool(torch.isfinite(loss).all())
    if trainer is None or trainer.world_size == 1:
        return [0] if bad else []
    flags = torch.zeros(trainer.world_size, device=loss.device)
    flags[trainer.global_rank] = float(bad)
    flags = trainer.strategy.reduce(flags, reduce_op="sum")
    return [rank for rank, flag in enumerate(flags.tolist()) if flag > 0]


def peer_gone(exception: BaseException) -> bool:
    """Whether ``exception`` is a collective failing because another rank ended."""
    if type(exception).__name__ in ("DistBackendError", "DistNetworkError", "DistStoreError"):
        return True
    return isinstance(exception, RuntimeError) and any(word in str(exception) for word in PEER_GONE)


def cause(exception: BaseException) -> str:
    """The cause in one line: a ``SystemExit``'s message (lit_rl's own one-line stops), else the
    exception's type and first line."""
    if isinstance(exception, SystemExit):
        text = str(exception.code)
        return text.removeprefix("lit-rl: error: ")
    lines = str(exception).strip().splitlines()
    return f"{type(exception).__name__}: {lines[0] if lines else ''}".strip(": ")[:300]


def report(rank: int, exception: BaseException, folder: str | os.PathLike, grace_s: float) -> str:
    """Print the rank's one line, keep the traceback, arm the watchdog; returns the line. A
    second report in the same process (a second ``RankFaults``) only arms its own watchdog."""
    if _reported:
        _arm_watchdog(grace_s)
        return _reported[0]
    if peer_gone(exception):
        line = f"lit-rl: rank {rank} stopped: another rank failed (its line says why)"
    else:
        line = f"lit-rl: error: rank {rank} failed: {cause(exception)}"
        kept = _keep_traceback(rank, exception, Path(folder))
        if kept is not None:
            line += f" (traceback: {kept})"
    _say(line[:1000])
    _reported.append(line)
    _arm_watchdog(grace_s)
    return line


def reported() -> bool:
    """Whether this process reported a rank failure (the CLI then exits quietly with code 1)."""
    return bool(_reported)


def _keep_traceback(rank: int, exception: BaseException, folder: Path) -> Path | None:
    if isinstance(exception, SystemExit):  # lit_rl's own one-line stops: nothing more to say
        return None
    path = folder / "errors" / f"rank{rank}.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exception)))
    except OSError:  # a full disk may be the failure itself
        return None
    return path


def _say(line: str) -> None:
    """One line to stderr in one ``write``: the ranks share the terminal (or pipe), and a write of
    less than 4 KiB to a pipe is not interleaved with another process's."""
    sys.stderr.flush()
    os.write(sys.stderr.fileno(), (line + "\n").encode(errors="replace"))


def _arm_watchdog(grace_s: float) -> None:
    """End this process ``grace_s`` from now unless it has exited (a daemon timer dies with it)."""

    def expire() -> None:
        _say(f"lit-rl: clean-up took over {grace_s:.0f} s after the failure; ending the process")
        os._exit(1)

    timer = threading.Timer(grace_s, expire)
    timer.daemon = True
    timer.start()
