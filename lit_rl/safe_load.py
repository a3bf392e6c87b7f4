"""The one rule for reading torch files: a file handed in cannot run code when it is read.

``torch.load`` unpickles, and a pickle can call any Python function while it is read (a crafted
``last.ckpt`` can write files or start processes the moment a run resumes from it). Every torch file
lit_rl reads (checkpoints, exported policies, start-state pools, demonstrations, replay and
log-likelihood files) goes through :func:`safe_load`, which reads with ``weights_only=True``:
torch's restricted unpickler, which builds only tensors, plain containers and numbers, plus the
globals allow-listed in :data:`SAFE_GLOBALS` (the non-builtin types lit_rl's own files hold).

A file that names anything else is refused with one line that names what it holds and how to trust
it: ``--trust <path>`` on the command line, or ``LIT_RL_TRUST=<path>[:<path>…]`` in the environment
(what ``--trust`` sets, so DDP ranks and worker processes inherit it). Trust is per file, never
global, and a trusted file is read with the full unpickler.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

#: the environment variable that lists trusted files (``os.pathsep``-separated)
TRUST_VARIABLE = "LIT_RL_TRUST"

#: globals (classes, functions) beyond torch's own weights-only set that lit_rl's files hold. Its
#: checkpoints, exports, pools and buffers hold only tensors, builtin containers and numbers
#: (``lit_rl.cli.plain_numbers`` turns range-checked settings back into ``int``/``float`` for that
#: reason), so the list is empty; a type added here must be plain data with no behaviour on load.
SAFE_GLOBALS: list[Any] = []


class UntrustedFile(ValueError):
    """A file that would need the full unpickler (and could run code) and is not trusted."""


def trusted(path: str | os.PathLike) -> bool:
    """Whether ``path`` is listed in ``LIT_RL_TRUST`` (compared as resolved paths)."""
    listed = [item for item in os.environ.get(TRUST_VARIABLE, "").split(os.pathsep) if item]
    target = Path(path).resolve()
    return any(Path(item).resolve() == target for item in listed)


def trust(paths: list[str]) -> None:
    """Add ``paths`` to ``LIT_RL_TRUST`` of this process and of every process it starts."""
    listed = [item for item in os.environ.get(TRUST_VARIABLE, "").split(os.pathsep) if item]
    resolved = [str(Path(p).resolve()) for p in paths if str(Path(p).resolve()) not in listed]
    os.environ[TRUST_VARIABLE] = os.pathsep.join(listed + resolved)


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
        f"pass --trust {path} (or set {TRUST_VARIABLE}={path})"
    )


def check_loadable(path: str | os.PathLike) -> None:
    """Raise :class:`UntrustedFile` if ``path`` needs more than the restricted unpickler and is
    not trusted (reads only the pickle's opcodes, not the tensors)."""
    if not trusted(path):
        names = unsafe_globals(path)
        if names:
            raise UntrustedFile(refusal(path, names))


def safe_load(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool | None = None) -> Any:
    """``torch.load`` that cannot run code unless ``path`` is trusted (module docstring).

    Raises:
        UntrustedFile: the file names globals outside the allow-list (one-line message).
        Exception: whatever ``torch.load`` raises for a damaged or foreign file.
    """
    if trusted(path):
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
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
