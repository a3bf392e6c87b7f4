"""The docs stay true (issue 28). Over README.md and every docs/*.md that exists:

- every ``make …`` command, in a code block or an inline code span, dry-runs (``make -n``, nothing
  is built: a throwaway VENV whose install stamp is fresh satisfies ``install``). ``METHOD=a|b``
  stands for each of its values; a ``VAR=<placeholder>`` takes a valid value of VAR; a command
  that cannot dry-run is marked ``# example`` (code) or followed by ``(example)`` (inline);
- every ``python -m`` module of the project they name exists, and no setting is named by the flat
  key it had before settings were grouped;
- every ``configs/…``, ``docs/…`` and source path, image and relative link (with its ``#anchor``)
  exists;
- README's table of the METHOD values per ENV is the Makefile's, and its ENVs are the Makefile's;
- every figure in README.md appears in a committed file that its section cites;
- every Make target that can run past ~5 minutes first says what it does, how long it took (and
  where that was measured) and how to continue when stopped.

Markdown is read with regular expressions (fences, code spans, links): the docs use nothing more.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT

FENCE = re.compile(r"^(```|~~~)")
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
# A placeholder's stand-in per variable: a value the Makefile accepts.
PLACEHOLDER_VALUES = {
    "METHOD": "ewc",
    "ENV": "apple",
    "SEED": "0",
    "STEPS": "1000",
    "DEVICES": "2",
    "CKPT": "runs/apple-ewc-s0/checkpoints/last.ckpt",
    "STUDY": "configs/study/nethack_smoke.yaml",
    "TORCH_SPEC": "torch==2.13.0",
    "PYTHON": "python3.11",
    "BENCH_OUT": "reports/bench/results",
}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def split_fences(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(code lines, prose lines), each with its line number."""
    code, prose, inside = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        (code if inside else prose).append((number, line))
    return code, prose


def code_commands(lines: list[tuple[int, str]]) -> list[tuple[int, str, bool]]:
    """`make …` commands in code blocks (continuations joined, `&&`/`;` split), also a comment line
    that is a command (`# srun make …`, an alternative in a job script); (line, command, example)."""
    found, pending, start = [], "", 0
    for number, line in lines:
        if pending:
            line = pending + " " + line.strip()
        else:
            start = number
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1]
            continue
        pending = ""
        body, _, comment = line.partition(" #")
        if line.lstrip().startswith("#"):
            body, comment = line.lstrip()[1:], ""
        example = "example" in comment.lower()
        for part in re.split(r"&&|;", body):
            part = re.sub(r"^\s*(\$\s+)?(srun\s+)?", "", part).strip()
            if re.match(r"make(\s|$)", part):
                found.append((start, part, example))
    return found


def inline_commands(lines: list[tuple[int, str]]) -> list[tuple[int, str, bool]]:
    found = []
    for number, line in lines:
        for match in SPAN.finditer(line):
            text = match.group(1).replace("\\|", "|").strip()
            if re.match(r"(srun\s+)?make\s", text):
                example = line[match.end() :].lstrip().startswith("(example)")
                found.append((number, re.sub(r"^srun\s+", "", text), example))
    return found


def documented_commands() -> list[tuple[str, str, bool]]:
    """(where, command, marked as an example) for every `make …` the docs show."""
    out = []
    for path in doc_files():
        code, prose = split_fences(path.read_text())
        for number, command, example in code_commands(code) + inline_commands(prose):
            out.append((f"{path.relative_to(ROOT)}:{number}", command, example))
    return out


def expand(command: str) -> list[list[str]]:
    """The make invocations a documented command stands for: `[X=…]` optional arguments included,
    `VAR=a|b` once per value, `VAR=<placeholder>` (or `VAR=…`) given a valid value of VAR."""
    command = re.sub(r"\[([A-Z_]+=[^\]]*)\]", r"\1", command)
    command = re.sub(r"\b([A-Z_]+)=…(?=\s|$)", r"\1=<\1>", command).replace("…", "x")
    words = shlex.split(command)
    choices = []
    for word in words:
        name, eq, value = word.partition("=")
        if eq and re.fullmatch(r"[A-Z_]+", name):
            value = re.sub(r"<[^>]*>", PLACEHOLDER_VALUES.get(name, "<unknown>"), value)
            choices.append([f"{name}={v}" for v in value.split("|")])
        else:
            choices.append([word])
    return [list(c) for c in itertools.product(*choices)]


