"""The policy (and PPO's value head) as the trainer runs it: per-token log-probs, entropies and values of responses.

``PolicyValue`` wraps the causal LM being trained and, for PPO, a scalar value head on the same decoder: one
forward pass gives the policy's log-probs and the critic's values. N+ details (Huang et al. 2024, arXiv
2403.17031) use a separate value network initialised from the reward model; sharing the policy's trunk, as
Ziegler et al. 2019's code does with its value head, halves the memory and the forward passes, which is what
decides speed on a CPU. The value loss enters with a coefficient (``vf_coef``) so its gradients do not swamp the
policy's in the shared trunk.

Only response positions are projected through the vocabulary head (the prompt's logits are never needed), in the
manner of ``rlaif.train.logprobs.TokenLogps``. Logits are divided by the sampling temperature before the
log-softmax, so the log-probs are those of the distribution the rollout was drawn from (N+ details).

Like ``TokenLogps`` this is an ``nn.Module`` around the LM, so DDP can wrap the module whose ``forward`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlaif.train.data import pad_right
from rlaif.train.logprobs import gather_logps
from rlaif.train.rl_math import entropy_from_logits


@dataclass
class ResponseBatch:
    """Right-padded ``query + response`` sequences and where each response token sits in them."""

    ids: torch.Tensor  # [B, L]
    attention: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B, T]: index of the hidden state that predicts response token t (query_len + t - 1)
    targets: torch.Tensor  # [B, T]: the response token ids (0 on padding)
    mask: torch.Tensor  # [B, T] float: 1 on real response tokens

    def to(self, device: torch.device) -> ResponseBatch:
        return ResponseBatch(*(t.to(device) for t in (self.ids, self.attention, self.positions, self.targets,
                                                      self.mask)))


def response_batch(queries: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad: int) -> ResponseBatch:
    """Tensors for a forward pass over each query followed by its response (every response has >= 1 token)."""
    ids, attention = pad_right([list(q) + list(r) for q, r in zip(queries, responses)], pad)
    width = max(len(r) for r in responses)
    positions = torch.zeros((len(responses), width), dtype=torch.long)
    targets = torch.zeros((len(responses), width), dtype=torch.long)
    mask = torch.zeros((len(responses), width), dtype=torch.float32)
    for i, (q, r) in enumerate(zip(queries, responses)):
        n = len(r)
        positions[i, :n] = torch.arange(len(q) - 1, len(q) - 1 + n)
        targets[i, :n] = torch.tensor(list(r), dtype=torch.long)
        mask[i, :n] = 1.0
    return ResponseBatch(ids, attention, positions, targets, mask)


@dataclass
class ResponseOutputs:
    logp: torch.Tensor  # [B, T] log pi(y_t | x, y_<t) at temperature tau, 0 on padding
    entropy: torch.Tensor  # [B, T] entropy of the policy at each response position
    values: torch.Tensor | None  # [B, T] V(s_t), the state before token t; None without a value head


class PolicyValue(nn.Module):
    """The trained causal LM, optionally with a scalar value head on its decoder's hidden states."""

    def __init__(self, lm: Any, *, value_head: bool):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.hidden_size, 1) if value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)  # V = 0 before any return is seen
            nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: ResponseBatch, temperature: float = 1.0) -> ResponseOutputs:
        hidden = self.lm.get_decoder()(input_ids=batch.ids, attention_mask=batch.attention).last_hidden_state
        index = batch.positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        picked = hidden.gather(1, index)  # [B, T, H]
        select = batch.mask.bool()
        logits = self.lm.get_output_embeddings()(picked[select]).float() / temperature
        logp = torch.zeros(batch.mask.shape, dtype=torch.float32, device=hidden.device)
        entropy = torch.zeros_like(logp)
        logp[select] = gather_logps(logits, batch.targets[select])
        entropy[select] = entropy_from_logits(logits.detach())
        values = None
        if self.value_head is not None:
            values = self.value_head(picked.to(self.value_head.weight.dtype)).squeeze(-1).float() * batch.mask
        return ResponseOutputs(logp, entropy, values)


@torch.no_grad()
def reference_logps(reference: Any, batch: ResponseBatch, temperature: float = 1.0) -> torch.Tensor:
    """log pi_ref of each response token under the frozen reference LM (``[B, T]``, 0 on padding)."""
    return PolicyValue(reference, value_head=False)(batch, temperature).logp
