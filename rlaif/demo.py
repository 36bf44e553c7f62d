"""``rlaif demo``: a preset of ``rlaif generate sft`` on the built-in prompts, then what landed and how to query it.

The built-in set mixes red-team prompts with helpfulness prompts (``category: helpful``), which keep their
unrevised answer as the paper mixes helpfulness samples into its SFT data. The judge is on, so the demo fills
``preference_dataset`` too. By default it takes the first ``DEMO_LIMIT`` prompts, sized so the whole command
(model load and Prefect start included) stays within a few minutes on two CPU cores; ``--all`` takes the whole
set, and resumes the earlier demo run rather than starting over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.options import RunOptions

# Measured on 2 shared CPU cores with the embedded model (docs/benchmarks.md, "rlaif demo"): see README.
DEMO_LIMIT = 8
# Tokens per generated turn in the demo: the run default. At 160 SmolLM2 stopped mid-answer on 58 of its first 75
# built-in prompts (those that finished took 72 tokens on average, at most 139), and a cut answer is flagged
# 'truncated' and leaves sft_dataset. 512 did not cure it (6 of the default demo's 12 answers and revisions still ran
# to the limit: the small model rambles) and made the first try 6.4 minutes instead of about 1.5, so the demo keeps
# the quick setting and its summary says how to raise it (docs/benchmarks.md, "Helpful answers finishing").
DEMO_MAX_TOKENS = 160

EXAMPLE_QUERIES = (
    ("SFT rows: each prompt with its revised (or, for helpful prompts, its unrevised) answer",
     "SELECT prompt, completion, helpful FROM sft_dataset LIMIT 5"),
    ("Preference rows: the judge's soft label and whether both orders agreed (NULL in modes without orders)",
     "SELECT prompt, p_chosen, consistent, principles FROM preference_dataset ORDER BY p_chosen DESC LIMIT 5"),
    ("Rows the data-quality flags left out of sft_dataset, and why",
     "SELECT prompt, completion, flags FROM sft_candidates WHERE len(flags) > 0 LIMIT 5"),
    ("Engine calls per stage, with tokens and latency",
     "SELECT stage, count(*) AS calls, sum(completion_tokens) AS tokens, round(avg(latency_s), 2) AS avg_s "
     "FROM generations GROUP BY stage ORDER BY stage"),
)

COUNTED = ("runs", "prompts", "generations", "attempts", "responses", "revisions", "comparisons", "row_flags",
           "sft_dataset", "preference_dataset")


def demo_options(*, limit: int | None = DEMO_LIMIT, **given: Any) -> "RunOptions":
    """The demo's run options: the built-in prompts, helpful ones marked, the judge on; ``given`` overrides."""
    from rlaif.options import RunOptions
    from rlaif.prompts import demo_prompts_path

    given = {k: v for k, v in given.items() if v is not None}
    return RunOptions.parse(prompts=str(demo_prompts_path()), helpful_column="category", judge=True, limit=limit,
                            **{"max_tokens": DEMO_MAX_TOKENS, **given})


def format_report(settings: "Settings", summary: dict, options: "RunOptions") -> str:
    """Row counts, example queries, and how to run the whole set."""
    from rlaif.store import Store

    store = Store(settings.db)
    counts = store.fetch(" UNION ALL ".join(f"SELECT '{t}' AS name, count(*) AS n FROM {t}" for t in COUNTED))
    lines = ["", f"rows in {settings.db}:", *[f"  {r['name']:20} {r['n']}" for r in counts], "", "try:"]
    for title, query in EXAMPLE_QUERIES:
        lines += [f"  # {title}", f'  rlaif sql "{query}"']
    lines += ["  rlaif stats                      # how many rows each data-quality flag hit"]
    if options.limit is not None:
        lines += ["", f"this was the first {options.limit} built-in prompts; the whole set (105, tens of minutes "
                      "on 2 CPU cores, resuming this run):",
                  "  rlaif demo --all",
                  "or the same on your own prompts:",
                  f"  rlaif generate sft --prompts {options.prompts} --helpful-column category --judge"]
    return "\n".join(lines)