def clean_env() -> dict[str, str]:
    """The environment without an outer make's flags and level (`make test` sets them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k != "MFLAGS"}


def dry_run(args: list[str], venv: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args[1:], f"VENV={venv}"],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A VENV whose install stamp is newer than pyproject.toml: `install` is satisfied, nothing runs."""
    path = tmp_path_factory.mktemp("venv")
    (path / ".installed").touch()
    return path


def test_every_documented_make_command_dry_runs(venv):
    runs = []
    for where, command, example in documented_commands():
        if example:
            continue
        for args in expand(command):
            assert not any("<" in a for a in args), f"{where}: a placeholder make cannot take: {command}"
            runs.append((where, command, args))
    assert len(runs) > 40, "the docs show fewer make commands than they do: is the parser broken?"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: dry_run(r[2], venv), runs))
    failed = [
        f"{where}: `{' '.join(args)}` (from `{command}`): {result.stderr.strip().splitlines()[-1:]}"
        for (where, command, args), result in zip(runs, results)
        if result.returncode != 0
    ]
    assert not failed, "documented commands that do not dry-run:\n" + "\n".join(failed)


def test_examples_are_marked_and_alternatives_expand():
    """The markers and notations the docs may use, read as the check above reads them."""
    code = [(1, "make finetune METHOD=<m> LR=<x>   # example: not a real variable"), (2, "make test")]
    assert code_commands(code) == [(1, "make finetune METHOD=<m> LR=<x>", True), (2, "make test", False)]
    prose = [(3, "run `make eval CKPT=<c>` (example) or `make finetune ENV=robotic METHOD=l2\\|em`")]
    assert [c[2] for c in inline_commands(prose)] == [True, False]
    command = inline_commands(prose)[1][1]
    assert expand(command) == [["make", "finetune", "ENV=robotic", f"METHOD={m}"] for m in ("l2", "em")]


@pytest.mark.parametrize(
    "command",
    [
        "make finetune ENV=robotic METHOD=ks",  # SAC offers no kickstarting
        "make finetune ENV=nethack_study",  # the study's preset, not an ENV
        "make study ENV=apple",
        "make eval",  # no CKPT
        "make finetune-all",  # no such target
    ],
)
def test_the_dry_run_catches_a_broken_command(command, venv):
    """The check above is only as good as `make -n` failing on what a user's run would refuse."""
    result = dry_run(expand(command)[0], venv)
    assert result.returncode != 0, result.stdout[-500:]


@pytest.mark.parametrize(
    "command",
    [
        "make finetune ENV=robotic METHOD=bc",
        "make finetune ENV=montezuma METHOD=bc",
        "make finetune ENV=nethack_paper METHOD=ks",
        "make pretrain ENV=robotic",
        "make montezuma-demo",
        "make montezuma-pistar",
        "make study ENV=nethack",
        "make apple-figures",
        "make bench",
        "make soak",
        "make test",
        "make nethack-pretrain",
        "make data ENV=nethack FAR_COUNT=200",
    ],
)
def test_long_targets_say_what_they_do_how_long_and_how_to_resume(command, venv):
    """Targets that can run past ~5 minutes print, before anything runs, one notice: what they do,
    a measured duration with the doc it comes from, and what to do when stopped."""
    args = expand(command)[0]
    first = dry_run(args, venv).stdout.splitlines()[0]
    assert first.startswith(f"make {args[1]}"), first
    assert re.search(r"\d+(\.\d+)? ?(s|min|h)\b|days", first), first
    cited = re.findall(r"(?:docs|bench)/[\w.]+\.md|README", first)
    assert cited and all(c == "README" or (ROOT / c).is_file() for c in cited), first
    assert "Stopped?" in first or "rerun" in first, first


