"""``lit-rl``: the one Lightning CLI over ``configs/`` (omegaconf mode, so ``${…}`` interpolation works).

The model is any LightningModule named by ``model.class_path``: ``PPOFineTuning``, its PPO + RND
subclass (Montezuma), or NetHack's behavioural-cloning pre-training. Configs are overlaid in the
order given: ``--config configs/base.yaml --config configs/env/apple.yaml --config
configs/method/apple/ewc.yaml …``. Each ``fit`` gets its own run folder named by ``run_name``
(default ``<preset>-<methods>-s<seed>``) under ``runs/`` unless ``--run_dir`` says otherwise, holding
``config.yaml``, ``checkpoints/``, ``metrics.csv`` and ``summary.json``. Mistakes end with one line
on stderr and exit code 2: a misspelled or mistyped setting, a config file that is missing or not
valid YAML (file, line and column), a ``--run_dir`` that cannot be written, a checkpoint or policy
that could run code when read (never read: lit_rl/safe_load.py).
"""

from __future__ import annotations

import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import yaml
from jsonargparse import Namespace
from lightning import LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_rl.safe_load import check_loadable, first_line
from lit_rl.training.rank_faults import reported
from lit_rl.training.run_identity import default_run_name
from lit_rl.training.settings import MOVED_KEYS

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, TypeError, KeyError)


class RunConfigSaver(SaveConfigCallback):
    """Writes the resolved config to ``<run folder>/config.yaml`` (overwritten on resume)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)


class OneLineErrorParser(LightningArgumentParser):
    """Reports a config mistake (typo, wrong type) as one line instead of the full usage text."""

    def error(self, message: str, ex: Exception | None = None):
        print(f"lit-rl: error: {condense(message)}", file=sys.stderr)
        raise SystemExit(2)


#: what each restricted type of a setting accepts, in the words of the one-line error
ACCEPTS = {
    "PositiveInt": "an integer > 0",
    "NonNegativeInt": "an integer >= 0",
    "PositiveFloat": "a number > 0",
    "NonNegativeFloat": "a number >= 0",
    "ClosedUnitInterval": "a number in [0, 1]",
    "OpenUnitInterval": "a number in (0, 1)",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
}


def condense(message: str) -> str:
    """A parser message on one line: for a setting of the wrong type or range, the setting, the
    value given and what it accepts; otherwise the first line plus its most specific cause."""
    lines = [line.strip(" -") for line in str(message).splitlines() if line.strip(" -")]
    if not lines:
        return "invalid arguments"
    typed = _typed_value_error(str(message))
    if typed:
        return typed
    causes = [line for line in lines[1:] if "not accepted" in line or "does not accept" in line]
    head = lines[0].rstrip(":")
    return f"{head}: {causes[0]}" if causes and causes[0] not in head else head


def _typed_value_error(message: str) -> str | None:
    key = re.match(r'Parser key "([^"]+)"', message)
    choice = re.search(r"Expected a typing\.Literal\[(.*?)\]\. Got value: (.*)", message)
    if key and choice:
        options = ", ".join(o.strip(" '\"") for o in choice.group(1).split(","))
        return f"{key.group(1)} = {choice.group(2).strip()} is not accepted: expected one of {options}"
    kind = re.search(r"Not of type (\w+): (.*)", message)
    if not key or not kind:
        return None
    given = re.search(r"Given value: (.*)", message)
    value = given.group(1) if given else re.sub(r" does not conform.*|.*: ", "", kind.group(2))
    accepts = ACCEPTS.get(kind.group(1), kind.group(1))
    optional = " (or null)" if "NoneType" in message else ""
    return f"{key.group(1)} = {value.strip()!s} is not accepted: expected {accepts}{optional}"


class LitRLCLI(LightningCLI):
    """LightningCLI with run folders, the seed linked into the model and one-line errors."""

    def __init__(self, args=None):
        super().__init__(
            LightningModule,
            subclass_mode_model=True,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf", "default_env": False},
            seed_everything_default=0,
            parser_class=OneLineErrorParser,
            auto_configure_optimizers=False,
            args=args,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--preset", type=str | None, default=None, help="env preset (set by configs/env/<preset>.yaml)"
        )
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="run folder name (default <preset>-<methods>-s<seed>)",
        )
        parser.add_argument(
            "--run_dir", type=str | None, default=None, help="run folder (default runs/<run_name>)"
        )
        parser.add_argument(
            "--torch_threads",
            type=int | None,
            default=1,
            help="intra-op threads per process; small policies run fastest on one (null: torch's)",
        )
        parser.link_arguments("seed_everything", "model.init_args.seed")

    def _parse_ckpt_path(self) -> None:
        """Lightning reads a ``--ckpt_path`` file's hyper-parameters here, before anything else
        reads it: a file that could run code or is damaged is refused in one line instead of
        torch's multi-line error."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        path = config.get("ckpt_path")
        if not path or not Path(path).is_file():
            return
        check_loadable(path)
        try:
            super()._parse_ckpt_path()
        except (RuntimeError, EOFError, OSError, AttributeError) as error:
            raise ValueError(f"checkpoint {path} is not readable ({first_line(error)})") from None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        plain_numbers(config)
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        if self.subcommand == "fit":
            place_run(config)
            resume_from_readable_checkpoint(config)
        elif self.subcommand in ("validate", "test"):
            place_evaluation(config)


