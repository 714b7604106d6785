"""Configuration files and presets, and the `azr` command line as users run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from azr.config import PRESETS, SelfPlayConfig, load_config
from azr.plot import trailing_mean

AZR = shutil.which("azr") or str(Path(sys.executable).with_name("azr"))


def test_defaults_are_the_papers() -> None:
    config = SelfPlayConfig()
    assert (config.batch_size, config.references, config.learnability_samples, config.induction_inputs) == (
        64,
        6,
        8,
        10,
    )
    assert (config.lr, config.grad_clip, config.clip_low, config.entropy_coef, config.kl_coef) == (
        1e-6,
        1.0,
        0.2,
        0.001,
        0.0,
    )
    assert config.extreme_proposer_reward == 0.0 and config.temperature == 1.0


def test_precedence_preset_file_overrides(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("batch_size: 3\nlr: 2.0e-6\ngradient_checkpointing: true\n")
    (tmp_path / "run.toml").write_text('batch_size = 5\nexecutor_mode = "batch"\n')
    (tmp_path / "run.json").write_text(json.dumps({"steps": 7}))
    config = load_config("smoke", tmp_path / "run.yaml", ["lr=3e-6"])
    assert (config.batch_size, config.lr, config.gradient_checkpointing) == (3, 3e-6, True)
    assert config.references == PRESETS["smoke"]["references"]
    assert load_config(None, tmp_path / "run.toml").executor_mode == "batch"
    assert load_config(None, tmp_path / "run.json").steps == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["nonsense=1"], "unknown setting 'nonsense'"),
        (["steps=abc"], "steps must be a number"),
        (["steps=2.5"], "steps must be a whole number"),
        (["batch_size=0"], "batch_size must be positive"),
        (["gradient_checkpointing=maybe"], "must be true or false"),
        (["executor_mode=fast"], "executor_mode must be one of"),
        (["buffer_eviction=lifo"], "buffer_eviction must be one of"),
        (["induction_inputs=1"], "at least 2"),
        # A proposer's reward is 1 − the solve rate of these samples: none would divide by zero.
        (["learnability_samples=0"], "learnability_samples must be positive"),
        (["steps"], "must look like name=value"),
        (["rollout_tensor_parallel=0"], "rollout_tensor_parallel must be positive"),
        (["rollout_tensor_parallel=2", "rollout_engine=hf"], "the HF engine runs on one"),
    ],
)
def test_bad_settings_are_refused_clearly(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, None, overrides)


def test_bad_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(None, tmp_path / "missing.yaml")
    (tmp_path / "run.ini").write_text("x=1")
    with pytest.raises(ValueError, match=r"must end in \.yaml"):
        load_config(None, tmp_path / "run.ini")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(None, tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")


def azr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AZR, *args], capture_output=True, text=True, timeout=900)


def test_selfplay_command_runs_resumes_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    tiny = ["--preset", "smoke", "--set", "model=tiny-qwen2", "--set", "max_response_tokens=16", "--quiet"]
    tiny += ["--set", "guided_format=false"]
    first = azr("selfplay", *tiny, "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "step 1/1" in first.stderr
    again = azr("selfplay", *tiny, "--out", str(out))
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = azr("selfplay", *tiny, "--out", str(out), "--resume", "--steps", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr and "step 2/2" in resumed.stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1.0, 2.0]
    proposals = [json.loads(line) for line in (out / "proposals.jsonl").read_text().splitlines()]
    assert {p["task"] for p in proposals} == {"deduction", "abduction", "induction"}
    plotted = azr("plot", str(out))
    assert plotted.returncode == 0, plotted.stderr
    pngs = {Path(line).name for line in plotted.stdout.split()}
    assert {"rewards.png", "seconds.png", "training.png"} <= pngs
    assert all((out / "plots" / name).stat().st_size > 1000 for name in pngs)
    compared = azr("plot", "--compare", str(out), str(out), "--out", str(tmp_path / "compare.png"))
    assert compared.returncode == 0, compared.stderr
    assert (tmp_path / "compare.png").stat().st_size > 1000
    smoothed = azr("plot", "--compare", str(out), str(out), "--smooth", "0", "--out", str(tmp_path / "s.png"))
    assert smoothed.returncode == 2 and "window must be at least 1" in smoothed.stderr
    alone = azr("plot", "--compare", str(out))
    assert alone.returncode == 2 and "at least two run directories" in alone.stderr


def test_command_line_errors_are_clear(tmp_path: Path) -> None:
    result = azr("selfplay", "--set", "nonsense=1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "unknown setting 'nonsense'" in result.stderr
    result = azr("selfplay", "--preset", "smoke", "--set", "max_response_tokens=60", "--out", str(tmp_path / "g"))
    assert result.returncode == 2 and "needs at least 104 tokens; max_response_tokens is 60" in result.stderr
    result = azr("selfplay", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "y"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = azr("selfplay", "--resume", "--out", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no checkpoint to resume from" in result.stderr
    result = azr("plot", str(tmp_path))
    assert result.returncode == 2 and "metrics.jsonl does not exist" in result.stderr
    help_text = azr("selfplay", "--help").stdout
    for flag in ("--preset", "--config", "--model", "--steps", "--out", "--resume", "--set"):
        assert flag in help_text


def test_dry_run_plans_the_paper_preset() -> None:
    """The paper's 7B run fits on 4 × 80 GB and not on one, and the refusal says what to change."""
    four = azr("selfplay", "--preset", "paper", "--set", "trainer_workers=4", "--dry-run")
    assert four.returncode == 0, four.stderr
    assert "7.62 B parameters" in four.stdout and "4 trainer worker(s)" in four.stdout
    assert "\nfits: peak" in four.stdout
    one = azr("selfplay", "--preset", "paper", "--dry-run")
    assert one.returncode == 2
    assert "does NOT fit" in one.stdout and "fp32 weights + gradients + AdamW (sharded)     113.48 GiB" in one.stdout
    assert "trainer_workers=4 fits" in one.stdout
    fleet = azr(
        "selfplay", "--preset", "paper", "--set", "trainer_workers=4", "--set", "rollout_replicas=2",
        "--set", "rollout_tensor_parallel=2", "--dry-run",
    )  # fmt: skip
    assert "2 rollout replica(s) on GPUs of their own, 2 each" in fleet.stdout, fleet.stdout


def test_memory_plan_counts_parameters_like_the_model() -> None:
    """The plan's parameter count from the architecture equals the real model's."""
    from azr.models import tiny_qwen2
    from azr.plan import architecture

    model = tiny_qwen2().model
    assert architecture("tiny-qwen2").params == sum(p.numel() for p in model.parameters())


def test_trailing_means_average_the_steps_so_far() -> None:
    assert trailing_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert trailing_mean([1.0, 3.0, 5.0], 1) == [1.0, 3.0, 5.0]
    assert trailing_mean([2.0, 4.0], 10) == [2.0, 3.0]
