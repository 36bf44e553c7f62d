"""What the report tests (tests/test_report.py) read the page with, and the rows they craft for it.

``Page`` parses the report's hooks (sections, stats, tables, figures, links). The crafted rows are what a fake
`rlaif demo` run cannot produce: failed attempts, data-quality flags, judged pairs that are not ties, canaries and
judge evaluations, training and RL runs with their metrics, monitor records and win rates.
"""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

from rlaif.store import Store, utcnow

CRAFTED = "crafted-run"
HOSTILE_ERROR = '<script>alert("x")</script> & co\nsecond line'
HOSTILE_CRITIQUE = "</div></section><script>alert(1)</script><img src=https://example.invalid/x.png>"
# (pair, principle, p_a_ab, p_a_ba, len(response_a), len(response_b)); p_a is their mean
PAIRS = [
    ("pair1", "harm", 0.9, 0.7, 300, 100),   # a chosen (0.8), consistent, chosen longer
    ("pair2", "harm", 0.6, 0.2, 100, 50),    # b chosen (0.4), position-biased, chosen shorter
    ("pair3", "honest", 0.3, 0.1, 40, 80),   # b chosen (0.2), consistent, chosen longer
    ("pair4", "harm", 0.7, 0.3, 60, 60),     # a tie (0.5): left out of the dataset
    ("pair5", "harm", 0.8, 0.6, 90, 30),     # two principles, mean 0.8: a chosen, consistent
    ("pair5", "honest", 0.9, 0.9, 90, 30),
    ("pair6", "harm", None, None, 10, 10),   # no verdict in either order
]
FIGURES = {"gen-throughput", "gen-latency", "gen-flags", "gen-principles", "gen-lengths", "gen-sft-dataset",
           "pref-p-chosen", "pref-position", "pref-length", "pref-canaries", "pref-judge-eval", "pref-calibration",
           "train-curves", "train-win-rate", "train-rl-monitor"}
# (mode, p_correct, correct) of the crafted canary checks; None: an unreadable answer
CANARIES = [("choice", 0.8, True), ("choice", 0.7, True), ("choice", 0.3, False), ("choice", None, None),
            ("contrast", 0.9, True), ("contrast", 0.95, True)]
AGREEMENT = {"choice": (0.55, 0.42, 0.67), "contrast": (0.95, 0.85, 0.99)}
TRAIN_STEPS = 20
# The crafted RL runs' monitor records: run -> [(step, kl, mean_length, proxy, judge)]. The PPO run's proxy rises
# while its judge falls after step 5 (one warning at step 10); the GRPO run has no judge and no warning.
MONITOR = {"train-ppo": [(0, 0.0, 40.0, 0.1, 0.2), (5, 1.5, 48.0, 0.5, 0.3), (10, 4.0, 60.0, 0.9, 0.1)],
           "train-grpo": [(0, 0.0, 30.0, -0.2, None), (10, 2.0, 27.0, 0.4, None)]}
RL_RUNS = [*MONITOR, "train-rloo"]  # newest first; the RLOO run ran without the monitor
HOSTILE_WARNING = 'proxy <i>gamed</i> & "judge" fell'
WIN = {"win_rate": 0.62, "win_rate_low": 0.51, "win_rate_high": 0.73, "lc_win_rate": 0.55, "lc_win_rate_low": 0.44,
       "lc_win_rate_high": 0.66}


class Page(HTMLParser):
    """The report's hooks: sections with their status and text, stats, tables, figures, every src/href."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.stats: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, str] = {}
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._section = self._table = self._figure = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "section" and "data-status" in a:
            self._section = a["id"]
            self.sections[a["id"]] = {"status": a["data-status"], "text": ""}
        elif tag == "dd" and "data-stat" in a:
            self.stats[a["data-stat"]] = a["data-value"]
        elif tag == "table":
            self._table = a["data-table"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "figure":
            self._figure = a["data-figure"]
        elif tag == "img" and self._figure:
            self.figures[self._figure] = a["src"]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and self._table:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "figure":
            self._figure = None
        elif tag == "section":
            self._section = None  # report sections do not nest: this closes the one open

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections[self._section]["text"] += data

    def stat(self, key: str) -> float:
        return float(self.stats[key])

    def table(self, key: str) -> dict[str, list[str]]:
        """A table's body rows keyed by their first cell (the header row left out)."""
        rows = self.tables[key][1:]
        assert rows, f"table {key} is empty"
        return {r[0]: r[1:] for r in rows}


