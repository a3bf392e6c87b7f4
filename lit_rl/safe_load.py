"""The one rule for reading torch files: a file handed in cannot run code when it is read.

``torch.load`` unpickles, and a pickle can call any Python function while it is read (a crafted
``last.ckpt`` can write files or start processes the moment a run resumes from it). Every torch file
lit_rl reads (checkpoints, exported policies, start-state pools, demonstrations, replay and
log-likelihood files) goes through :func:`safe_load`, which reads with ``weights_only=True``:
torch's restricted unpickler, which builds only tensors, plain containers and numbers, plus the
globals allow-listed in :data:`SAFE_GLOBALS` (the non-builtin types lit_rl's own files hold).

A file that names anything else is refused with one line that names what it holds and what to do:
lit_rl never reads a file with the full unpickler, so whoever trusts such a file converts it in their
own Python (load it there, save its tensors with ``torch.save``) and hands lit_rl the result.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch

#: globals (classes, functions) beyond torch's own weights-only set that lit_rl's files hold. Its
#: checkpoints, exports, pools and buffers hold only tensors, builtin containers and numbers
#: (``lit_rl.cli.plain_numbers`` turns range-checked settings back into ``int``/``float`` for that
#: reason), so the list is empty; a type added here must be plain data with no behaviour on load.
SAFE_GLOBALS: list[Any] = []


class UntrustedFile(ValueError):
    """A file that would need the full unpickler (and could run code): lit_rl does not read it."""


def unsafe_globals(path: str | os.PathLike) -> list[str]:
    """The globals ``path``'s pickle names that the restricted unpickler would refuse, read from
    the pickle's opcodes without running them (torch's ``get_unsafe_globals_in_checkpoint``);
    empty for a plain file, and for a file too damaged to list them."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch zip file at all: torch.load reports the damage
        return []
    return [name for name in names if name not in allowed]


def refusal(path: str | os.PathLike, names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"{path} holds Python objects that could run code when read ({shown}), not only tensors "
        f"and plain data as lit_rl's own files do: it was not read. If you trust whoever made it, "
        f"load it in your own Python and torch.save its tensors (a state dict) for lit_rl"
    )


def check_loadable(path: str | os.PathLike) -> None:
    """Raise :class:`UntrustedFile` if ``path`` needs more than the restricted unpickler (reads
    only the pickle's opcodes, not the tensors)."""
    names = unsafe_globals(path)
    if names:
        raise UntrustedFile(refusal(path, names))


def safe_load(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool | None = None) -> Any:
    """``torch.load`` that cannot run code (module docstring).

    Raises:
        UntrustedFile: the file names globals outside the allow-list (one-line message).
        Exception: whatever ``torch.load`` raises for a damaged or foreign file.
    """
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        check_loadable(path)
        raise


def first_line(error: BaseException) -> str:
    """An error's first line (torch's loading errors run to a dozen lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip(": ")[:200]
