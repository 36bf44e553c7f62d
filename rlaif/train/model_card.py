"""The model card (``README.md`` in the Hugging Face Hub's format) in every trained model folder.

A YAML header the Hub reads (``library_name``, ``base_model``, ``pipeline_tag``, ``tags``), then what a reader
needs to trust or reproduce the model, all from the database rather than from memory: the base model; the dataset
view with its version (a hash of its row keys) and row counts; the loss and every option; the final metrics of
the run (``train_metrics``: the last step and the last evaluation pass); and each win rate stored for this folder
(``winrate_evals``) with the judge model and constitution version that measured it. The training run writes the
card when it saves the model; ``rlaif eval winrate`` writes it again, so a win rate measured later appears in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlaif.config import EMBEDDED_MODEL

CARD_FILE = "README.md"
# The Hub's id of the embedded model, so `base_model` links to it; other bases are named as the run named them.
HUB_IDS = {EMBEDDED_MODEL: f"HuggingFaceTB/{EMBEDDED_MODEL}"}

LOSSES = {
    "sft": "cross-entropy on the assistant tokens (SL-CAI, Bai et al. 2022)",
    "rm": "soft-label Bradley-Terry, -[p log s(r_c - r_r) + (1 - p) log s(r_r - r_c)] (Bai et al. 2022; Ouyang "
          "et al. 2022, eq. 1), rewards normalised to mean 0, std 1 on the reference answers",
    "dpo": "DPO, -log s(beta [log-ratio of chosen - log-ratio of rejected]) (Rafailov et al. 2023)",
    "cdpo": "conservative DPO with the judge's soft label (Mitchell 2023)",
    "ipo": "IPO, (log-ratio margin - 1 / (2 beta))^2 (Azar et al. 2023)",
    "dpo-norm": "DPO on length-normalised log-ratios",
    "simpo": "SimPO, reference-free, length-normalised with target margin gamma (Meng et al. 2024)",
    "ppo": "PPO's clipped objective with a value head, GAE and an adaptive KL penalty (Schulman et al. 2017; "
           "Ziegler et al. 2019)",
    "grpo": "group-relative policy optimisation, the baseline from K samples per prompt (Shao et al. 2024)",
    "rloo": "REINFORCE leave-one-out, the baseline from the other K - 1 samples (Ahmadian et al. 2024)",
}
PIPELINE = {"rm": "text-classification"}


def run_of(folder: Path) -> str | None:
    """The training run a model folder came from (its ``rlaif_train.json`` or ``reward_model.json``)."""
    for name in ("rlaif_train.json", "reward_model.json"):
        path = Path(folder) / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")).get("run_id")
    return None


def write_model_card(store: Any, folder: Path) -> Path | None:
    """Write ``folder/README.md`` from the database; None when the folder is not a model rlaif trained here."""
    folder = Path(folder).resolve()
    run_id = run_of(folder)
    runs = store.fetch("SELECT * FROM train_runs WHERE run_id = ?", [run_id]) if run_id else []
    if not runs:
        return None
    metrics = store.fetch(
        "SELECT phase, step, name, value FROM train_metrics m WHERE run_id = ? AND step = "
        "(SELECT max(step) FROM train_metrics WHERE run_id = m.run_id AND phase = m.phase) ORDER BY phase, name",
        [run_id])
    winrates = store.fetch("SELECT * FROM winrate_evals WHERE policy = ? ORDER BY created_at", [str(folder)])
    path = folder / CARD_FILE
    path.write_text(model_card(runs[0], metrics, winrates), encoding="utf-8")
    return path


def model_card(run: dict, metrics: list[dict], winrates: list[dict]) -> str:
    """The card's text for one ``train_runs`` row, its final metrics and its ``winrate_evals`` rows."""
    options = json.loads(run["config"]) if isinstance(run["config"], str) else dict(run["config"])
    loss = options.get("loss") or options.get("estimator") or run["kind"]
    base = run["base_model"]
    tags = ["rlaif", "constitutional-ai", run["kind"], *([loss] if loss != run["kind"] else [])]
    header = ["---", "library_name: transformers", f"base_model: {HUB_IDS.get(base, base)}",
              f"pipeline_tag: {PIPELINE.get(run['kind'], 'text-generation')}", "tags:", *[f"- {t}" for t in tags],
              "---", ""]
    body = [
        f"# {run['kind']} model trained with rlaif", "",
        f"Training run `{run['run_id']}`, {run['status']}, {run['steps_done']} of {run['total_steps']} steps on "
        f"{run['world_size']} process(es), {run['device']} {run['precision']}, finished {run['finished_at']}.", "",
        "## Base model and data", "",
        f"- Base model: `{base}`",
        f"- Data: the `{run['dataset']}` view, version `{run['data_version']}` ({run['data_rows']} rows: "
        f"{run['train_rows']} train, {run['eval_rows']} eval)", "",
        "## Loss and settings", "",
        f"Loss: {LOSSES.get(loss, loss)}.", "",
        "| option | value |", "|---|---|",
        *[f"| {k} | `{json.dumps(v)}` |" for k, v in sorted(options.items())], "",
        "## Final metrics", "",
        *_metrics_table(metrics), "",
        "## Win rate", "",
        *_winrate_lines(winrates), "",
        "Made by rlaif; every figure above is in the project's DuckDB file (`train_runs`, `train_metrics`, "
        "`winrate_evals`).", "",
    ]
    return "\n".join(header + body)


def _metrics_table(metrics: list[dict]) -> list[str]:
    if not metrics:
        return ["No metrics were stored."]
    rows = [f"| {m['phase']} | {m['step']} | {m['name']} | {_number(m['value'])} |" for m in metrics]
    return ["Each phase's last measurement (`step`: the last optimizer step; `eval`: the held-out split).", "",
            "| phase | step | metric | value |", "|---|---|---|---|", *rows]


def _winrate_lines(winrates: list[dict]) -> list[str]:
    if not winrates:
        return ["Not measured yet: `rlaif eval winrate --policy THIS_FOLDER --prompts ...` adds it here."]
    rows = [f"| `{w['base']}` | `{w['judge_model']}` (constitution {w['constitution_version']}) | {w['split']} | "
            f"{w['prompts']} | {_number(w['win_rate'])} [{_number(w['win_rate_low'])}, {_number(w['win_rate_high'])}]"
            f" | {_number(w['lc_win_rate'])} | {w['wins']}/{w['ties']}/{w['losses']} |" for w in winrates]
    return ["Against the base, judged in both orders (0.5 = no better than the base; 95% intervals).", "",
            "| base | judge | split | prompts | win rate | length-controlled | won/tied/lost |",
            "|---|---|---|---|---|---|---|", *rows]


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"
