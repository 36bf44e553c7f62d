"""Path (c) of ``engine_efficiency.py``: the project's real Prefect flow against a running vLLM server.

Runs in a fresh process of the main environment, so its start-up is what a user's ``rlaif demo`` pays: importing
Prefect, starting Prefect's temporary local server, creating the OpenAI engine (which checks the endpoint) and
opening and migrating DuckDB. Usage: ``python bench/efficiency_project.py SPEC.json RESULT.json``; the spec holds
the prompts file, the fresh DuckDB path, the server URL, the served model name, concurrency, max_tokens,
ignore_eos, the run seed and whether to run the judge pass. The result holds the flow's summary and its start
and end (``time.perf_counter``, which the parent's CPU sampler shares), the prefix-cache counters around the
generation and around a second, judge-only pass, and the stored rows the equivalence check needs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class FlushMeter:
    """Counts the project's DuckDB writes and what they cost, split by thread.

    ``Store.write`` is wrapped in this benchmark process only, to time it; the project's code is unchanged. A
    write on the main thread (the event loop's) is time in which the loop could not refill the in-flight window;
    a write on the writer's own thread (``Writer(background=True)``, what the runner uses) costs the loop nothing
    but the GIL it holds while building Arrow frames. Thread CPU is what the write burns.
    """

    def __init__(self) -> None:
        self.count, self.cpu_s, self.wall_s = 0, 0.0, 0.0  # writes on the event loop's thread
        self.background_count, self.background_cpu_s, self.background_wall_s = 0, 0.0, 0.0

    def install(self) -> None:
        import threading

        from rlaif.store import Store

        inner = Store.write
        meter = self

        def write(store: Store, batches: dict[str, list[dict]]) -> dict[str, int]:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return inner(store, batches)
            finally:
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                if threading.current_thread() is threading.main_thread():
                    meter.count, meter.cpu_s, meter.wall_s = meter.count + 1, meter.cpu_s + cpu, meter.wall_s + wall
                else:
                    meter.background_count += 1
                    meter.background_cpu_s += cpu
                    meter.background_wall_s += wall

        Store.write = write  # type: ignore[method-assign]


def run_flow(flow: Any, spec: dict, *, judge: bool) -> dict:
    from rlaif.options import RunOptions

    overrides = {"engine": "openai", "base_url": [spec["url"]], "db": spec["db"], "model": spec["model"],
                 "concurrency": spec["concurrency"], "seed": spec["seed"]}
    options = RunOptions(prompts=spec["prompts"], constitution="harmless", rounds=1, max_tokens=spec["max_tokens"],
                         judge=judge, ignore_eos=spec["ignore_eos"])
    # The judge pass changes only `judge`, which is not part of the configuration: it resumes the first run.
    return flow(options=options, kind="bench", settings_overrides=overrides, show_progress=False)


def judge_pass(flow: Any, spec: dict) -> tuple[dict, float, dict]:
    """The flow again with the judge on, same database: chat rows come back from DuckDB, so only the judge's
    choice calls reach the server, and the prefix-cache counters around it are the judge prompts' alone."""
    from rlaif.engines.openai_endpoint import prefix_cache_stats

    started = time.perf_counter()
    summary = run_flow(flow, spec, judge=True)
    return summary, time.perf_counter() - started, prefix_cache_stats(spec["url"])


def stored_rows(db: str) -> tuple[list[dict], int]:
    """The chat rows (for the equivalence check) and the number of choice calls stored."""
    from rlaif.store import Store

    store = Store(db)
    rows = store.fetch("SELECT key, stage, prompt_id, messages, output, completion_tokens FROM generations "
                       "WHERE kind = 'chat' ORDER BY prompt_id, stage")
    choices = store.fetch("SELECT count(*) AS n FROM generations WHERE kind = 'choice'")[0]["n"]
    return rows, choices


def main(spec_path: str, result_path: str) -> None:
    from rlaif.environment import prepare_environment

    prepare_environment()  # what `rlaif` sets before any heavy import
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    from rlaif.engines.openai_endpoint import prefix_cache_stats

    before = prefix_cache_stats(spec["url"])
    started = time.perf_counter()
    # Importing the flow module imports Prefect: part of the project's start-up.
    import rlaif.flows.sl_cai

    flow = rlaif.flows.sl_cai.sl_cai_flow
    flushes = FlushMeter()
    flushes.install()
    summary = run_flow(flow, spec, judge=False)
    ended = time.perf_counter()
    flushed = vars(flushes).copy()
    after = prefix_cache_stats(spec["url"])
    judged, judge_s, after_judge = judge_pass(flow, spec) if spec["judge_pass"] else (None, None, after)
    rows, choice_calls = stored_rows(spec["db"])
    result = {
        "summary": summary, "started": started, "ended": ended, "total_s": ended - started,
        "judge_summary": judged, "judge_s": judge_s, "flushes": flushed,
        "prefix_before": before, "prefix_after": after, "prefix_after_judge": after_judge,
        "stored_tokens": sum(r["completion_tokens"] or 0 for r in rows), "choice_calls": choice_calls,
        "rows": rows,
    }
    Path(result_path).write_text(json.dumps(result, default=str), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: efficiency_project.py SPEC.json RESULT.json")
    main(sys.argv[1], sys.argv[2])
