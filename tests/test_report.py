"""`rlaif report` on a real small run: sections and numbers against SQL over the same database, escaping, a page
that fetches nothing, empty sections in one line, and the page in headless Chromium without console errors.

The data: `rlaif demo` on the fake engine into a real DuckDB file (4 prompts, 2 rounds), plus crafted rows for
what a fake run cannot produce: failed attempts, data-quality flags, and judged pairs that are not ties.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rlaif.cli import main
from rlaif.report import beside, write_report
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


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "rlaif.duckdb"
    with pytest.MonkeyPatch.context() as mp:  # no RLAIF_* from the environment, no rlaif.toml from the cwd
        mp.setenv("RLAIF_CONFIG", str(path.parent / "absent.toml"))
        for name in [n for n in os.environ if n.startswith("RLAIF_") and n != "RLAIF_CONFIG"]:
            mp.delenv(name)
        assert main(["--db", str(path), "--engine", "fake", "demo", "--limit", "4", "--rounds", "2",
                     "--no-prefect", "--no-progress"]) == 0
    assert Page(beside(path).read_text(encoding="utf-8")).stat("runs_total") == 1  # the demo wrote its run's report
    store = Store(path)
    prompt_ids = [p for (p,) in sql(path, "SELECT prompt_id FROM prompts ORDER BY prompt_id")]
    assert len(prompt_ids) == 4
    store.upsert_run({"run_id": CRAFTED, "kind": "crafted", "status": "partial", "started_at": utcnow(),
                      "finished_at": utcnow()})
    store.write(crafted_rows(prompt_ids))
    return path


@pytest.fixture(scope="module")
def report(db, tmp_path_factory) -> tuple[Path, Page]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib's complaints (an empty legend, ...) are bugs here
        out = write_report(db, tmp_path_factory.mktemp("out") / "report.html")
    return out, Page(out.read_text(encoding="utf-8"))


def demo_comparisons(db: Path) -> int:
    """The demo run's judged pairs (one comparison each: one principle per pair); there must be some."""
    ((n,),) = sql(db, "SELECT count(*) FROM comparisons WHERE run_id <> ? AND p_a_ab IS NOT NULL", [CRAFTED])
    assert n > 0
    return n


def demo_run(db: Path) -> str:
    ((run_id,),) = sql(db, "SELECT run_id FROM runs WHERE kind = 'demo'")
    return run_id


def test_every_section_is_drawn_or_says_in_one_line_why_not(report):
    _, page = report
    assert page.sections, "no sections parsed"
    assert [k for k, s in page.sections.items() if s["status"] == "empty"] == []  # the crafted rows fill them all
    assert set(page.figures) == FIGURES
    for key in sorted(FIGURES):
        assert page.figures[key].startswith("data:image/png;base64,") and len(page.figures[key]) > 2000


