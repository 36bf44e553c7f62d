"""``rlaif demo``: the whole spine on the built-in prompts, then what landed in DuckDB and how to query it."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import TYPE_CHECKING

from rlaif.resources import data_dir

if TYPE_CHECKING:
    from rlaif.config import Settings

EXAMPLE_QUERIES = (
    ("SFT rows: each prompt with its revised answer",
     "SELECT prompt, completion FROM sft_dataset LIMIT 5"),
    ("Preference rows: the judge's soft label and whether both orders agreed",
     "SELECT prompt, p_chosen, consistent, principles FROM preference_dataset ORDER BY p_chosen DESC LIMIT 5"),
    ("Engine calls per stage, with tokens and latency",
     "SELECT stage, count(*) AS calls, sum(completion_tokens) AS tokens, round(avg(latency_s), 2) AS avg_s "
     "FROM generations GROUP BY stage ORDER BY stage"),
)

COUNTED = ("runs", "prompts", "generations", "attempts", "revisions", "comparisons", "sft_dataset",
           "preference_dataset")


def load_flow_module(name: str) -> ModuleType:
    """Import ``flows/<name>.py`` from wherever the package ships it (checkout or wheel)."""
    path = data_dir("flows") / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rlaif_flows_{name}", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_demo(settings: "Settings", *, constitution: str = "harmless", limit: int | None = None, rounds: int = 1,
             max_tokens: int = 160, use_prefect: bool = True, show_progress: bool = True) -> tuple[str, dict]:
    """Run the demo; return the text to print (summary, row counts, example queries) and the run summary."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.pipeline import CaiConfig
    from rlaif.prompts import load_prompts

    # Validate everything the user controls before starting a flow, so mistakes are one clear line.
    path = resolve_constitution(constitution)
    loaded = load_constitution(path)
    config = CaiConfig(rounds=rounds, max_tokens=max_tokens)
    prompts = load_prompts(limit=limit)
    if use_prefect:
        flow = load_flow_module("cai").cai_flow
        overrides = {k: str(v) if k in ("db", "cache_dir") else v for k, v in settings.model_dump().items()}
        summary = flow(constitution=str(path), limit=limit, rounds=rounds, max_tokens=max_tokens, kind="demo",
                       settings_overrides=overrides, show_progress=show_progress)
    else:
        from rlaif.runner import run_generation

        summary = run_generation(settings, loaded, prompts, config, show_progress=show_progress).as_dict()
    return format_report(settings, summary), summary


def format_report(settings: "Settings", summary: dict) -> str:
    from rlaif.store import Store

    store = Store(settings.db)
    counts = store.fetch(" UNION ALL ".join(f"SELECT '{t}' AS name, count(*) AS n FROM {t}" for t in COUNTED))
    lines = [
        f"run {summary['run_id']}: {summary['prompts']} prompts, {summary['revisions']} revised, "
        f"{summary['comparisons']} judged, {summary['empty_outputs']} empty, {summary['failed_prompts']} failed; "
        f"{summary['output_tokens']} tokens "
        f"in {summary['seconds']:.1f} s ({summary['tokens_per_s']:.1f} tok/s)",
        "",
        f"rows in {settings.db}:",
        *[f"  {r['name']:20} {r['n']}" for r in counts],
        "",
        "try:",
    ]
    for title, query in EXAMPLE_QUERIES:
        lines += [f"  # {title}", f'  rlaif sql "{query}"']
    return "\n".join(lines)