def plain_numbers(node) -> None:
    """Range-checked settings parse as ``int``/``float`` subclasses (``PositiveInt``, …); turn them
    back into plain numbers in place, so checkpoints and policy exports hold only builtin types
    (``torch.load(weights_only=True)`` refuses other classes)."""
    items = node.items() if isinstance(node, Namespace) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and type(value) not in (int, float):
            node[key] = int(value) if isinstance(value, int) else float(value)
        elif isinstance(value, Namespace | list):
            plain_numbers(value)


def place_run(config: Namespace) -> None:
    """Point the trainer, its loggers and checkpoints at one run folder; never reuse one silently."""
    if not config.preset:
        raise ValueError("preset is not set: overlay an env preset (--config configs/env/<preset>.yaml)")
    model = config.model.init_args
    retention = [method.class_path for method in (model.get("retention") or [])]
    config.run_name = config.run_name or default_run_name(
        config.preset,
        retention,
        config.seed_everything,
        pretrained=model.get("pretrained") is not None,
        teacher=model.get("teacher") is not None,
    )
    run_dir = Path(config.run_dir or f"runs/{config.run_name}")
    check_writable(run_dir)
    resuming = config.get("ckpt_path") is not None
    # any output of an earlier fit (summary, metrics, checkpoints) marks the folder as taken; an
    # evaluation's eval/ folder does not
    if not resuming and run_dir.is_dir() and any(p.name != "eval" for p in run_dir.iterdir()):
        raise FileExistsError(
            f"run folder {run_dir} already holds a run: resume it with RESUME=1 "
            "(--ckpt_path last), or choose another SEED / --run_dir, or delete the folder"
        )
    config.run_dir = str(run_dir)
    trainer = config.trainer
    _write_into(trainer, run_dir)
    for callback in _as_list(trainer.callbacks):
        if callback.class_path.endswith("ModelCheckpoint") and not callback.init_args.dirpath:
            callback.init_args.dirpath = str(run_dir / "checkpoints")
        if callback.class_path.endswith("RunSummary"):
            callback.init_args.preset = config.preset


