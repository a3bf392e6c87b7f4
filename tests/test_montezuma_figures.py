"""The Montezuma study's table and figure read the run folders (summary.json, metrics.csv)."""

import json

from lit_rl.figures.montezuma import main


def _run(folder, method, seed, far, visits):
    folder.mkdir(parents=True)
    history = [
        {"env_steps": 5120 * i, "far": {"success_rate": v, "episodes": 32}, "close": {"return_mean": 0.0}}
        for i, v in enumerate(far)
    ]
    summary = {"method": method, "seed": seed, "eval_history": history, "pretrained": history[0]}
    (folder / "summary.json").write_text(json.dumps(summary))
    rows = "\n".join(f"{v}" for v in visits)
    (folder / "metrics.csv").write_text(f"train/visit/far\n{rows}\n")


def test_table_gives_lowest_final_and_mean_success_per_method(tmp_path, capsys):
    _run(tmp_path / "montezuma-none-s0", "none", 0, [0.75, 0.25, 0.5], [0.0, 0.5])
    _run(tmp_path / "montezuma-none-s1", "none", 1, [0.75, 0.5, 0.75], [0.0, 0.0])
    _run(tmp_path / "montezuma-bc-s0", "bc", 0, [0.75, 0.75, 0.75], [0.0, 0.0])
    _run(tmp_path / "montezuma-pretrain-s0", "pretrain", 0, [0.0, 0.1], [1.0])
    main(["--runs", *map(str, sorted(tmp_path.glob("montezuma-*"))), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "montezuma_table.md").read_text().splitlines()
    assert table[2] == (
        "| none | 2 | 0.750 ± 0.000 | 0.375 ± 0.125 | 0.625 ± 0.125 | 0.500 ± 0.125 | 0.000 ± 0.000 "
        "| 0.125 ± 0.125 |"
    )
    assert table[3].startswith("| bc | 1 | 0.750 | 0.750 | 0.750 | 0.750 |")
    assert not any("pretrain" in line for line in table)
    assert (tmp_path / "out" / "montezuma_forgetting.png").stat().st_size > 10_000
