"""A generation run in a process of its own, for tests that need real concurrent processes on one machine.

    python tests/gen_worker.py DB --seed S --prompts N [--delay SECONDS] [--shard I/N] [--judge]

Runs ``rlaif.runner.generate_sft`` on the built-in prompts with the fake engine for both roles, each engine call
slowed by ``--delay`` so that two runs started together overlap, and prints the run's summary as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlaif.environment import prepare_environment  # noqa: E402

prepare_environment()

from rlaif.engines.fake import FakeEngine  # noqa: E402


class SlowFakeEngine(FakeEngine):
    """The fake engine, ``delay`` seconds per call: a stand-in for a server that takes its time.

    Its replies carry the run seed, as a sampling model's would differ, so runs with different seeds make
    different texts and therefore different judge requests and comparison rows.
    """

    def __init__(self, delay: float, seed: int):
        super().__init__(reply=lambda r: f"seed {seed} reply to: {r.messages[-1]['content'][:60]}")
        self.delay = delay

    async def chat(self, request):
        await asyncio.sleep(self.delay)
        return await super().chat(request)

    async def choose(self, request):
        await asyncio.sleep(self.delay)
        return await super().choose(request)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=20, help="the first N built-in prompts")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--shard", default=None)
    parser.add_argument("--judge", action="store_true")
    parser.add_argument("--in-flight", type=int, default=4, help="prompts in flight at once")
    args = parser.parse_args()

    from rlaif.config import load_settings
    from rlaif.engines import Engines
    from rlaif.options import RunOptions
    from rlaif.prompts import demo_prompts_path
    from rlaif.runner import generate_sft

    # The runner keeps 2 x max(concurrency, batch_size) prompts in flight.
    half = max(1, args.in_flight // 2)
    settings = load_settings(db=args.db, engine="fake", seed=args.seed, concurrency=half, batch_size=half)
    options = RunOptions.parse(prompts=str(demo_prompts_path()), limit=args.prompts, shard=args.shard,
                               constitution="example", max_tokens=32, judge=args.judge)
    engine = SlowFakeEngine(args.delay, args.seed)
    summary = generate_sft(settings, options, kind="test", engines=Engines(engine, engine), show_progress=False,
                           log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(summary.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
