"""The RL trainer's processes: one, or several under ``accelerate launch`` (DDP; gloo on CPU, NCCL on GPUs).

The split, chosen so that N processes make exactly the update one process makes on the same global batch:
- **Rank 0 samples and scores** the whole batch (``generate`` here or a vLLM server, then the rewards: a judge
  or a reward model is loaded once, not per process) and broadcasts the rollouts and their scores. Sampling is
  the part a vLLM server takes off the trainer on a GPU, so it is not sharded here.
- **Every process prepares the whole batch** (old and reference log-probs, values, advantages) without
  gradients: advantages are whitened and normalised per group over the whole batch, and a copy of those few
  no-grad passes per process is simpler, and exact, where gathering shards would need collectives per tensor.
- **The gradient passes are sharded** (``rl_step.Shard``): each process takes every N-th row of each minibatch;
  DDP averages the gradients, so the optimizer steps, and so the weights, stay identical on every process.
- **Only rank 0 touches the database and the output folder** (the run row, metrics, rollouts, checkpoints, the
  final model); the others wait at a barrier where rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlaif.train.rl_step import Shard


@dataclass
class Processes:
    """This process's place, and the collectives the trainer needs (all no-ops in a single process)."""

    accelerator: Any

    @classmethod
    def start(cls, device: torch.device, precision: str) -> Processes:
        from rlaif.train.loop import make_accelerator

        return cls(make_accelerator(device, precision))

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, its result (or its user error) on every process."""
        from rlaif.train.session import on_main

        return on_main(self.accelerator, fn)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (pickled; the rollouts and scores of a step)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        payload = [value]
        broadcast_object_list(payload, from_process=0)
        return payload[0]

    def wrap(self, policy: torch.nn.Module) -> torch.nn.Module:
        """The module the gradient passes run through: DDP over ``policy`` on several processes, else itself."""
        return self.accelerator.prepare_model(policy) if self.world > 1 else policy

    def shard(self, model: torch.nn.Module) -> Shard:
        if self.world == 1:
            return Shard()
        accelerator = self.accelerator

        def reduce(stats: dict[str, float]) -> dict[str, float]:
            from rlaif.train.loop import reduce_sums

            return reduce_sums(stats, accelerator)

        return Shard(accelerator.process_index, self.world, lambda: model.no_sync(), reduce)

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()
