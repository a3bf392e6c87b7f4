"""π*'s own evaluation, computed once and reused by every run that starts from the same π*.

Every fine-tuning run evaluates its start point before the first update (the frame-0 point of its
CLOSE/FAR curves). When runs share π* and the evaluator settings — the methods and seeds of a
study, a repeated ``make finetune`` — that evaluation is the same computation with the same
result, so the first run stores it beside π* (``<π*>.evaluations.json``) and the others read it.

An entry is keyed by everything the numbers depend on: π*'s file (SHA-256), the weights actually
evaluated (SHA-256 of the actor's state, so a run whose start point differs from the file
recomputes), the evaluator's settings, the scenario (``describe()``, its builtin-valued settings
and the content of every file they name, e.g. FAR's start states), torch's version and thread
count, and the device. A changed π* or setting is another key and is computed afresh; entries for
other settings stay. The file is JSON (read with ``json``, never unpickled), written atomically,
and read-modify-written under an exclusive ``flock``: two runs that start together evaluate π*
once, the second waiting for the first's result instead of computing it again. An unreadable file
is ignored (and rewritten with the new entry).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from lit_rl.evaluation import SubspaceEvaluator

FORMAT = "lit_rl.pistar_evaluations/1"
#: the scenario settings that enter the key: builtin values (strings naming files add the file's hash)
_BUILTIN = (str, int, float, bool, type(None))


def cache_path(pistar: str | os.PathLike) -> Path:
    """``pretrained/nethack.pt`` → ``pretrained/nethack.pt.evaluations.json``."""
    pistar = Path(pistar)
    return pistar.with_name(pistar.name + ".evaluations.json")


class PiStarEvaluations:
    """The cached evaluations of one π* file by one actor, evaluator and scenario.

    Args:
        pistar: π*'s file (the run's ``pretrained``).
        scenario, evaluator: what the run evaluates with.
        actor: the module evaluated, holding π*'s weights.
    """

    def __init__(self, pistar: str | os.PathLike, scenario, evaluator: SubspaceEvaluator, actor: nn.Module):
        self.path = cache_path(pistar)
        device = next((p.device.type for p in actor.parameters()), "cpu")
        key = {
            "pistar_sha256": file_digest(Path(pistar)),
            "weights_sha256": weights_digest(actor),
            "evaluator": {
                "episodes": evaluator.episodes,
                "seed": evaluator.seed,
                "exploration": str(evaluator.exploration),
            },
            "scenario": scenario_identity(scenario),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": device,
        }
        self.key = json.loads(json.dumps(key))  # as stored: tuples become lists
        self.digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()

    def get(self) -> dict | None:
        """The cached metrics per subspace, or ``None``."""
        entry = self._read().get(self.digest)
        return entry["metrics"] if entry and entry.get("key") == self.key else None

    def put(self, metrics: dict) -> None:
        entries = self._read()
        entries[self.digest] = {"key": self.key, "metrics": metrics}
        _atomic_write_json(self.path, {"format": FORMAT, "entries": entries})

    def evaluate(self, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """The cached metrics, else ``compute()``'s, stored; under the file's lock, so concurrent
        runs compute once. Returns ``(metrics, reused)``. Where π*'s folder is not writable the
        evaluation is made and not stored (a warning says so)."""
        with self.locked() as held:
            cached = self.get()
            if cached is not None:
                return cached, True
            metrics = compute()
            if held:
                try:
                    self.put(metrics)
                except OSError as error:
                    warnings.warn(f"π*'s evaluation not cached at {self.path}: {error}", stacklevel=2)
            return metrics, False

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """Holds the cache's exclusive lock; yields whether it could (False: π*'s folder is read-only)."""
        try:
            lock = open(self.path.with_name(self.path.name + ".lock"), "a")  # noqa: SIM115 (closed below)
        except OSError as error:
            warnings.warn(f"π*'s evaluation not cached beside {self.path.parent}: {error}", stacklevel=3)
            yield False
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            payload = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            return {}
        entries = payload.get("entries")
        return entries if isinstance(entries, dict) else {}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's parameters and buffers."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        digest.update(f"{name}:{tensor.dtype}:{tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def scenario_identity(scenario) -> dict:
    """``describe()`` plus the scenario's settings held as builtin values (lists and dicts of them
    too), each string naming a file followed by that file's SHA-256."""
    settings = {}
    for name, value in sorted(vars(scenario).items()):
        plain = _plain(value)
        if not name.startswith("_") and plain is not None:
            settings[name] = plain
    return {"describe": scenario.describe(), "settings": settings}


def _plain(value):
    """A JSON value for builtin settings (files named by a string get their hash), else None."""
    if isinstance(value, str) and Path(value).is_file():
        return {"file": value, "sha256": file_digest(Path(value))}
    if isinstance(value, _BUILTIN):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return items if all(items[k] is not None or value[k] is None for k in value) else None
    return None


def _atomic_write_json(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