def check_writable(folder: Path) -> None:
    """Fail before anything is written when ``folder`` cannot be created or written: it is created
    and a probe file written and removed in it, then the folders this made are removed again (the
    run makes them when it writes; a run refused later leaves nothing behind)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(
            f"--run_dir {folder} cannot be written ({error.strerror or error}): choose a writable --run_dir"
        ) from None
    finally:
        for made in missing:  # deepest first
            if made.is_dir():
                made.rmdir()


def resume_from_readable_checkpoint(config: Namespace) -> None:
    """``--ckpt_path last`` (``RESUME=1``) → the run's newest readable checkpoint: a damaged
    ``last.ckpt`` falls back to ``last.prev.ckpt`` with a one-line warning; none readable stops
    with one line (exit 2). Resolved before fit, as Lightning's own ``"last"`` takes the newest
    file by modification time without reading it (lit_rl/checkpoint_io.py)."""
    from lit_rl.checkpoint_io import resume_checkpoint

    if config.get("ckpt_path") == "last":
        found = resume_checkpoint(Path(config.run_dir) / "checkpoints")
        config.ckpt_path = None if found is None else str(found)


def place_evaluation(config: Namespace) -> None:
    """``validate`` / ``test`` log into ``<run>/eval/`` when the checkpoint lies in a run's
    ``checkpoints/`` (whatever ``run_dir`` the run's own config.yaml holds), else into ``--run_dir``
    or ``runs/eval``: evaluating several runs never overwrites one shared ``metrics.csv``."""
    checkpoint = Path(config.get("ckpt_path") or "")
    if checkpoint.parent.name == "checkpoints":
        out = checkpoint.parent.parent / "eval"
    else:
        out = Path(config.run_dir or "runs/eval")
    config.run_dir = str(out)
    _write_into(config.trainer, out)


def _write_into(trainer: Namespace, folder: Path) -> None:
    """Trainer outputs and every file logger go to ``folder``; a tracker's unset ``run_name``
    (MLflow) becomes the run folder's name (``<run>-eval`` for an evaluation)."""
    trainer.default_root_dir = str(folder)
    name = f"{folder.parent.name}-eval" if folder.name == "eval" else folder.name
    for logger in _as_list(trainer.logger):
        init_args = logger.get("init_args", {})
        if "save_dir" in init_args:
            logger.init_args.save_dir = str(folder)
        if "run_name" in init_args and init_args.get("run_name") is None:
            logger.init_args.run_name = name


def _as_list(value) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


#: the trainers whose flat keys moved into groups, by the module their class path names
TRAINER_KINDS = {"lit_rl.training.ppo.": "ppo", "lit_rl.training.rnd.": "ppo", "lit_rl.training.sac.": "sac"}


def moved_setting(argv: list[str]) -> str | None:
    """The first old flat ``model.<key>`` in the given configs or arguments, as a one-line error
    naming its new place (settings are grouped by concern, ``lit_rl.training.settings``)."""
    configs = [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    kind, found = "ppo", []
    for path in configs:
        model = _read_yaml(path).get("model") if path.is_file() else None
        if not isinstance(model, dict):
            continue
        kind = next(
            (k for prefix, k in TRAINER_KINDS.items() if prefix in str(model.get("class_path"))), kind
        )
        if model.get("class_path") and not any(p in str(model["class_path"]) for p in TRAINER_KINDS):
            kind = None  # another LightningModule (e.g. behavioural cloning): its own keys
        args = model.get("init_args") if isinstance(model.get("init_args"), dict) else model
        found += [(f"{path}: model.{key}", key, value) for key, value in args.items()]
    for i, arg in enumerate(argv):
        key = re.match(r"--model\.(?:init_args\.)?([a-z_]+)(?:=(.*))?$", arg)
        if key:
            value = key.group(2) if key.group(2) is not None else (argv[i + 1] if i + 1 < len(argv) else "")
            found.append((f"--model.{key.group(1)}", key.group(1), value))
    moved = MOVED_KEYS.get(kind or "", {})
    for where, key, value in found:
        new = moved.get(key)
        if new and not (new.split(".")[0] == key and isinstance(value, dict)):
            return f"{where} moved to model.{new} (settings are grouped by concern; see README, Configs)"
    return None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}  # the parser reports it
    return data if isinstance(data, dict) else {}


def check_config_files(args: list[str]) -> None:
    """Every ``--config`` file exists and is valid YAML, else one line (file, line and column of a
    syntax error) and exit 2. The parser reports neither the file nor the place, as it parses
    each file's text."""
    paths = [b for a, b in zip(args, args[1:], strict=False) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        if not Path(path).is_file():
            print(f"lit-rl: error: config file {path} does not exist (--config {path})", file=sys.stderr)
            raise SystemExit(2)
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            print(f"lit-rl: error: {yaml_error_line(path, error)}", file=sys.stderr)
            raise SystemExit(2) from None


def yaml_error_line(path: str, error: yaml.YAMLError) -> str:
    """``file:line:column: problem (context)``, 1-based as editors count."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    problem = getattr(error, "problem", None) or first_line(error)
    context = getattr(error, "context", None)
    return f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")


def main(args: list[str] | None = None) -> None:
    """Console entry point; turns user mistakes into one line on stderr and exit code 2."""
    # Lightning warns that manual optimisation checkpoints hold post-step weights; that is what a
    # resumed run needs (the frame counter counts the batch already learned from).
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    if args is not None:
        # LightningCLI warns when it gets both; a command line is re-read by DDP's child
        # processes, so it is dropped only when the arguments come from Python
        sys.argv = sys.argv[:1]
    check_config_files(sys.argv[1:] if args is None else args)
    moved = moved_setting(list(args) if args is not None else sys.argv[1:])
    if moved:
        print(f"lit-rl: error: {moved}", file=sys.stderr)
        raise SystemExit(2)
    try:
        cli = LitRLCLI(args=args)
    except BaseException as error:
        if reported():  # a DDP rank failed and said so in one line (lit_rl.training.rank_faults)
            raise SystemExit(1) from None
        if not isinstance(error, USER_ERRORS):
            raise
        # subclass mode wraps a model constructor's error in a union-validation error
        while isinstance(error.__cause__, USER_ERRORS):
            error = error.__cause__
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"lit-rl: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if cli.subcommand == "fit" and cli.trainer.is_global_zero:
        summary = Path(cli.config.fit.run_dir) / "summary.json"
        where = summary if summary.is_file() else summary.parent  # BC pre-training writes no summary
        print(f"results: {where}  (compare runs: make report)")


if __name__ == "__main__":
    main()
