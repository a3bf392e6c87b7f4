"""Issue 27, point 5 (bad input): a YAML syntax error, a config file that does not exist and a
``--run_dir`` that cannot be written each end with one line on stderr that names the file (and the
line and column), exit code 2, and nothing written."""

from __future__ import annotations

import pytest

from lit_rl.cli import main
from tests.conftest import APPLE, TRAINER


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-rl: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def stops(*args: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["fit", *APPLE, *TRAINER, *args])
    assert stop.value.code == 2


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("model:\n  init_args:\n    lr: [0.1, 0.2\n    gamma: 0.9\n")
    stops("--config", str(config), "--run_dir", str(tmp_path / "run"))
    line = one_error_line(capsys)
    assert f"{config}:4:10: YAML syntax error" in line and "flow sequence" in line
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    stops("--config", str(missing), "--run_dir", str(tmp_path / "run"))
    assert f"config file {missing} does not exist" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["under a file", "read-only file system"])
def test_a_run_dir_that_cannot_be_written(where, pretrained_apple, tmp_path, capsys):
    if where == "under a file":
        (tmp_path / "a-file").write_text("")
        run_dir = tmp_path / "a-file" / "run"
    else:
        run_dir = "/proc/lit_rl-run"  # procfs takes no new folders, even from root
    stops("--model.pretrained", str(pretrained_apple), "--run_dir", str(run_dir))
    line = one_error_line(capsys)
    assert f"--run_dir {run_dir} cannot be written" in line and "choose a writable --run_dir" in line
