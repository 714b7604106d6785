"""The executor as the reward of other RL trainers: code completions checked against unit tests
(assert-style or stdin/stdout) in the WebAssembly sandbox.

- `azr.integrations.code_tests`: test formats, the jobs that run them, the verdicts.
- `azr.integrations.trl`: a reward function for TRL's `GRPOTrainer(reward_funcs=[...])`.
- `azr.integrations.verl`: `compute_score` (and a batched form) for veRL's custom reward function.

Neither framework is a dependency: each module only follows its calling convention.
"""
