"""The dataset card written beside every export: a ``README.md`` in the Hugging Face Hub's card format.

A YAML header the Hub reads (configs naming the data files, license, task categories, tags, size), then what a
user needs to trust the data: the constitution (name, version, principles), the models in both roles (the policy
that answered; the feedback model that critiqued, revised or judged), the judge's mode with its measured agreement
and the baselines beside it (from ``rlaif judge eval``, when the database has them), the flags that left rows out,
the row counts, and the command that made it.

Every figure comes from the database, read through the export's own raw query with the same filters, so the card
describes exactly the rows written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError
from rlaif.exports.formats import Export, Filters, bind, export_query

MARKER = "<!-- written by rlaif export: replaced by the next export into this folder -->"
_TASKS = {"sft": ["text-generation"], "prefs": ["text-generation"], "kto": ["text-generation"],
          "rm": ["text-classification"]}
_TAGS = {"sft": ["sft"], "prefs": ["dpo", "preference"], "kto": ["kto", "unpaired-preference"],
         "rm": ["reward-modeling", "preference"]}
_TITLES = {"sft": "Supervised fine-tuning conversations (critique and revision)",
           "prefs": "Preference pairs judged by an AI feedback model",
           "kto": "Unpaired answers labelled desirable or not by an AI feedback model",
           "rm": "Preference pairs for reward-model training"}
_FLAG_TARGETS = {"sft": ("revision", "response"), "prefs": ("pair",), "kto": ("pair",), "rm": ("pair",)}


@dataclass
class CardFacts:
    """What the card states, read from the database (``gather``)."""

    splits: dict[str, int]
    constitutions: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    judges: list[dict[str, Any]] = field(default_factory=list)  # judge model, mode, pairs, eval figures
    flags: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)  # dataset-specific counts (votes, labels, ...)


def gather(con: Any, export: Export, filters: Filters) -> CardFacts:
    """Read the card's figures over the rows of ``export`` (its raw query, with the same filters)."""
    raw = export_query(export.dataset, "raw")

    def rows(sql: str, extra: Sequence[Any] = ()) -> list[dict[str, Any]]:
        text = sql.replace("{raw}", f"({raw})")
        params = {**(bind(raw, filters) if "{raw}" in sql else {}), **{f"p{i}": v for i, v in enumerate(extra)}}
        cur = con.execute(text, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    by_split = rows("SELECT split, count(*) AS n FROM {raw} GROUP BY 1 ORDER BY 1")
    splits = {r["split"] or "unknown": r["n"] for r in by_split}
    constitutions = rows("SELECT constitution_name AS name, constitution_version AS version, count(*) AS n "
                         "FROM {raw} GROUP BY 1, 2 ORDER BY 3 DESC")
    run_ids = [r["run_id"] for r in rows("SELECT DISTINCT run_id FROM {raw} ORDER BY 1")]
    runs = rows("SELECT run_id, kind, engine, model, feedback_engine, feedback_model, params->>'constitution' AS "
                "constitution, started_at FROM runs WHERE list_contains($p0, run_id) ORDER BY started_at", [run_ids])
    flags = rows("SELECT target, flag, count(*) AS n FROM row_flags WHERE list_contains($p0, target) AND "
                 "list_contains($p1, run_id) GROUP BY 1, 2 ORDER BY 3 DESC, 2",
                 [list(_FLAG_TARGETS[export.dataset]), run_ids])
    facts = CardFacts(splits, constitutions, runs, flags=flags)
    if export.dataset == "sft":
        (counts,) = rows("SELECT count(*) FILTER (WHERE helpful) AS helpful_unrevised, "
                         "count(DISTINCT policy_model) AS policy_models FROM {raw}")
        facts.extra = {"helpful, kept unrevised": counts["helpful_unrevised"]}
        facts.runs = [{**r, "roles": rows("SELECT DISTINCT policy_model AS policy, model AS feedback FROM {raw} "
                                          "WHERE run_id = $p0", [r["run_id"]])} for r in runs]
        return facts
    facts.judges = [{**j, "eval": _judge_eval(rows, j["judge_model"], j["mode"])} for j in rows(
        "SELECT judge_model, coalesce(mode, 'choice') AS mode, count(*) AS n FROM {raw} GROUP BY 1, 2 ORDER BY 3 DESC")]
    if export.dataset == "kto":
        (counts,) = rows("SELECT count(*) FILTER (WHERE label) AS d, count(*) FILTER (WHERE NOT label) AS u FROM {raw}")
        facts.extra = {"desirable": counts["d"], "undesirable": counts["u"]}
    else:
        (counts,) = rows("SELECT count(*) FILTER (WHERE p_chosen IS NULL) AS votes, "
                         "count(*) FILTER (WHERE consistent) AS consistent FROM {raw}")
        facts.extra = {"decided by votes (p_chosen NULL)": counts["votes"],
                       "both orders agreed": counts["consistent"]}
    return facts


def _judge_eval(rows: Any, judge_model: str, mode: str) -> dict[str, Any] | None:
    """The latest ``rlaif judge eval`` of this judge model and mode: agreement with the labels and its baselines."""
    found = rows("SELECT pairs_source, pairs, decided, agreement, agreement_lo, agreement_hi, consistency, longer, "
                 "shorter, constitution_version, created_at FROM judge_evals WHERE judge_model = $p0 AND mode = $p1 "
                 "ORDER BY created_at DESC LIMIT 1", [judge_model, mode])
    return found[0] if found else None


def render(export: Export, facts: CardFacts, *, command: str, license: str = "other") -> str:
    """The card's text: YAML header, then the sections listed in the module docstring."""
    total = sum(facts.splits.values())
    parts = [_header(export, total, license), MARKER, f"# {_TITLES[export.dataset]}", "",
             f"Made with rlaif (Constitutional AI / RLAIF data generation): the **{export.dataset}"
             f"** dataset in the **{export.format}** format, {total} rows. {_format_note(export)}", ""]
    parts += _constitution_section(facts) + _models_section(export, facts)
    if facts.judges:
        parts += _judge_section(facts)
    parts += _rows_section(facts) + ["## How it was made", "", "```", command, "```", ""]
    return "\n".join(parts)


def _header(export: Export, total: int, license: str) -> str:
    split = "train"  # one file holds what the filters kept; the card names it one split
    config = {"config_name": export.dataset, "data_files": [{"split": split, "path": p} for p in export.data_files]}
    lines = ["---", f"license: {json.dumps(license)}", "task_categories:"]
    lines += [f"- {t}" for t in _TASKS[export.dataset]]
    lines += ["tags:"] + [f"- {t}" for t in ["rlaif", "constitutional-ai", "synthetic", *_TAGS[export.dataset]]]
    lines += ["size_categories:", f"- {_size_category(total)}", "configs:", f"- config_name: {config['config_name']}",
              "  data_files:"]
    lines += [f"  - split: {f['split']}\n    path: {json.dumps(f['path'])}" for f in config["data_files"]]
    return "\n".join([*lines, "---"])


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    return next((label for bound, label in bounds if n < bound), "10M<n<100M")


def _format_note(export: Export) -> str:
    if export.format == "raw":
        return "Raw format: strings and lineage columns, for analysis; train from the `trl` format."
    return {"sft": "Columns: `messages` (TRL's conversational language-modeling format; SFTTrainer applies the chat "
                   "template).",
            "prefs": "Columns: `prompt`, `chosen`, `rejected` as message lists (TRL's conversational preference "
                     "format, for DPOTrainer) and `p_chosen`, the judge's probability that `chosen` is better.",
            "kto": "Columns: `prompt`, `completion` as message lists and `label` (TRL's conversational unpaired "
                   "preference format, for KTOTrainer).",
            "rm": "Columns: `chosen`, `rejected` as whole conversations (TRL's implicit-prompt preference format, "
                  "for RewardTrainer) and `p_chosen`, the judge's soft label; there is no `margin` column."}[
        export.dataset]


def _constitution_section(facts: CardFacts) -> list[str]:
    out = ["## Constitution", ""]
    for c in facts.constitutions:
        out.append(f"- **{c['name']}**, version `{c['version']}` ({c['n']} rows)")
        loaded = _load_constitution(c["name"], c["version"], facts.runs)
        if loaded is None:
            out.append("  - (its file is not at hand, so its principles are not listed)")
            continue
        out += [f"  - principle `{p.id}`: {_one_line(p.critique_request)}" for p in loaded.principles]
        out += [f"  - judge principle `{p.id}`: {_one_line(p.question)}" for p in loaded.judge_principles]
    return [*out, ""] if facts.constitutions else [*out, "No rows, so no constitution.", ""]


def _load_constitution(name: str, version: str, runs: list[dict[str, Any]]) -> Any:
    """The constitution file of this version, tried from the runs' options and the shipped files; else None."""
    from rlaif.constitution import load_constitution, resolve_constitution

    for candidate in dict.fromkeys([*(r.get("constitution") for r in runs if r.get("constitution")), name]):
        try:
            loaded = load_constitution(resolve_constitution(candidate))
        except (ConfigError, OSError):
            continue
        if loaded.version == version:
            return loaded
    return None


def _models_section(export: Export, facts: CardFacts) -> list[str]:
    out = ["## Models", "", "| run | kind | policy (answers) | feedback (critique, revision, judge) |",
           "|---|---|---|---|"]
    for r in facts.runs:
        roles = r.get("roles") or [{"policy": r.get("model"), "feedback": r.get("feedback_model")}]
        for role in roles:
            out.append(f"| `{r['run_id']}` | {r['kind']} | {role['policy'] or '?'} ({r.get('engine') or '?'}) | "
                       f"{role['feedback'] or '?'} ({r.get('feedback_engine') or '?'}) |")
    return [*out, ""]


def _judge_section(facts: CardFacts) -> list[str]:
    out = ["## Judge", "", "| judge model | mode | rows | agreement with labels (95% CI) | longer wins | "
           "shorter wins | pairs (source) |", "|---|---|---|---|---|---|---|"]
    for j in facts.judges:
        e = j["eval"]
        if e is None:
            out.append(f"| {j['judge_model']} | {j['mode']} | {j['n']} | not measured (`rlaif judge eval`) | | | |")
            continue
        out.append(f"| {j['judge_model']} | {j['mode']} | {j['n']} | {_pct(e['agreement'])} ({_pct(e['agreement_lo'])}"
                   f"-{_pct(e['agreement_hi'])}) | {_pct(e['longer'])} | {_pct(e['shorter'])} | {e['pairs']} "
                   f"({e['pairs_source'] or '?'}) |")
    return [*out, "", "Agreement is the share of labelled pairs where the judge, read in both orders, preferred the "
            "labelled answer; the two baselines pick the longer or the shorter answer of each pair.", ""]


def _rows_section(facts: CardFacts) -> list[str]:
    out = ["## Rows", "", "| split | rows |", "|---|---|"] + [f"| {s} | {n} |" for s, n in facts.splits.items()]
    out += ["", *[f"- {name}: {n}" for name, n in facts.extra.items()], ""]
    if facts.flags:
        out += ["Rows left out by data-quality flags (in the runs exported):", "", "| target | flag | rows |",
                "|---|---|---|", *[f"| {f['target']} | {f['flag']} | {f['n']} |" for f in facts.flags], ""]
    else:
        out += ["No rows of these runs were flagged.", ""]
    return out


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.1f}%"


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_card_target(folder: Path) -> Path:
    """The card's path in ``folder``, refused (before anything is written) when a README there is not rlaif's."""
    path = folder / "README.md"
    if path.exists() and MARKER not in path.read_text(encoding="utf-8", errors="replace"):
        raise ConfigError(f"{path}: exists and was not written by rlaif; export into another folder to keep it")
    return path


def write_card(folder: Path, text: str) -> Path:
    """Write ``README.md`` in ``folder``; a README that rlaif did not write is never overwritten."""
    path = check_card_target(folder)
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
