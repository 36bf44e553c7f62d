"""Per-token log-probs of the positions a loss mask selects, with the lm head run only at those positions.

Every trainer here (and PPO/GRPO after it) needs log pi(y_t | x, y_<t) of completion tokens only. Running the
vocabulary projection over every position wastes most of its work on prompt tokens and padding: on SmolLM2
(576 hidden, 49,152 vocabulary) the head is a fifth of the forward FLOPs and its [B, T, V] logits dominate
memory. So ``TokenLogps`` runs the decoder, gathers the hidden states that predict a masked token, and projects
only those. The log-prob is read as ``logit[target] - logsumexp(logits)`` in fp32, without materialising a
log-softmax over the whole vocabulary.

``TokenLogps`` is an ``nn.Module`` around the causal LM on purpose: DDP (and FSDP) must wrap the module whose
``forward`` runs, or gradients are not synchronised, so the trainer wraps this one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Configs whose lm forward changes the logits after the head; for those the full forward is used.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def gather_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] for each row: ``logits`` [N, V], ``targets`` [N] -> [N] (fp32)."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class TokenLogps(nn.Module):
    """Wraps a causal LM; ``forward`` returns per-token log-probs ``[B, T]``, zero where ``loss_mask`` is 0.

    Position t holds log pi(ids_t | ids_<t); position 0 (nothing predicts it) is always 0.
    """

    def __init__(self, lm: Any):
        super().__init__()
        self.lm = lm
        config = getattr(lm, "config", None)
        self.head_only = not any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        select = loss_mask[:, 1:].bool()  # position t-1's output predicts token t
        targets = input_ids[:, 1:][select]
        if self.head_only:
            hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = self.lm.get_output_embeddings()(hidden[:, :-1][select])
        else:
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][select]
        out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        out[:, 1:][select] = gather_logps(logits, targets)
        return out


def sequence_logps(model: nn.Module, ids: torch.Tensor, attention: torch.Tensor,
                   loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the masked tokens' log-probs, their count) per row; ``model`` is a (wrapped) ``TokenLogps``."""
    logps = model(ids, attention, loss_mask)
    return logps.sum(dim=-1), loss_mask.sum(dim=-1).float()
