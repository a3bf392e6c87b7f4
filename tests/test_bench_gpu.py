"""`python -m bench.gpu` (`make bench-gpu`): its CPU side — arguments, the paper preset's settings,
the JSON report, the one-line exit without CUDA — and its training-and-timing loop run on the CPU
at a tiny size (the same code the GPU run uses, less the CUDA calls)."""

import json

import pytest
import torch

from bench import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the GPU run would start")
def test_without_cuda_it_says_so_in_one_line_and_exits_2(capsys):
    assert gpu.main(["--frames", "1024"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "no CUDA device" in captured.err


def test_arguments_and_bad_values(capsys):
    args = gpu.parse([])
    assert args.frames == 16 * 512 * 32 and args.method == "none" and args.device == 0 and args.out is None
    for bad in (["--frames", "0"], ["--device", "-1"], ["--method", "ewc"]):
        with pytest.raises(SystemExit) as stop:
            gpu.parse(bad)
        assert stop.value.code == 2 and bad[0] in capsys.readouterr().err


def test_the_paper_presets_collection_and_optimisation_are_used():
    settings = gpu.run_settings(gpu.preset_model(), 4096)
    assert settings["scenario"]["size"] == "paper"
    assert settings["collection"]["num_envs"] == 512 and settings["collection"]["rollout_length"] == 32
    assert (
        settings["optimisation"]["minibatch_size"] == 4096
        and settings["optimisation"]["weight_decay"] == 1e-4
    )
    assert settings["loss"]["value_clip"] == 1.0 and settings["frames"] == 4096


def test_the_report_from_marks():
    marks = [
        (10.0, 1000, {"learner": 1.0, "collector": 2.0}),
        (20.0, 5000, {"learner": 5.0, "collector": 6.0}),
    ]
    memory = {"peak_allocated": 100.0, "peak_reserved": 120.0, "total": 80_000.0, "device": "x"}
    report = gpu.summarise({"frames": 5000}, marks, memory, [50.0, 70.0])
    assert report["frames_per_s"] == pytest.approx(400.0) and report["timed_frames"] == 4000
    assert report["shares"] == pytest.approx({"learner": 0.4, "collector": 0.4, "other": 0.2})
    assert report["gpu_utilisation_percent"] == {"mean": 60.0, "max": 70.0, "samples": 2}
    unsampled = gpu.summarise({}, marks, memory, "torch.cuda.utilization unavailable: no pynvml")
    assert (
        unsampled["gpu_utilisation_percent"]["mean"] is None
        and "pynvml" in unsampled["gpu_utilisation_percent"]["reason"]
    )
    json.dumps(report)


def test_the_timed_training_loop_runs_at_a_tiny_size_on_the_cpu():
    settings = gpu.run_settings(gpu.preset_model(), 192)
    settings["scenario"] = {"size": "tiny", "max_episode_steps": 50}
    settings["collection"].update(num_envs=4, rollout_length=16)
    settings["optimisation"]["minibatch_size"] = 64
    torch.set_num_threads(1)
    marks = gpu.train_and_time(settings, "ks", "cpu", 0)
    assert [frames for _, frames, _ in marks] == [64, 128, 192]
    report = gpu.summarise(settings, marks, {}, [])
    assert 0 < report["shares"]["learner"] < 1 and 0 < report["shares"]["collector"] < 1
    assert report["frames_per_s"] > 0
