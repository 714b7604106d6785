"""Self-play configuration: the paper's settings by default, presets, and config files.

    cfg = load_config(preset="smoke", path="run.yaml", overrides=["steps=3", "lr=2e-6"])

Precedence: preset, then the file (YAML or TOML, a flat mapping of field names), then overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from azr.buffers import EVICTIONS, Eviction
from azr.models import DEFAULT_MODEL
from azr.rewards import PAPER_EXTREME

AdvantageStatistics = Literal["sequence", "token"]


@dataclass(frozen=True)
class SelfPlayConfig:
    # What to train
    model: str = DEFAULT_MODEL
    device: str = "auto"  # "auto": CUDA when available, else CPU
    seed: int = 0
    # Batch (paper Table 3): tasks per task-role, reference triplets, induction inputs, solver samples
    # per proposal (at least 1: a proposer's reward is 1 − their solve rate)
    batch_size: int = 64
    references: int = 6
    induction_inputs: int = 10
    learnability_samples: int = 8
    # Generation
    max_prompt_tokens: int = 6144
    max_response_tokens: int = 8096
    temperature: float = 1.0
    top_p: float = 1.0
    generation_batch_size: int = 16
    # Constrain every completion to its task-role's answer format (azr.guided): no format penalty can
    # occur, and the update is the policy gradient of the constrained policy. Off in the paper's setup.
    guided_format: bool = False
    # Rewards and advantages
    extreme_proposer_reward: float = PAPER_EXTREME  # −0.5 reproduces the reference code
    advantage_statistics: AdvantageStatistics = "sequence"  # "token": token-weighted, as the reference code
    # Policy update (REINFORCE++, one optimizer step per self-play step)
    lr: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    entropy_coef: float = 0.001
    kl_coef: float = 0.0  # > 0 adds a KL penalty against a frozen copy of the initial model
    loss_aggregation: Literal["token", "sequence"] = "token"
    micro_batch_tokens: int = 8192
    # A micro-batch's sequences in one row, no padding: saves memory where lengths vary; with SDPA the
    # block-diagonal mask makes attention quadratic in the row (use it with flash-attn's varlen kernels).
    sequence_packing: bool = False
    gradient_checkpointing: bool = True
    # Task buffers
    buffer_capacity: int = 16384
    buffer_eviction: Eviction = "oldest-out"
    seed_file: str = ""  # AZR-format seed triplets (jsonl) added to the identity triplet
    # Rollout engine: "vllm" (an in-process vllm.LLM; weights synced through memory after every
    # optimizer step), "hf" (transformers generate, shares the trainer's model), or "auto": vLLM when it
    # is installed and supports the model (attention heads of 64+ dimensions), else HF.
    rollout_engine: Literal["auto", "hf", "vllm"] = "auto"
    vllm_sleep_level: int = 0  # GPU only: 1 frees the KV cache between phases, 2 the weights too
    vllm_gpu_memory_utilization: float = 0.5
    # GPUs one vLLM engine spans (the driver's, and each rollout replica's: a replica then holds this
    # many GPUs). vLLM runs one worker process per GPU; weights reach each of them after every update.
    rollout_tensor_parallel: int = 1
    # After each sync, the engine (vLLM here, or each rollout replica) compares its log-probs of a fixed
    # sequence with the trainer's; stale → error.
    vllm_check_sync: bool = False
    # Truncated importance sampling against engine/trainer mismatch: cap on π_trainer / π_engine (0: off;
    # 2 is a common choice). Logged as train/tis_weight_mean and train/tis_truncated.
    tis_cap: float = 0.0
    # Executor
    executor_workers: int = 0  # 0: all cores
    executor_timeout_s: float = 10.0
    executor_memory_mb: int = 256
    # "strict" runs every check in a fresh sandbox: no program can touch what another sees, so no
    # reward depends on another sample's program. "batch" is ~4× faster but shares an interpreter
    # within a group of jobs (see the README's isolation notes): use it only where that is acceptable.
    executor_mode: Literal["strict", "batch"] = "strict"
    # A fleet of `azr-executor serve` hosts, comma-separated ("http://exec-1:8000,http://exec-2:8000"):
    # when set, programs run there (with the hosts' own limits and mode) instead of on this machine.
    executor_urls: str = ""
    executor_token_file: str = ""  # file holding the fleet's bearer token
    # Scale-out: 0 trains in this process; N ≥ 1 runs the update on N Ray actors (one per GPU, or per
    # CPU process) forming one torch.distributed group, the model sharded with FSDP2.
    trainer_workers: int = 0
    # N ≥ 1 generates on N Ray actors, each with its own copy of the policy (the HF engine), dispatched
    # by load; 0 generates in this process. Weights reach them after every update (`azr.fleet`).
    rollout_replicas: int = 0
    # "sync": each step's samples train at its end, the engine waits. "one-step-off": they train during
    # the next step's generation (whose samples are then one policy version old, corrected by the
    # trainer's truncated importance sampling). "async": generation runs ahead of training by up to
    # `max_staleness` steps, each update's weights reach every replica before its next chunk (mid-phase),
    # and no sample more than `max_staleness` policy versions old is trained. Both need
    # rollout_replicas ≥ 1, whose weights are their own.
    pipeline: Literal["sync", "one-step-off", "async"] = "sync"
    max_staleness: int = 2
    # With pipeline=async: the next step's proposals start while this step's longest completions still
    # generate (once nothing of this step is left to dispatch and every proposal has its verdict), so
    # a step's tail no longer idles the replicas. Its samples stay within max_staleness (a step starts
    # early only while at most max_staleness - 1 updates are unfinished).
    overlap_steps: bool = False
    # How new weights reach the rollout replicas: "object-store" (the driver puts one copy in Ray's
    # object store, every replica reads it) or "broadcast" (every trainer rank sends its own shards
    # straight to the driver and the replicas over gloo groups, `azr.weight_transport`: no gathered
    # model, no driver hop; needs trainer_workers ≥ 1).
    weight_transport: Literal["object-store", "broadcast"] = "object-store"
    ray_address: str = ""  # "": start a Ray for this run; "auto": join the running cluster; or a head's address
    gpu_memory_gb: float = 80.0  # per GPU, for the memory plan (`azr selfplay --dry-run`)
    # Evaluation during the run (`azr eval`'s benchmarks, greedy, with the run's rollout engine): every
    # N steps (0: never), on these benchmarks or groups, the first `eval_limit` items of each (0: all),
    # from local files in `eval_data` ("": the sets' usual sources). Scores land as eval/<benchmark>.
    eval_every: int = 0
    eval_benchmarks: str = "crux"
    eval_limit: int = 0
    eval_data: str = ""
    # Run
    steps: int = 500
    checkpoint_every: int = 10
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        positive = (
            "batch_size",
            "induction_inputs",
            "max_prompt_tokens",
            "max_response_tokens",
            "generation_batch_size",
            "micro_batch_tokens",
            "buffer_capacity",
            "learnability_samples",
            "steps",
            "checkpoint_every",
            "keep_checkpoints",
            "executor_memory_mb",
            "rollout_tensor_parallel",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in (
            "references",
            "executor_workers",
            "kl_coef",
            "entropy_coef",
            "seed",
            "tis_cap",
            "trainer_workers",
            "rollout_replicas",
            "eval_every",
            "eval_limit",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be positive (self-play samples; greedy is for evaluation), got {self.temperature}"
            )
        if self.eval_every:
            from azr.eval.benchmarks import resolve

            resolve(self.eval_benchmarks)
        if self.vllm_sleep_level not in (0, 1, 2):
            raise ValueError(f"vllm_sleep_level must be 0 (off), 1 or 2, got {self.vllm_sleep_level}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        if self.rollout_tensor_parallel > 1 and self.rollout_engine == "hf":
            raise ValueError(
                f"rollout_tensor_parallel={self.rollout_tensor_parallel} splits a vLLM engine over GPUs; the HF "
                "engine runs on one (use rollout_engine=vllm or auto)"
            )
        if self.pipeline not in ("sync", "one-step-off", "async"):
            raise ValueError(f"pipeline must be 'sync', 'one-step-off' or 'async', got {self.pipeline!r}")
        if self.pipeline != "sync" and not self.rollout_replicas:
            raise ValueError(
                f"pipeline={self.pipeline} needs rollout_replicas >= 1: the engine in this process shares the "
                "weights the update changes"
            )
        if self.weight_transport not in ("object-store", "broadcast"):
            raise ValueError(f"weight_transport must be 'object-store' or 'broadcast', got {self.weight_transport!r}")
        if self.weight_transport == "broadcast" and not (self.rollout_replicas and self.trainer_workers):
            raise ValueError(
                "weight_transport=broadcast sends from the trainer workers' ranks to the rollout replicas: it needs "
                f"trainer_workers >= 1 and rollout_replicas >= 1 (got {self.trainer_workers} and "
                f"{self.rollout_replicas}); without them the weights never leave this process's reach"
            )
        if self.overlap_steps and self.pipeline != "async":
            raise ValueError(
                f"overlap_steps starts a step before the last one's samples are trained: it needs pipeline=async "
                f"(got pipeline={self.pipeline})"
            )
        if self.max_staleness < 1:
            raise ValueError(f"max_staleness must be at least 1 (0 is pipeline=sync), got {self.max_staleness}")
        if self.trainer_workers and self.kl_coef > 0:
            raise ValueError("kl_coef > 0 is supported with the in-process trainer only (trainer_workers=0)")
        if self.gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb must be positive, got {self.gpu_memory_gb}")
        if self.induction_inputs < 2:
            raise ValueError("induction_inputs must be at least 2 (half are shown, half are hidden)")
        if self.guided_format:
            from azr.guided import task_role_regex
            from azr.tasks import TASK_ROLES

            for role, task in TASK_ROLES:
                task_role_regex(role, task, self.induction_inputs, self.max_response_tokens)
        if self.buffer_eviction not in EVICTIONS:
            raise ValueError(f"buffer_eviction must be one of {EVICTIONS}, got {self.buffer_eviction!r}")
        for name, hint in get_type_hints(SelfPlayConfig).items():
            choices = get_args(hint) if getattr(hint, "__origin__", None) is Literal else ()
            if choices and getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's run (Qwen2.5-7B, 4 GPUs): every default above.
    # On GPUs the engine frees its KV cache while the trainer updates (vLLM sleep level 1), as veRL's
    # hybrid engine does; see `azr selfplay --preset paper --set trainer_workers=4 --dry-run`.
    "paper": {"model": "Qwen/Qwen2.5-7B", "vllm_sleep_level": 1},
    # One self-play step in a few minutes on two CPU cores, with SmolLM2-135M.
    "smoke": {
        "batch_size": 2,
        "references": 2,
        "induction_inputs": 4,
        "learnability_samples": 2,
        "max_prompt_tokens": 2048,
        # Room for the guided induction proposal's format (4 inputs and a message) and short bodies.
        "max_response_tokens": 144,
        "guided_format": True,
        "generation_batch_size": 12,
        "micro_batch_tokens": 4096,
        "gradient_checkpointing": False,
        "lr": 1e-6,
        "steps": 1,
        "checkpoint_every": 1,
        "executor_timeout_s": 5.0,
    },
    # Does self-play learn at all on two CPU cores? SmolLM2-135M with guided format, the largest run
    # that fits an hour (docs/learning.md); compare with its control, the same run with lr=0.
    "learn-cpu": {
        "batch_size": 4,
        "references": 2,
        "induction_inputs": 3,
        "learnability_samples": 2,
        "max_prompt_tokens": 2048,
        # 256: at 160 the grammar's length bound cut most programs short (the pilot in docs/learning.md).
        "max_response_tokens": 256,
        "guided_format": True,
        "generation_batch_size": 12,
        # Checkpointed activations in small micro-batches: ~7 GiB at peak instead of ~12, so that a run and its
        # control fit side by side in 24 GiB (the update is the same).
        "micro_batch_tokens": 2048,
        "gradient_checkpointing": True,
        "lr": 5e-6,
        "steps": 36,
        "checkpoint_every": 10,
        "executor_timeout_s": 5.0,
    },
}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A file or command-line value, checked against the field's type."""
    if getattr(hint, "__origin__", None) is Literal:
        return value
    if hint is bool:
        if isinstance(value, str):
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return lowered in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if hint is int and float(number) != int(number):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return hint(number)
    return str(value)


def _apply(values: dict[str, Any], source: str, into: dict[str, Any]) -> None:
    hints = get_type_hints(SelfPlayConfig)
    for name, value in values.items():
        if name not in hints:
            known = ", ".join(sorted(hints))
            raise ValueError(f"unknown setting {name!r} in {source}; the settings are: {known}")
        into[name] = _coerce(name, value, hints[name])


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of setting names to values")
    return data


def load_config(preset: str | None = None, path: str | Path | None = None, overrides: list[str] = ()) -> SelfPlayConfig:
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; the presets are: {', '.join(PRESETS)}")
        _apply(PRESETS[preset], f"preset {preset!r}", values)
    if path is not None:
        _apply(read_config_file(path), str(path), values)
    for override in overrides:
        name, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} must look like name=value")
        _apply({name.strip(): value.strip()}, "the command line", values)
    return SelfPlayConfig(**values)


def field_names() -> list[str]:
    return [f.name for f in fields(SelfPlayConfig)]
