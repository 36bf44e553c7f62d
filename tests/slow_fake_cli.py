"""``python tests/slow_fake_cli.py ARGS``: the real ``rlaif`` CLI with both roles on a slowed fake engine.

For the kill -9 test (tests/test_prefs_kill.py): each engine call sleeps ``SLOW_FAKE_DELAY_S`` with at most
``SLOW_FAKE_WIDTH`` calls at once, so a run lasts long enough to be killed in the middle, and every finished call
prints ``served N`` on stdout, so the test knows how far it got. Samples differ per seed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from rlaif.engines.fake import FakeEngine

DELAY_S = float(os.environ.get("SLOW_FAKE_DELAY_S", "0.01"))
WIDTH = int(os.environ.get("SLOW_FAKE_WIDTH", "2"))


class SlowFake(FakeEngine):
    def __init__(self) -> None:
        super().__init__(reply=lambda r: f"answer {r.params.seed}" + " more" * (r.params.seed % 5))
        self.served = 0
        self._gate: asyncio.Semaphore | None = None

    async def _slowly(self, call, request):
        self._gate = self._gate or asyncio.Semaphore(WIDTH)
        async with self._gate:
            await asyncio.sleep(DELAY_S)
            result = await call(request)
        self.served += 1
        print(f"served {self.served}", flush=True)
        return result

    async def chat(self, request):
        return await self._slowly(super().chat, request)

    async def choose(self, request):
        return await self._slowly(super().choose, request)


if __name__ == "__main__":
    import rlaif.engines
    from rlaif.cli import main

    rlaif.engines.create_engine = lambda settings, role="policy": SlowFake()
    sys.exit(main(sys.argv[1:]))
