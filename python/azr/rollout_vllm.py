"""`VLLMEngine`: generation with an in-process `vllm.LLM` colocated with the trainer.

    engine = VLLMEngine.from_model(model, tokenizer, seed=0)   # writes the starting weights once
    completions = engine.generate(prompts, SamplingParams(256))
    trainer.step(...)
    engine.sync_weights(model)          # the trainer's tensors, streamed into the engine's model
    engine.check_sync(model)            # raises StaleWeightsError if the engine samples from old weights

Weight sync never goes through disk: the trainer's tensors are handed to vLLM's in-place weight
reload inside the engine's worker (in this process, by reference), then the prefix cache is reset so
no cached key/values computed with old weights survive. With `tensor_parallel_size` > 1 vLLM runs a
worker process per GPU: each gets the whole set of tensors (through vLLM's message queue, a copy per
worker) and keeps its own shards of them. `check_sync` compares the engine's
log-probs of a fixed sequence with the trainer's; a skipped, partial or stale sync fails loudly.

vLLM runs its engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), which is what lets
the worker see the trainer's tensors without a copy; scripts that build a `VLLMEngine` need the usual
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from azr.rollout import Completion, CompletionCallback, ProgressCallback, SamplingParams, check_guides
from azr.sync_check import Probe, StaleWeightsError, default_tolerance, probe_ids

__all__ = ["StaleWeightsError", "VLLMEngine", "default_tolerance", "vllm_supports"]

CPU_KV_CACHE_BYTES = 1 << 30


def vllm_supports(model: PreTrainedModel) -> bool:
    """Whether vLLM is installed and can run `model` (its attention needs heads of 64+ dimensions)."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim < 64:
        return False
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