def test_generation_numbers_match_sql(db, report):
    _, page = report
    ((rows, tokens),) = sql(db, "SELECT count(*), sum(completion_tokens) FROM generations")
    assert (page.stat("generations"), page.stat("completion_tokens")) == (rows, tokens)
    assert page.stat("runs_total") == sql(db, "SELECT count(*) FROM runs")[0][0] == 2
    ((failed,),) = sql(db, "SELECT count(*) FROM attempts WHERE status = 'failed'")
    assert page.stat("failed_attempts") == failed == 4
    assert page.stat("unresolved_requests") == 1  # k-judge succeeded on its second try; k-critique never did
    by_stage = sql(db, "SELECT stage, count(*), count(*) FILTER (status = 'failed') FROM attempts GROUP BY ALL")
    assert {s: [int(n), int(f)] for s, (n, f, _) in page.table("failures-by-stage").items()} == {
        s: [n, f] for s, n, f in by_stage}
    assert page.table("failures-by-error")["critique"][:3] == ["timeout after 30s", "3", "1"]
    assert (page.stat("bad_rows"), page.stat("skipped_prompts")) == (2, 1)
    assert page.table("bad-rows")["prompts.jsonl"] == ["prompt", "expected a string", "2", "3"]
    flags = {(t, f): n for t, f, n in sql(db, "SELECT target, flag, count(*) FROM row_flags GROUP BY ALL")}
    shown = {(row[0], row[1]): int(row[2]) for row in page.tables["flags"][1:]}
    assert shown == flags == {("revision", "unchanged"): 3, ("revision", "refusal"): 1, ("pair", "length_ratio"): 1}
    revised = dict(sql(db, "SELECT principle_id, count(*) FROM revisions GROUP BY ALL"))
    judged = dict(sql(db, "SELECT principle_id, count(*) FROM comparisons GROUP BY ALL"))
    principles = page.table("principles")
    assert set(principles) == set(revised) | set(judged)
    for p, (n_revised, n_judged) in principles.items():
        assert (int(n_revised), int(n_judged)) == (revised.get(p, 0), judged.get(p, 0))
    lengths = page.table("lengths")
    ((sft_rows, flagged),) = sql(db, "SELECT (SELECT count(*) FROM sft_dataset), "
                                     "(SELECT count(*) FROM sft_candidates WHERE final AND len(flags) > 0)")
    assert (page.stat("sft_rows"), page.stat("sft_flagged")) == (sft_rows, flagged) and flagged == 1
    in_round_2 = sql(db, "SELECT count(*) FROM revisions WHERE round = 2")[0][0]
    assert set(lengths) == {"1", "2"} and lengths["2"][0] == str(in_round_2) and in_round_2 > 0


def test_preference_numbers_match_sql(db, report):
    _, page = report
    chosen = [p for (p,) in sql(db, "SELECT p_chosen FROM preference_dataset")]
    # pair2, 3, 5: the tie, the unjudged pair and pair1 (flagged: length_ratio) are left out
    assert len(chosen) == page.stat("pairs") == 3
    assert page.stat("mean_p_chosen") == pytest.approx(sum(chosen) / len(chosen)) == pytest.approx(2.2 / 3)
    both = sql(db, "SELECT p_a_ab, p_a_ba, consistent FROM comparisons WHERE p_a_ab IS NOT NULL")
    demo = demo_comparisons(db)
    assert len(both) == demo + 6  # the demo's comparisons and the 6 crafted ones judged in both orders
    first = sum(ab > 0.5 for ab, _, _ in both) + sum(ba < 0.5 for _, ba, _ in both)
    decisive = sum(ab != 0.5 for ab, _, _ in both) + sum(ba != 0.5 for _, ba, _ in both)
    assert page.stat("first_slot_rate") == pytest.approx(first / decisive)
    assert page.stat("position_consistency") == pytest.approx(sum(bool(c) for *_, c in both) / len(both))
    assert "[" in page.sections["pref-position"]["text"]  # intervals are shown beside the rates
    by_mode = page.table("position-by-mode")  # pair3 was judged with chain of thought, the rest by choice
    assert set(by_mode) == {"choice", "cot"} and (int(by_mode["choice"][0]), int(by_mode["cot"][0])) == (
        len(both) - 1, 1)
    ((longer, differ),) = sql(db, "SELECT count(*) FILTER (length(chosen) > length(rejected)), "
                                  "count(*) FILTER (length(chosen) <> length(rejected)) FROM preference_dataset")
    assert page.stat("chosen_longer_rate") == pytest.approx(longer / differ) == pytest.approx(2 / 3)
    # the fake judge ties every demo pair; of the crafted ones, 5 are judged, 1 is a tie, 1 has no verdict
    assert (page.stat("judged_pairs"), page.stat("ties"), page.stat("unjudged_pairs")) == (demo + 5, demo + 1, 1)
    assert page.stat("flagged_judgements") == sql(db, "SELECT count(*) FROM preference_candidates WHERE flagged")[0][0]