def line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def test_no_doc_names_a_setting_by_its_old_flat_key():
    """Settings are grouped by concern; an old flat key (`--model.budget_frames`) fails in one
    line, so a doc that still shows one shows a command that fails. Quoting that error is fine."""
    from lit_rl.training.settings import MOVED_KEYS

    moved = {k: v for kind in MOVED_KEYS.values() for k, v in kind.items() if v.split(".")[0] != k}
    flat = re.compile(r"(?<![\w.])(?:--)?model\.(?:init_args\.)?([a-z_]+)\b(?!\.)(?!`?\s+moved\s+to)")
    stale = []
    for path in doc_files():
        text = path.read_text()
        stale += [
            f"{path.relative_to(ROOT)}:{line_of(text, m.start())}: {m.group(0)}"
            f" (now model.{moved[m.group(1)]})"
            for m in flat.finditer(text)
            if m.group(1) in moved
        ]
    assert not stale, "\n".join(stale)


def test_python_modules_named_in_the_docs_exist():
    missing = []
    for path in doc_files():
        for match in re.finditer(r"python -m ((?:lit_rl|bench)(?:\.\w+)*)", path.read_text()):
            parts = match.group(1).split(".")
            module = ROOT.joinpath(*parts)
            if not (module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()):
                missing.append(f"{path.relative_to(ROOT)}: python -m {match.group(1)}")
    assert not missing, "\n".join(missing)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lstrip("#").strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = split_fences(path.read_text())
    return {slug(line) for _, line in prose if line.startswith("#")}


#: a Gymnasium env id in lit_rl's namespace (``lit_rl/AppleRetrieval-v0``) names no file
GYMNASIUM_ID = re.compile(r"lit_rl/[A-Za-z][\w-]*-v\d+")


def named_paths(path: Path) -> list[str]:
    """configs/…, docs/… and source paths (brace lists expanded; patterns with <…> left out;
    Gymnasium env ids skipped)."""
    out = []
    for match in re.finditer(
        r"(?<![\w./-])((?:configs|docs|lit_rl|bench|tests|callbacks)/[\w./{},*<>+-]*[\w}*])", path.read_text()
    ):
        name = match.group(1)
        if "<" in name or GYMNASIUM_ID.fullmatch(name):
            continue
        brace = re.search(r"\{([^}]*)\}", name)
        options = brace.group(1).split(",") if brace else [""]
        out += [name[: brace.start()] + o + name[brace.end() :] if brace else name for o in options]
    return out


