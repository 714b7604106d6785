"""Checkpoints of a self-play run, in its directory:

    checkpoints/step-000010/weights/     model and optimizer, a torch.distributed.checkpoint (DCP):
                                         sharded by the ranks that wrote it, readable by any number
    checkpoints/step-000010/model/       the model's config and tokenizer (to rebuild it)
    checkpoints/step-000010/state.json   step, RNG, task buffers, rollout-engine state, settings
    checkpoints/latest                   the name of the newest complete checkpoint

A checkpoint is written beside its final name and renamed when complete, so `latest` never points
at half of one. `export` turns one into a Hugging Face model directory (for vLLM, for users).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from azr.buffers import TaskBuffer
from azr.models import Policy, load_policy
from azr.tasks import TaskType
from azr.trainer import load_weights

WEIGHTS = "weights"
MODEL = "model"
STATE = "state.json"


@dataclass
class RunState:
    """Everything of a run besides the weights and the optimizer."""

    step: int
    rng: random.Random
    buffers: dict[TaskType, TaskBuffer]
    engine: dict[str, int]

    def to_json(self, config: dict[str, Any]) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "step": self.step,
            "rng": [version, list(internal), gauss],
            "buffers": {task.value: buffer.to_json() for task, buffer in self.buffers.items()},
            "engine": self.engine,
            "config": config,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        rng = random.Random()
        version, internal, gauss = data["rng"]
        rng.setstate((version, tuple(internal), gauss))
        buffers = {TaskType(name): TaskBuffer.from_json(state) for name, state in data["buffers"].items()}
        return cls(data["step"], rng, buffers, data.get("engine", {}))


def save(
    run_dir: Path,
    state: RunState,
    config: dict[str, Any],
    model_config: Any,
    tokenizer: PreTrainedTokenizerBase,
    save_weights: Callable[[Path], None],
    keep: int,
) -> Path:
    """Write the checkpoint of `state.step`; `save_weights(path)` writes the DCP weights (every
    trainer rank must take part). Keeps the newest `keep` checkpoints."""
    root = run_dir / "checkpoints"
    target = root / f"step-{state.step:06d}"
    partial = root / f".partial-step-{state.step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / MODEL).mkdir(parents=True)
    save_weights(partial / WEIGHTS)
    model_config.save_pretrained(partial / MODEL)
    tokenizer.save_pretrained(partial / MODEL)
    (partial / STATE).write_text(json.dumps(state.to_json(config)))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (root / "latest").write_text(target.name)
    kept = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in kept[:-keep]:
        shutil.rmtree(old)
    return target


def find(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint of `step` in a run directory, or its latest one."""
    root = Path(run_dir) / "checkpoints"
    if step is not None:
        path = root / f"step-{step:06d}"
        if not path.exists():
            have = sorted(p.name for p in root.glob("step-*")) if root.exists() else []
            raise FileNotFoundError(f"no checkpoint of step {step} in {root} (there are: {', '.join(have) or 'none'})")
        return path
    latest = root / "latest"
    if not latest.exists():
        raise FileNotFoundError(f"no checkpoint to resume from in {root}")
    return root / latest.read_text().strip()


def read_state(checkpoint: Path) -> RunState:
    return RunState.from_json(json.loads((checkpoint / STATE).read_text()))


def policy_of(checkpoint: Path, *, dtype: torch.dtype = torch.float32) -> Policy:
    """The checkpoint's model, built from its config, with its weights."""
    config = AutoConfig.from_pretrained(checkpoint / MODEL)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint / MODEL)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    load_weights(model, checkpoint / WEIGHTS)
    return Policy(model, tokenizer, str(checkpoint))


def policy_for(spec: str) -> Policy:
    """The model a user names: a run directory (its latest checkpoint), `RUN/STEP` (that step's), a
    checkpoint directory, or anything `load_policy` takes (a model directory, a Hub id)."""
    path = Path(spec)
    if (path / "checkpoints").is_dir():
        return policy_of(find(path))
    if path.name.isdigit() and (path.parent / "checkpoints").is_dir():
        return policy_of(find(path.parent, int(path.name)))
    if (path / STATE).exists() and (path / MODEL).is_dir():
        return policy_of(path)
    return load_policy(spec)


def export(run_dir: Path, step: int | None, to: Path) -> Path:
    """A checkpoint as a Hugging Face model directory (safetensors, config, tokenizer)."""
    checkpoint = find(run_dir, step)
    policy = policy_of(checkpoint)
    to.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(to)
    policy.tokenizer.save_pretrained(to)
    return to
