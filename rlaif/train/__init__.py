"""Training on the datasets: SFT, a reward model and the DPO family, every metric into DuckDB.

Layers, each a small module that the trainers here and the RL trainers (issue 11) call:

- ``options``   the training options as small pydantic models whose validation states the numbers;
- ``data``      the dataset views read by split, the chat template applied as at generation, assistant-only
                loss masks, length-bucketed batch plans, and the dataset version;
- ``models``    model loading (device, precision, LoRA), the scalar-head reward model, servable saving;
- ``logprobs``  per-token log-probs of the positions a mask selects (the lm head runs only there);
- ``losses``    each loss a small named function of tensors with its paper's equation, chosen by name;
- ``tracking``  the run row, per-step metrics, checkpoints and resume;
- ``loop``      the optimisation loop shared by SFT, reward model and DPO (accelerate, DDP, accumulation);
- ``sft``, ``reward_model``, ``dpo``: the trainers; ``evaluate``: the win rate against the base.

Nothing heavy is imported here: torch, transformers, peft and accelerate load inside the modules that use them.
"""