def test_judge_numbers_match_sql(db, report):
    _, page = report
    ((checks, readable, correct),) = sql(db, "SELECT count(*), count(correct), count(*) FILTER (correct) "
                                             "FROM canary_results")
    assert page.stat("canary_checks") == checks == len(CANARIES)
    assert page.stat("canary_correct_rate") == pytest.approx(correct / readable) == pytest.approx(4 / 5)
    assert page.stat("canary_unreadable") == 1
    assert page.table("canaries")["choice"][0] in ("canary-0", "canary-1")
    for mode, (agreement, lo, hi) in AGREEMENT.items():
        assert page.stat(f"agreement_{mode}") == agreement
        assert f"{agreement:.3f} [{lo:.2f}, {hi:.2f}]" in [r[4] for r in page.tables["judge-eval-agreement"][1:]]


def test_training_numbers_match_sql(db, report):
    _, page = report
    assert page.stat("train_runs") == sql(db, "SELECT count(*) FROM train_runs")[0][0] == 5  # sft, dpo and 3 RL
    ((last_loss,),) = sql(db, "SELECT value FROM train_metrics WHERE run_id = 'train-dpo' AND name = 'loss' "
                              "AND phase = 'step' ORDER BY step DESC LIMIT 1")
    assert page.stat("final_loss") == pytest.approx(last_loss) == pytest.approx(0.5)
    assert page.stat("final_reward_accuracy") == pytest.approx(0.9)
    assert page.table("win-rates")["/tmp/dpo/final"][:8] == ["dpo", "tiny", "judge", "eval", "5",
                                                             "0.620 [0.51, 0.73]", "0.550 [0.44, 0.66]", "3 / 0 / 2"]
    assert page.stat("win_rate") == WIN["win_rate"] and page.stat("lc_win_rate") == WIN["lc_win_rate"]
    assert "[0.510, 0.730]" in page.sections["train-win-rate"]["text"]


def test_rl_monitor_numbers_match_sql(db, report):
    _, page = report
    ((runs, measured),) = sql(db, "SELECT count(*), (SELECT count(*) FROM overopt_records) FROM train_runs "
                                  "WHERE kind IN ('ppo', 'grpo', 'rloo')")
    assert (page.stat("rl_runs"), page.stat("rl_measurements"), page.stat("rl_warned_runs")) == (runs, measured, 1)
    assert (runs, measured) == (3, 5)
    # the latest RL run (PPO): its last measurement, and the changes from its first to its last
    ((kl, drift, proxy, judge),) = sql(db, """
        SELECT arg_max(kl, step), arg_max(length_drift, step), arg_max(proxy_score, step) - arg_min(proxy_score, step),
               arg_max(judge_score, step) - arg_min(judge_score, step)
        FROM overopt_records WHERE run_id = 'train-ppo'""")
    assert page.stat("rl_kl") == pytest.approx(kl) == 4.0
    assert page.stat("rl_length_drift") == pytest.approx(drift) == pytest.approx(1.5)
    assert page.stat("rl_proxy_change") == pytest.approx(proxy) == pytest.approx(0.8)
    assert page.stat("rl_judge_change") == pytest.approx(judge) == pytest.approx(-0.1)
    table = page.table("rl-runs")
    assert list(table) == RL_RUNS  # newest first
    columns = page.tables["rl-runs"][0][1:]
    rloo = dict(zip(columns, table["train-rloo"], strict=True))
    assert (rloo["records"], rloo["KL"], rloo["warnings"]) == ("0", "—", "0")  # listed, with no monitor values
    grpo = dict(zip(columns, table["train-grpo"], strict=True))
    assert (grpo["records"], grpo["drift"], grpo["Δ judge"]) == ("2", "x0.90", "—")  # no judge: missing, not 0
    assert (grpo["reward · judge"], grpo["Δ proxy"], grpo["warnings"]) == ("rule:m:f · —", "+0.600", "0")
    assert dict(zip(columns, table["train-ppo"], strict=True))["warnings"] == "1 (step 10)"