def test_named_paths_images_and_links_exist():
    missing = []
    for path in doc_files():
        where = path.relative_to(ROOT)
        for name in named_paths(path):
            # a glob matches something; an output stem (`--out bench/results`) has its files
            if not any(ROOT.glob(name)) and not any(ROOT.glob(name + ".*")):
                missing.append(f"{where}: {name}")
        _, prose = split_fences(path.read_text())
        text = "\n".join(line for _, line in prose)
        for match in LINK.finditer(SPAN.sub("", text)):
            target = match.group(2)
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file) if file else path
            if not linked.exists():
                missing.append(f"{where}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                missing.append(f"{where}: {target} (no such heading)")
    assert not missing, "named in the docs, missing:\n" + "\n".join(missing)


def make_help(env: str) -> tuple[set[str], set[str]]:
    """(METHOD values, ENV values) as `make help ENV=env` lists them."""
    out = subprocess.run(
        ["make", "-s", "help", f"ENV={env}"], cwd=ROOT, env=clean_env(), capture_output=True, text=True
    )
    methods = re.search(r"METHOD=\S+ \(one of: ([^;]*);", out.stdout)
    envs = re.search(r"ENV=\S+ \(one of: ([^)]*)\)", out.stdout)
    return set(methods.group(1).split()), set(envs.group(1).split())


def readme_method_table() -> dict[str, set[str]]:
    """The rows under README's `| `ENV` | `METHOD` |` header."""
    lines = (ROOT / "README.md").read_text().splitlines()
    header = "| `ENV` | `METHOD` |"
    assert header in lines, f"README.md has no table under {header!r}"
    start = lines.index(header) + 2
    rows = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    cells = [re.match(r"\| `(\w+)` \| `([\w ]+)`", row) for row in rows]
    return {m.group(1): set(m.group(2).split()) for m in cells}


def test_readme_method_table_is_the_makefiles():
    table = readme_method_table()
    _, envs = make_help("apple")
    assert set(table) == envs
    for env, methods in table.items():
        assert methods == make_help(env)[0], env


NOT_FIGURES = [
    r"\b(?:ICML|NeurIPS|ICLR)\s+\d{4}",  # a citation's year
    r"\b[0-9a-f]*[a-f][0-9a-f]*\b",  # commit ids (a letter among hex digits; plain numbers stay)
    r"\b\d+\.\d+\.\d+\b",  # versions (torch 2.13.0)
    r"\b(?:issue|Issue|§|Figs?\.|Figures?)\s*\d+(?:\s*[–-]\s*\d+)?",
]
NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")


def normal(number: str) -> str:
    return number.replace(",", "")


def readme_sections() -> list[tuple[str, str]]:
    """(heading, prose with code spans and link targets removed, cited text) per README section."""
    _, prose = split_fences((ROOT / "README.md").read_text())
    sections, heading, lines = [], "(top)", []
    for _, line in prose:
        if line.startswith("#"):
            sections.append((heading, lines))
            heading, lines = line.strip("# "), []
        else:
            lines.append(line)
    sections.append((heading, lines))
    return [(h, "\n".join(ls)) for h, ls in sections]


def cited_files(text: str) -> list[Path]:
    """Committed files a section cites: link targets and code spans naming a file of the repository."""
    names = [m.group(2).partition("#")[0] for m in LINK.finditer(text)] + SPAN.findall(text)
    files = {ROOT / n for n in names if re.fullmatch(r"[\w./-]+\.(md|json|csv|yaml|toml)", n)}
    return sorted(f for f in files if f.is_file())


def cited_commit_messages(text: str) -> dict[str, str | None]:
    """The message of each commit a section names (`commit 1a2b3c4`), None when this clone lacks
    it: where a measurement that lives in no file (the test suite's duration) was recorded."""
    messages = {}
    for sha in re.findall(r"\bcommit ([0-9a-f]{7,40})\b", text):
        shown = subprocess.run(
            ["git", "show", "-s", "--format=%B", sha], cwd=ROOT, capture_output=True, text=True
        )
        messages[sha] = shown.stdout if shown.returncode == 0 else None
    return messages


def shallow_clone() -> bool:
    shown = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True
    )
    return shown.stdout.strip() == "true"


def figures(text: str) -> set[str]:
    text = LINK.sub(lambda m: m.group(1), SPAN.sub(" ", text))
    for pattern in NOT_FIGURES:
        text = re.sub(pattern, " ", text)
    return {normal(n) for n in NUMBER.findall(text) if "." in n or int(normal(n)) >= 10}


def test_every_readme_figure_is_in_a_file_its_section_cites():
    problems = []
    for heading, text in readme_sections():
        wanted = figures(text)
        sources = cited_files(text)
        commits = cited_commit_messages(text)
        corpus = "\n".join(normal(t) for t in [*(p.read_text() for p in sources), *commits.values()] if t)
        absent = sorted(n for n in wanted if not re.search(rf"(?<![\d.]){re.escape(n)}(?!\.?\d)", corpus))
        if absent and None in commits.values() and shallow_clone():
            warnings.warn(
                f"## {heading}: {absent} cite commits a shallow clone lacks: not checked", stacklevel=1
            )
        elif absent:
            names = [str(p.relative_to(ROOT)) for p in sources]
            names += [
                f"commit {sha}" + ("" if message else " (not in this clone)")
                for sha, message in commits.items()
            ]
            cited = ", ".join(names) or "nothing"
            problems.append(f"## {heading}: {', '.join(absent)} not in what it cites ({cited})")
    assert not problems, "README figures without a source:\n" + "\n".join(problems)
