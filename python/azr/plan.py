"""A memory plan before anything starts: where each actor goes and what each GPU must hold.

    plan = memory_plan(config)           # from the model's architecture, no weights loaded
    print(plan.render()); plan.fits      # what `azr selfplay --dry-run` prints

One trainer worker per GPU (`trainer_workers`, or one GPU for the in-process trainer). Per GPU:

- **weights, gradients, optimizer**: fp32 master weights (4 B/param), fp32 gradients (4 B/param) and
  AdamW's two moments (8 B/param), sharded by FSDP2 over the workers: 16 B × params ÷ workers;
- **gathered for compute**: the parameters FSDP2 gathers for the computation, in bf16: the root's
  (embeddings, LM head, final norm) for the whole micro-batch, plus two decoder layers (the one that
  runs and the one prefetched);
- **activations** of one micro-batch of `micro_batch_tokens` tokens in bf16: with activation
  checkpointing, each layer's input (tokens × hidden) kept for every layer plus one layer's working
  set recomputed in the backward (tokens × (8 × hidden + 4 × intermediate)); without, that working
  set for every layer;
- **policy loss**: the fused LM-head loss keeps one chunk of fp32 logits and their gradient;
- **vLLM**: the colocated engine's share (`vllm_gpu_memory_utilization` of the GPU) while it
  generates; during the update, all of it at sleep level 0, its bf16 weights at level 1, nothing at 2;
- **runtime**: CUDA context, NCCL buffers and allocator slack, 2 GiB.

The peak is the larger of the generation phase (trainer state + the engine's share) and the update
(trainer state + gathered + activations + loss + the engine's sleeping remainder). It is an estimate
from first principles; `python -m azr.bench.trainer` compares it with measured peaks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from azr_kernels.chunked import CHUNK_ELEMENTS

from azr.config import SelfPlayConfig

GIB = 1 << 30
RUNTIME_BYTES = 2 * GIB
# The fused loss's chunk of fp32 logits, and its gradient.
LOSS_CHUNK_BYTES = CHUNK_ELEMENTS * 4 * 2


@dataclass(frozen=True)
class Architecture:
    """What the plan needs of a decoder-only transformer (Qwen2/Llama shapes)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    attention_bias: bool = True

    @property
    def layer_params(self) -> int:
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        if self.attention_bias:
            attention += self.hidden + 2 * kv
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def root_params(self) -> int:
        """Embeddings, final norm and (untied) LM head: what the FSDP2 root owns."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params


def _qwen(hidden: int, layers: int, heads: int, kv: int, intermediate: int, vocab: int, tied: bool) -> Architecture:
    return Architecture(hidden, layers, heads, kv, intermediate, vocab, tied)


# Architectures of the models the paper and its reference code train, for planning on machines that
# cannot read their configs from the Hub (the numbers are those of each model's config.json).
KNOWN: dict[str, Architecture] = {
    "Qwen/Qwen2.5-0.5B": _qwen(896, 24, 14, 2, 4864, 151936, True),
    "Qwen/Qwen2.5-1.5B": _qwen(1536, 28, 12, 2, 8960, 151936, True),
    "Qwen/Qwen2.5-3B": _qwen(2048, 36, 16, 2, 11008, 151936, True),
    "Qwen/Qwen2.5-7B": _qwen(3584, 28, 28, 4, 18944, 152064, False),
    "Qwen/Qwen2.5-14B": _qwen(5120, 48, 40, 8, 13824, 152064, False),
    "Qwen/Qwen2.5-Coder-3B": _qwen(2048, 36, 16, 2, 11008, 151936, True),
    "Qwen/Qwen2.5-Coder-7B": _qwen(3584, 28, 28, 4, 18944, 152064, False),
    "Qwen/Qwen2.5-Coder-14B": _qwen(5120, 48, 40, 8, 13824, 152064, False),
    "meta-llama/Llama-3.1-8B": Architecture(4096, 32, 32, 8, 14336, 128256, False, attention_bias=False),
    "smollm2-135m-instruct": Architecture(576, 30, 9, 3, 1536, 49152, True, attention_bias=False),
}


def architecture(model: str) -> Architecture:
    """The architecture of `model`: the table of known models (no download), else its config (a local
    directory, the test model, or the Hub)."""
    name = model.removesuffix("-Instruct")
    if model == "tiny-qwen2":
        from azr.models import tiny_qwen2

        config = tiny_qwen2().model.config
    elif name in KNOWN and not Path(model).is_dir():
        return KNOWN[name]
    else:
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError):
            raise ValueError(
                f"cannot read the config of {model!r} (not a local directory, not reachable on the Hub) and it is "
                f"not one of the known architectures: {', '.join(KNOWN)}"
            ) from None
    return Architecture(
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        config.intermediate_size,
        config.vocab_size,
        bool(getattr(config, "tie_word_embeddings", False)),
        bool(getattr(config, "attention_bias", config.model_type == "qwen2")),
    )


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    architecture: Architecture
    gpus: int
    gpu_bytes: int
    parts: dict[str, int]  # per GPU
    generation_peak: int
    update_peak: int

    @property
    def peak(self) -> int:
        return max(self.generation_peak, self.update_peak)

    @property
    def fits(self) -> bool:
        return self.peak <= self.gpu_bytes

    def render(self, config: SelfPlayConfig) -> str:
        arch = self.architecture
        lines = [
            f"model {self.model}: {arch.params / 1e9:.2f} B parameters "
            f"({arch.layers} layers, hidden {arch.hidden}, vocabulary {arch.vocab})",
            f"placement: {self.gpus} trainer worker(s), one per GPU"
            + (" (Ray placement group, packed)" if config.trainer_workers else " (in this process)")
            + (
                f"; {config.rollout_replicas} rollout replica(s) on GPUs of their own, "
                f"{config.rollout_tensor_parallel} each, with an executor each"
                if config.rollout_replicas
                else "; the rollout engine and the executor run with the driver, the engine on GPU 0"
                + (f" to {config.rollout_tensor_parallel - 1}" if config.rollout_tensor_parallel > 1 else "")
            ),
            f"per GPU ({self.gpu_bytes / GIB:.0f} GiB), GPU 0:",
        ]
        for name, size in self.parts.items():
            lines.append(f"  {name:<44} {size / GIB:8.2f} GiB")
        lines.append(f"  {'peak while generating':<44} {self.generation_peak / GIB:8.2f} GiB")
        lines.append(f"  {'peak while updating':<44} {self.update_peak / GIB:8.2f} GiB")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"{verdict}: peak {self.peak / GIB:.1f} GiB of {self.gpu_bytes / GIB:.0f} GiB per GPU")
        if not self.fits:
            lines.append(advice(config, self))
        return "\n".join(lines)


def memory_plan(config: SelfPlayConfig, arch: Architecture | None = None, *, compute_bytes: int = 2) -> MemoryPlan:
    """The plan for GPUs computing in bf16 (`compute_bytes=4`: an fp32 run, as on the CPU)."""
    arch = arch or architecture(config.model)
    gpus = max(1, config.trainer_workers)
    tokens = config.micro_batch_tokens
    trainer_state = 16 * arch.params // gpus
    gathered = compute_bytes * (arch.root_params + 2 * arch.layer_params)
    working_set = tokens * (8 * arch.hidden + 4 * arch.intermediate) * compute_bytes
    if config.gradient_checkpointing:
        activations = tokens * arch.hidden * compute_bytes * arch.layers + working_set
    else:
        activations = working_set * arch.layers
    gpu_bytes = int(config.gpu_memory_gb * GIB)
    engine_share = int(config.vllm_gpu_memory_utilization * gpu_bytes)
    engine_weights = 2 * arch.params
    engine_sleeping = {0: engine_share, 1: engine_weights, 2: 0}[config.vllm_sleep_level]
    parts = {
        "fp32 weights + gradients + AdamW (sharded)": trainer_state,
        f"{'bf16' if compute_bytes == 2 else 'fp32'} parameters gathered for compute": gathered,
        f"activations ({tokens} tokens a micro-batch)": activations,
        "policy-loss logit chunk": LOSS_CHUNK_BYTES,
        "vLLM share while generating": engine_share,
        f"vLLM while the trainer updates (sleep level {config.vllm_sleep_level})": engine_sleeping,
        "CUDA context, NCCL, allocator slack": RUNTIME_BYTES,
    }
    generation = trainer_state + engine_share + RUNTIME_BYTES
    update = trainer_state + gathered + activations + LOSS_CHUNK_BYTES + engine_sleeping + RUNTIME_BYTES
    return MemoryPlan(config.model, arch, gpus, gpu_bytes, parts, generation, update)


def advice(config: SelfPlayConfig, plan: MemoryPlan) -> str:
    """What to change so that the plan fits."""
    hints = []
    for workers in (2, 4, 8, 16, 32, 64):
        if workers > max(1, config.trainer_workers):
            bigger = memory_plan(dataclasses.replace(config, trainer_workers=workers), plan.architecture)
            if bigger.fits:
                hints.append(f"more trainer workers: trainer_workers={workers} fits ({bigger.peak / GIB:.1f} GiB)")
                break
    if plan.update_peak >= plan.generation_peak:
        if config.vllm_sleep_level < 2:
            slept = memory_plan(dataclasses.replace(config, vllm_sleep_level=2), plan.architecture)
            hints.append(f"vllm_sleep_level=2 (update peak {slept.update_peak / GIB:.1f} GiB)")
        if config.micro_batch_tokens > 1024:
            smaller = memory_plan(dataclasses.replace(config, micro_batch_tokens=1024), plan.architecture)
            hints.append(f"micro_batch_tokens=1024 (update peak {smaller.update_peak / GIB:.1f} GiB)")
        if not config.gradient_checkpointing:
            hints.append("gradient_checkpointing=true")
    else:
        hints.append("a smaller vllm_gpu_memory_utilization (the engine's share while generating)")
    return "to make it fit: " + "; or ".join(hints) if hints else "no setting here makes it fit: use larger GPUs"