def test_overopt_warnings_match_sql_and_are_escaped(db, report):
    path, page = report
    listed = sql(db, "SELECT run_id, step, since_step, proxy_delta, judge_delta, message FROM overopt_warnings")
    assert page.stat("overopt_warnings") == len(listed) == 1 and page.stat("overopt_warned_runs") == 1
    ((run, step, since, proxy, judge, message),) = listed
    assert page.table("overopt-warnings")[run] == [str(step), str(since), f"{proxy:+.3f}", f"{judge:+.3f}", message]
    assert "proxy &lt;i&gt;gamed&lt;/i&gt; &amp; &quot;judge&quot; fell" in path.read_text(encoding="utf-8")


def test_policy_comparison_puts_best_of_n_beside_the_trained_policies(db, report):
    _, page = report
    latest = sql(db, """
        SELECT method, policy, win_rate, win_rate_low, win_rate_high FROM policy_comparison
        QUALIFY row_number() OVER (PARTITION BY method, base ORDER BY created_at DESC) = 1""")
    shown = page.table("policy-comparison")
    assert set(shown) == {m for m, *_ in latest} == {"dpo", "ppo", "best-of-n"}
    for method, policy, rate, lo, hi in latest:
        assert shown[method][1] == policy and shown[method][4] == f"{rate:.3f} [{lo:.2f}, {hi:.2f}]"
    assert [r[0] for r in page.tables["policy-comparison"][1:]] == ["best-of-n", "dpo", "ppo"]  # best first
    methods = {policy: row[0] for policy, row in page.table("win-rates").items()}
    assert methods["best-of-n:2:rule:m:f:tiny"] == "best-of-n" and methods["/tmp/ppo/final"] == "ppo"


def test_an_rl_run_report_covers_that_run(db, tmp_path):
    page = Page(write_report(db, tmp_path / "ppo.html", run_id="train-ppo").read_text(encoding="utf-8"))
    assert page.stat("rl_runs") == 1 and list(page.table("rl-runs")) == ["train-ppo"]
    assert "train-rl-monitor" in page.figures and page.stat("overopt_warnings") == 1
    assert list(page.table("win-rates")) == ["/tmp/ppo/final"]  # the evaluation of its final model
    page = Page(write_report(db, tmp_path / "grpo.html", run_id="train-grpo").read_text(encoding="utf-8"))
    assert page.stat("rl_kl") == 2.0 and page.stats["rl_judge_change"] == "None"
    assert page.sections["train-overopt"]["text"].endswith(
        "No warnings: in 1 RL run and 2 monitor measurements, the proxy never rose while the judge fell (beyond "
        "the margins).")


def test_a_run_report_covers_that_run_only(db, tmp_path):
    run_id = demo_run(db)
    page = Page(write_report(db, tmp_path / "run.html", run_id=run_id).read_text(encoding="utf-8"))
    ((rows,),) = sql(db, "SELECT count(*) FROM generations WHERE run_id = ?", [run_id])
    assert page.stat("generations") == rows and page.stat("runs_total") == 1
    assert page.sections["gen-failures"]["status"] == "empty"
    assert "all ok" in page.sections["gen-failures"]["text"]
    assert "No data-quality flags in run" in page.sections["gen-flags"]["text"]
    demo = demo_comparisons(db)
    assert f"{demo} judged pairs, {demo} of them ties" in page.sections["pref-p-chosen"]["text"]
    assert page.sections["train-runs"]["text"].endswith(f"No training runs in run {run_id}.")
    assert page.sections["pref-canaries"]["text"].endswith(f"No canary checks in run {run_id}.")
    # the fake judge puts 0.75 on the letter A whatever it shows: always the first slot, never consistent
    assert (page.stat("first_slot_rate"), page.stat("position_consistency")) == (1.0, 0.0)