def sql(db: Path, query: str, params: list | None = None) -> list[tuple]:
    with Store(db).connect(read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def crafted_rows(prompt_ids: list[str]) -> dict[str, list[dict]]:
    """Rows a fake demo run cannot make: failures, flags, judged pairs that are not ties, a hostile critique."""
    now = utcnow()
    attempts = [{"attempt_id": f"att-{n}", "key": "k-critique", "run_id": CRAFTED, "stage": "critique",
                 "number": n, "status": "failed", "error": "timeout after 30s", "latency_s": 30.0,
                 "started_at": now} for n in (1, 2, 3)]
    attempts += [
        {"attempt_id": "att-j1", "key": "k-judge", "run_id": CRAFTED, "stage": "judge", "number": 1,
         "status": "failed", "error": HOSTILE_ERROR, "latency_s": 0.2, "started_at": now},
        {"attempt_id": "att-j2", "key": "k-judge", "run_id": CRAFTED, "stage": "judge", "number": 2,
         "status": "ok", "error": None, "latency_s": 0.3, "started_at": now},
    ]
    generations = [{"key": "k-judge", "run_id": CRAFTED, "kind": "choice", "stage": "judge", "engine": "fake",
                    "model": "fake-model", "prompt_tokens": 50, "latency_s": 0.3, "created_at": now}]
    flags = [{"target": "revision", "target_id": f"chain{i}:1", "flag": "unchanged", "value": 1.0,
              "threshold": 0.95, "detail": "revision equals its input", "run_id": CRAFTED, "created_at": now}
             for i in range(3)]
    flags.append({"target": "revision", "target_id": "000-hostile:1", "flag": "refusal", "value": None,
                  "threshold": None, "detail": "", "run_id": CRAFTED, "created_at": now})
    flags.append({"target": "pair", "target_id": "pair1", "flag": "length_ratio", "value": 3.0,
                  "threshold": 2.5, "detail": "<b>3x</b>", "run_id": CRAFTED, "created_at": now})
    comparisons = []
    for pair, principle, ab, ba, len_a, len_b in PAIRS:
        p_a = None if ab is None else (ab + ba) / 2
        consistent = None if ab is None else ((ab > 0.5) == (ba > 0.5) and 0.5 not in (ab, ba))
        comparisons.append({
            "comparison_id": f"{pair}-{principle}", "pair_id": pair, "run_id": CRAFTED,
            "prompt_id": prompt_ids[0], "principle_id": principle, "response_a": "a" * len_a,
            "response_b": "b" * len_b, "p_a_ab": ab, "p_a_ba": ba, "p_a": p_a, "consistent": consistent,
            "method": "logprobs", "judge_model": "judge", "constitution_name": "harmless",
            "constitution_version": "v1", "created_at": now, "mode": "cot" if pair == "pair3" else None})
    revisions = [{"chain_id": "000-hostile", "round": 1, "run_id": CRAFTED, "prompt_id": prompt_ids[1],
                  "principle_id": "harm", "original": "orig <b>", "before": "orig <b>",
                  "critique": HOSTILE_CRITIQUE, "revision": "fixed & safe", "constitution_name": "harmless",
                  "constitution_version": "v1", "model": "fake-model", "created_at": now}]
    skipped = {"bad_rows": [{"run_id": CRAFTED, "source": "prompts.jsonl", "row_number": n, "column_name": "prompt",
                             "reason": "expected a string", "created_at": now} for n in (3, 7)],
               "skipped_prompts": [{"run_id": CRAFTED, "prompt_id": prompt_ids[2], "stage": "respond",
                                    "reason": "prompt longer than the context", "tokens": 9000,
                                    "context_length": 2048, "created_at": now}]}
    rl = rl_rows()
    training = training_rows()
    for table in ("train_runs", "train_metrics", "winrate_evals"):
        training[table] += rl.pop(table)
    return {"attempts": attempts, "generations": generations, "row_flags": flags, "comparisons": comparisons,
            "revisions": revisions, **skipped, **judge_rows(), **training, **rl}


def judge_rows() -> dict[str, list[dict]]:
    """Canary checks and a labelled judge evaluation in two modes (migration 005)."""
    now = utcnow()
    canaries = [{"canary_result_id": f"can{i}", "run_id": CRAFTED, "seq": i, "canary_id": f"canary-{i % 2}",
                 "pair_id": "cp", "principle_id": "harm", "mode": mode, "status": "ok" if p else "parse_failed",
                 "p_correct": p, "correct": correct, "consistent": correct, "judge_model": "judge",
                 "constitution_version": "v1", "created_at": now} for i, (mode, p, correct) in enumerate(CANARIES)]
    evals = [{"eval_id": f"eval-{mode}", "run_id": CRAFTED, "mode": mode, "pairs_source": "clear_pairs.jsonl",
              "judge_model": "judge", "pairs": 20, "decided": 20, "failed": 0, "agreement": a, "agreement_lo": lo,
              "agreement_hi": hi, "longer": 0.5, "longer_lo": 0.3, "longer_hi": 0.7, "created_at": now}
             for mode, (a, lo, hi) in AGREEMENT.items()]
    pairs = [{"run_id": CRAFTED, "mode": mode, "row": i + 1, "pair_id": f"ep{i}", "label": "AB"[i % 2],
              "p_a": (0.9 if i % 2 == 0 else 0.1) if mode == "contrast" else 0.5 + 0.02 * i, "status": "ok",
              "created_at": now} for mode in AGREEMENT for i in range(20)]
    return {"canary_results": canaries, "judge_evals": evals, "judge_eval_pairs": pairs}


def train_run(kind: str, dataset: str, minutes_ago: int, steps: int = TRAIN_STEPS) -> dict:
    """A completed training run's row, its final model in /tmp/KIND/final."""
    return {"run_id": f"train-{kind}", "kind": kind, "status": "completed", "config": "{}", "base_model": "tiny",
            "dataset": dataset, "data_version": "v" * 12, "data_rows": 40, "train_rows": 36, "eval_rows": 4,
            "out_dir": f"/tmp/{kind}", "world_size": 1, "device": "cpu", "precision": "fp32", "total_steps": steps,
            "steps_done": steps, "resumes": 0, "final_path": f"/tmp/{kind}/final",
            "started_at": utcnow() - timedelta(minutes=minutes_ago)}


def training_rows() -> dict[str, list[dict]]:
    """Two training runs with metrics over steps, and one win-rate evaluation of the second (migration 006)."""
    now = utcnow()
    runs = [train_run("sft", "sft_dataset", 10), train_run("dpo", "preference_dataset", 0)]  # the DPO run is the latest
    metrics = [{"run_id": "train-dpo", "phase": "step", "step": step, "name": name, "value": value,
                "created_at": now}
               for step in range(1, TRAIN_STEPS + 1)
               for name, value in (("loss", 0.7 - 0.01 * step), ("reward_accuracy", 0.5 + 0.02 * step),
                                   ("reward_margin", 0.05 * step), ("lr", 1e-5))]
    metrics += [{"run_id": "train-sft", "phase": phase, "step": step, "name": "loss", "value": 2.0 / (1 + step),
                 "created_at": now} for phase in ("step", "eval") for step in range(0, TRAIN_STEPS + 1, 5)]
    evals = [{"eval_id": "ev1", "run_id": CRAFTED, "policy": "/tmp/dpo/final", "base": "tiny", "judge_model": "judge",
              "constitution_version": "v1", "split": "eval", "prompts": 5, "wins": 3, "ties": 0, "losses": 2,
              "created_at": now, **WIN}]
    judged = [{"eval_id": "ev1", "prompt_id": f"p{i}", "principle_id": "harm", "policy_output": "x" * (10 + i),
               "base_output": "y" * 10, "p_policy": 0.3 + 0.1 * i, "len_policy": 10 + i, "len_base": 10,
               "created_at": now} for i in range(5)]
    return {"train_runs": runs, "train_metrics": metrics, "winrate_evals": evals, "winrate_judgements": judged}


def rl_rows() -> dict[str, list[dict]]:
    """Two RL runs older than the DPO run, their step metrics and monitor records, one warning, and evaluations
    of the PPO policy and of a best-of-N baseline (migration 007)."""
    now = utcnow()
    runs = [train_run(run.removeprefix("train-"), "prompts", 2 * (i + 1), steps=10) for i, run in enumerate(RL_RUNS)]
    metrics = [{"run_id": run, "phase": "step", "step": step, "name": name, "value": value, "created_at": now}
               for run in RL_RUNS for step in range(1, 11)
               for name, value in (("reward", 0.1 * step), ("kl", 0.3 * step), ("response_length", 40.0 + step),
                                   ("reward/rule:m:f", float("nan")))]
    records = [{"run_id": run, "step": step, "prompts": 8, "kl": kl, "mean_length": length,
                "length_drift": length / points[0][2], "proxy_score": proxy, "judge_score": judge,
                "proxy_source": "rule:m:f", "judge_model": None if judge is None else "judge", "created_at": now}
               for run, points in MONITOR.items() for step, kl, length, proxy, judge in points]
    warnings_ = [{"run_id": "train-ppo", "step": 10, "kind": "proxy_up_judge_down", "since_step": 5,
                  "proxy_delta": 0.4, "judge_delta": -0.2, "message": HOSTILE_WARNING, "created_at": now}]
    evals = [{"eval_id": eval_id, "run_id": CRAFTED, "policy": policy, "base": "tiny", "judge_model": "judge",
              "constitution_version": "v1", "split": "eval", "prompts": 5, "win_rate": rate, "win_rate_low": rate - 0.1,
              "win_rate_high": rate + 0.1, "lc_win_rate": rate - 0.05, "lc_win_rate_low": rate - 0.2,
              "lc_win_rate_high": rate + 0.1, "created_at": now - timedelta(minutes=minutes)}
             for eval_id, policy, rate, minutes in (("ev-ppo", "/tmp/ppo/final", 0.58, 1),
                                                    ("ev-bon", "best-of-n:4:rule:m:f:tiny", 0.66, 2),
                                                    ("ev-bon-old", "best-of-n:2:rule:m:f:tiny", 0.3, 3))]
    return {"train_runs": runs, "train_metrics": metrics, "overopt_records": records, "overopt_warnings": warnings_,
            "winrate_evals": evals}


def demo_comparisons(db: Path) -> int:
    """The demo run's judged pairs (one comparison each: one principle per pair); there must be some."""
    ((n,),) = sql(db, "SELECT count(*) FROM comparisons WHERE run_id <> ? AND p_a_ab IS NOT NULL", [CRAFTED])
    assert n > 0
    return n


def demo_run(db: Path) -> str:
    ((run_id,),) = sql(db, "SELECT run_id FROM runs WHERE kind = 'demo'")
    return run_id