class VLLMEngine:
    """A `RolloutEngine` backed by `vllm.LLM` in this process.

    `sleep_level` (1 or 2, GPU only) puts the engine to sleep between generation phases, freeing its
    KV cache (level 1) and weights too (level 2) for the trainer; `generate` wakes it first.
    `sync_tolerance` is the largest per-token log-prob difference `check_sync` accepts.
    `tensor_parallel_size` GPUs share the model (one vLLM worker process each).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.5,
        sleep_level: int = 0,
        sync_tolerance: float | None = None,
    ) -> None:
        if sleep_level not in (0, 1, 2):
            raise ValueError(f"sleep_level must be 0 (off), 1 or 2, got {sleep_level}")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] != "0":
            raise RuntimeError("VLLMEngine needs VLLM_ENABLE_V1_MULTIPROCESSING=0: weight sync hands over tensors")
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if not on_gpu and tensor_parallel_size > 1:
            # vLLM's CPU backend pins each worker to a NUMA node of its own by default and refuses to
            # start with fewer nodes than workers (one-node machines, CI); unpinned, they share the cores.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        self.sleep_level = sleep_level if on_gpu else 0
        self.llm = LLM(
            str(model_dir),
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            # Worker processes of this one (also inside a Ray actor, where vLLM would otherwise place
            # them as Ray actors of their own): they use the GPUs this process was given.
            distributed_executor_backend="mp" if tensor_parallel_size > 1 else None,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            # On the CPU backend the utilisation is a share of host RAM; a fixed cache suits tests and
            # smoke runs, and leaves room for the trainer and the executor.
            kv_cache_memory_bytes=None if on_gpu else CPU_KV_CACHE_BYTES,
            enable_sleep_mode=self.sleep_level > 0,
            enforce_eager=not on_gpu,
            # vLLM's CPU backend cannot resume a seeded sampler in a prefill split across steps
            # ("CPU Generator does not use offset"), so prompts are prefilled whole there.
            enable_chunked_prefill=on_gpu,
            # Log-probs after temperature: with top_p = 1 (enforced in `generate`) exactly the
            # distribution the trainer computes, as HFEngine's are.
            logprobs_mode="processed_logprobs",
        )
        self.directory = Path(model_dir)
        self.tensor_parallel_size = tensor_parallel_size
        self.tokenizer = self.llm.get_tokenizer()
        self.reseed(seed)
        self.sync_tolerance = sync_tolerance
        self.asleep = False

    @classmethod
    def from_model(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options) -> VLLMEngine:
        """An engine for an in-memory model: its config, tokenizer and starting weights are written
        once to a temporary directory for vLLM to load, removed with the engine (or at exit); later
        syncs go through memory."""
        directory = Path(tempfile.mkdtemp(prefix="azr-vllm-"))
        try:
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            options.setdefault("dtype", str(next(model.parameters()).dtype).removeprefix("torch."))
            engine = cls(directory, **options)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        # A copy of the weights per engine (half a GB for 135M parameters) must not outlive it.
        weakref.finalize(engine, shutil.rmtree, directory, True)
        return engine

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        *,
        progress: ProgressCallback | None = None,
        on_completion: CompletionCallback | None = None,
        guides: Sequence[str] | None = None,
    ) -> list[Completion]:
        """All prompts go to the engine at once; each completion is handed to `on_completion(index,
        completion)` as soon as it finishes, while the others are still generating. A guided
        request uses vLLM's structured outputs; its log-probs, taken after the grammar's mask, are
        those of the constrained distribution."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        check_guides(prompts, guides)
        if params.top_p < 1:
            raise ValueError(
                "top_p < 1 with the vLLM engine: vLLM reports log-probs of the truncated distribution, not "
                "softmax(logits / temperature) that the trainer computes, so the update would be biased; "
                "use top_p=1 (the paper's setting) or rollout_engine=hf"
            )
        self._wake()
        sampling = VSamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            logprobs=0,
        )
        self.calls += 1
        engine = self.llm.llm_engine
        encoded = [self.tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        indices = {}
        for index, ids in enumerate(encoded):
            request = sampling.clone()
            if guides is not None:
                request.structured_outputs = StructuredOutputsParams(regex=guides[index])
                request.stop = None
            # A seed per request, from the engine's seed and a call counter: repeated prompts get
            # different samples, and a run is reproducible whatever order requests are scheduled in.
            request.seed = (self.seed * 1_000_003 + self.calls * 65_537 + index) % 2**31
            request_id = f"azr-{self.calls}-{index}"
            indices[request_id] = index
            engine.add_request(request_id, {"prompt_token_ids": ids}, request)
        results: list[Completion | None] = [None] * len(prompts)
        done = 0
        while engine.has_unfinished_requests():
            for output in engine.step():
                if not output.finished:
                    continue
                index = indices[output.request_id]
                guide = None if guides is None else guides[index]
                results[index] = _completion(encoded[index], output.outputs[0], guide)
                done += 1
                if on_completion is not None:
                    on_completion(index, results[index])
                if progress is not None:
                    progress(done, len(prompts))
        self._sleep()
        missing = [i for i, result in enumerate(results) if result is None]
        if missing:
            raise RuntimeError(f"vLLM finished without an answer for prompts {missing[:10]}")
        return [result for result in results if result is not None]

    def reseed(self, seed: int) -> None:
        """Restart the sequence of sampling seeds: the same prompts then give the same completions."""
        self.seed = seed
        self.calls = 0

    def state_dict(self) -> dict[str, int]:
        """The seed and the call counter the per-request seeds come from: a resumed run goes on with
        the seeds the uninterrupted run would have used."""
        return {"seed": self.seed, "calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.calls = int(state.get("calls", 0))

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load `model`'s current weights into the engine, tensor by tensor, and drop cached prefixes."""
        self.load_weights((name, tensor.detach()) for name, tensor in model.state_dict().items())
        if self.sync_tolerance is not None:
            self.check_sync(model)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load named tensors as the engine's weights. Asleep, the engine wakes its weights first and its
        KV cache only after they are loaded, so both are never being allocated at once."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        # One reload of the whole set: vLLM rebuilds what it derives from the weights (the CPU
        # backend's packed matrices) once every tensor is in, so the set is not split into calls.
        # In this process the tensors stream in by reference, one at a time; worker processes
        # (tensor parallelism) each need the whole set sent, from host memory.
        if self.tensor_parallel_size > 1:
            weights = [(name, tensor.cpu()) for name, tensor in weights]
        self.llm.collective_rpc(_reload_weights, args=(weights,))
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()

    def probe_logprobs(self, token_ids: Sequence[int]) -> torch.Tensor:
        """The engine's log-prob of each token of `token_ids` after its prefix (all but the first)."""
        from vllm import SamplingParams as VSamplingParams

        self._wake()
        sampling = VSamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        [output] = self.llm.generate([{"prompt_token_ids": list(token_ids)}], sampling, use_tqdm=False)
        steps = output.prompt_logprobs[1:]
        return torch.tensor([step[token].logprob for step, token in zip(steps, token_ids[1:], strict=True)])

    def check_sync(self, model: PreTrainedModel, tolerance: float | None = None) -> float:
        """Compare the engine's and the trainer's log-probs of `azr.sync_check.SYNC_PROBE`; returns the
        largest difference, or raises `StaleWeightsError` when it exceeds the tolerance."""
        probe = Probe.of(model, probe_ids(self.tokenizer), tolerance if tolerance is not None else self.sync_tolerance)
        return probe.check(self.probe_logprobs(probe.token_ids))

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def _sleep(self) -> None:
        if self.sleep_level and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True


def _reload_weights(worker, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """In each vLLM worker (this process's, or a tensor-parallel worker's): load `weights` in place."""
    worker.model_runner.reload_weights(weights_iterator=iter(weights))


def _completion(prompt_ids: list[int], sample, guide: str | None) -> Completion:
    tokens = tuple(sample.token_ids)
    logprobs = tuple(step[token].logprob for step, token in zip(sample.logprobs or [], tokens, strict=True))
    reason = "length" if sample.finish_reason == "length" else "stop"
    return Completion(tuple(prompt_ids), tokens, logprobs, sample.text, reason, guide)