def test_a_training_run_report_covers_that_training_run(db, tmp_path):
    page = Page(write_report(db, tmp_path / "train.html", run_id="train-sft").read_text(encoding="utf-8"))
    assert page.stat("train_runs") == 1 and page.table("train-runs").keys() == {"train-sft"}
    assert page.stat("final_loss") == pytest.approx(2.0 / 21)
    assert "No generations in run train-sft." in page.sections["gen-throughput"]["text"]
    for key in ("train-rl-monitor", "train-overopt"):
        assert page.sections[key]["text"].endswith("No RL runs (`rlaif train ppo|grpo`) in run train-sft.")


def test_text_from_the_database_is_escaped(report):
    path, page = report
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text and "example.invalid" not in page.links
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text  # the error's first line only
    assert "second line" not in page.sections["gen-failures"]["text"]
    assert "&lt;/div&gt;&lt;/section&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the hostile critique
    assert "principle harm · model fake-model · constitution harmless · flags: refusal" in text  # its flag
    assert len([k for k in page.sections if k.startswith("gen-")]) == 9  # its markup closed no section


def test_the_page_fetches_nothing(report):
    path, page = report
    assert page.links, "no links or images parsed"
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in page.links)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "url(" not in path.read_text(encoding="utf-8").split("</style>")[0]


def test_an_empty_database_says_so_in_every_section(tmp_path):
    db = tmp_path / "empty.duckdb"
    Store(db).migrate()
    page = Page(write_report(db, tmp_path / "empty.html").read_text(encoding="utf-8"))
    assert len(page.sections) == 21
    for key, section in page.sections.items():
        assert section["status"] == "empty", key
        lines = section["text"].strip().splitlines()
        assert len(lines) <= 2 and lines[-1].strip(), (key, lines)  # the title, then one line
    assert not page.figures and not page.stats
    for key in ("train-rl-monitor", "train-overopt"):
        assert page.sections[key]["text"].endswith("No RL runs (`rlaif train ppo|grpo`) in this database.")


def test_a_database_from_before_the_newer_migrations(tmp_path):
    """A file made by an rlaif of migration 002 opens read-only as it is: newer sections say what it lacks."""
    import duckdb

    from rlaif.resources import data_dir

    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        for name in ("001_initial.sql", "002_dataset_views.sql"):
            con.execute((data_dir("storage") / name).read_text(encoding="utf-8"))
    page = Page(write_report(db, tmp_path / "old.html").read_text(encoding="utf-8"))
    assert "No table row_flags in this database" in page.sections["gen-flags"]["text"]
    assert "No table train_runs in this database" in page.sections["train-runs"]["text"]
    assert "overopt_records, overopt_warnings in this database" in page.sections["train-overopt"]["text"]
    assert "No table sft_candidates in this database" in page.sections["gen-sft-dataset"]["text"]


def test_cli_writes_the_report_and_prints_its_path(db, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    assert main(["--db", str(db), "report", "--run", demo_run(db), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 10_000
    assert main(["--db", str(db), "report", "--run", "no-such-run", "--out", str(out)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_importing_the_report_loads_no_plotting_or_database_library():
    code = ("import sys, rlaif.cli, rlaif.report; "
            "print([m for m in ('matplotlib', 'duckdb', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_page_in_headless_chromium(report, tmp_path):
    """Loads a page with a console error and a network image first, to show the check sees both, then the report."""
    from chromium import Browser, find_chromium, open_page

    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: ./setup.sh --dev installs it")
        pytest.skip("no chromium here (./setup.sh --dev installs Debian's package where apt is available)")
    path, _ = report
    control = tmp_path / "control.html"
    control.write_text('<!doctype html><script>console.error("boom")</script>'
                       '<img src="https://example.invalid/x.png">', encoding="utf-8")
    with Browser(binary, tmp_path / "profile") as browser:
        seen, _ = open_page(browser, control.as_uri(), tmp_path / "control.png")
        found, height = open_page(browser, path.as_uri(), tmp_path / "report.png")
    assert any("boom" in p for p in seen) and any("example.invalid" in p for p in seen)
    assert found == []
    assert height > 2000 and (tmp_path / "report.png").stat().st_size > 50_000
