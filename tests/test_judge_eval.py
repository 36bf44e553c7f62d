"""``rlaif judge eval``: the metrics against hand-computed values, pair files and their errors, and the command end
to end on the fake engine (rows in judge_evals, judge_eval_pairs, generations and attempts under a run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.cli import main
from rlaif.errors import ConfigError
from rlaif.judge.metrics import EvalRecord, brier, ece, evaluate, wilson
from rlaif.judge.pairs_file import read_pair_file

DATA = Path(__file__).parent / "data"

# Four pairs worked by hand (see each metric below).
RECORDS = [
    EvalRecord(label_a=True, p=0.8, p_first=0.9, p_second=0.7, len_a=10, len_b=5),
    EvalRecord(label_a=False, p=0.6, p_first=0.9, p_second=0.3, len_a=5, len_b=10),
    EvalRecord(label_a=True, p=0.5, p_first=0.6, p_second=0.4, len_a=7, len_b=7),
    EvalRecord(label_a=False, vote=0.0, len_a=3, len_b=9),  # an engine without log-probs: a vote only
]


def test_metrics_match_hand_computed_values():
    m = evaluate(RECORDS)
    assert m["agreement"].value == pytest.approx((1 + 0 + 0.5 + 1) / 4) and m["agreement"].n == 4
    assert m["agreement_first"].value == pytest.approx(2 / 3)  # 0.9 right, 0.9 wrong, 0.6 right
    assert m["agreement_second"].value == pytest.approx(2 / 3)  # 0.7 right, 0.3 right, 0.4 wrong
    assert m["consistency"].value == pytest.approx(1 / 3)
    assert m["first_slot_rate"].value == pytest.approx(5 / 6)  # slot A wins in 5 of 6 single readings
    assert m["brier"].value == pytest.approx((0.04 + 0.36 + 0.25) / 3)
    assert m["ece"].value == pytest.approx((0.2 + 0.6 + 0.5) / 3)  # each pair alone in its bin
    assert m["longer"].value == pytest.approx(3.5 / 4) and m["shorter"].value == pytest.approx(0.5 / 4)
    assert m["when_label_longer"].value == pytest.approx(2 / 3) and m["when_label_longer"].n == 3
    assert m["when_label_shorter"].value is None and m["when_label_shorter"].n == 0
    lo, hi = m["agreement"].lo, m["agreement"].hi
    assert (lo, hi) == pytest.approx(wilson(2.5, 4))


def test_wilson_and_the_bootstrap_intervals():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0
    m = evaluate(RECORDS)
    assert m["brier"].lo <= m["brier"].value <= m["brier"].hi
    assert brier([1.0, 0.0], [True, False]) == 0.0 and ece([0.95, 0.05], [True, False]) == pytest.approx(0.05)


def test_pair_files_in_both_layouts():
    pairs = list(read_pair_file(DATA / "judge_pairs.jsonl", require_label=True))
    assert [p.label for p in pairs] == ["A", "B", "A", "B"] and [p.row for p in pairs] == [1, 2, 3, 4]
    assert pairs[3].pair.messages[-1]["content"] == "What is 7 plus 5?" and len(pairs[3].pair.messages) == 3
    for p in pairs:  # the label follows the text through the canonical reordering
        better = p.given[0] if p.label == "A" else p.given[1]
        assert (p.pair.a if p.a_is_better else p.pair.b) == better
    chosen = list(read_pair_file(DATA / "judge_pairs_chosen.jsonl"))
    rows = [json.loads(line) for line in (DATA / "judge_pairs_chosen.jsonl").read_text().splitlines()]
    for p, row in zip(chosen, rows):
        assert (p.given[0] if p.label == "A" else p.given[1]).text == row["chosen"]


@pytest.mark.parametrize("line, message", [
    ({"prompt": "q", "response_a": "a"}, r"x\.jsonl:2: column 'response_b': expected a string, got no such column"),
    ({"prompt": "q", "response_a": "a", "response_b": 3, "label": "A"}, r":2: column 'response_b': .*a number"),
    ({"prompt": "q", "response_a": "a", "response_b": "b", "label": "C"}, r":2: column 'label': expected \"A\""),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, r":2: column 'prompt': expected text"),
    ({"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"},
     r":2: column 'prompt': expected the last turn to be the user's"),
    ({"prompt": "q", "response_a": "a", "response_b": "b"}, r":2: column 'label': expected \"A\" or \"B\""),
])
def test_bad_pair_rows_are_one_line_naming_file_row_and_column(tmp_path, line, message):
    path = tmp_path / "x.jsonl"
    good = {"prompt": "q", "response_a": "a", "response_b": "b", "label": "A"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        list(read_pair_file(path, require_label=True))


def test_pair_files_come_in_any_source_format(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,response_a,response_b,label\nq,a,b,B\n", encoding="utf-8")
    (pair,) = read_pair_file(csv, require_label=True)
    assert pair.label == "B" and pair.row == 1


def test_judge_eval_end_to_end_on_the_fake_engine(tmp_path, capsys, settings):
    db = str(tmp_path / "eval.duckdb")
    args = ["--db", db, "--engine", "fake", "judge", "eval", "--pairs", str(DATA / "judge_pairs.jsonl"),
            "--no-progress"]
    assert main([*args, "--mode", "all"]) == 0
    out = capsys.readouterr().out
    assert "agreement (both orders)" in out and "contrast" in out and "first-slot rate" in out
    from rlaif.store import Store

    store = Store(db)
    (run,) = store.fetch("SELECT run_id, kind, status FROM runs")
    assert run["kind"] == "judge-eval" and run["status"] == "completed"
    evals = store.fetch("SELECT mode, pairs, decided, agreement, first_slot_rate FROM judge_evals ORDER BY mode")
    assert [e["mode"] for e in evals] == ["choice", "contrast", "cot", "score"]
    assert all(e["pairs"] == 4 and e["decided"] == 4 for e in evals)
    choice = next(e for e in evals if e["mode"] == "choice")
    assert choice["agreement"] == 0.5 and choice["first_slot_rate"] == 1.0  # the fake always prefers slot A
    assert store.fetch("SELECT count(*) AS n FROM judge_eval_pairs")[0]["n"] == 16
    kinds = {r["kind"]: r["n"] for r in store.fetch("SELECT kind, count(*) AS n FROM generations GROUP BY kind")}
    assert kinds["score"] == 8 * 2 - 0 and kinds["choice"] > 0 and kinds["chat"] == 8  # 4 pairs x 2 rationales
    assert store.fetch("SELECT count(*) AS n FROM attempts")[0]["n"] == sum(kinds.values())

    assert main([*args, "--mode", "contrast", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    first = next(e for e in evals if e["mode"] == "contrast")["agreement"]
    assert report["modes"]["contrast"]["metrics"]["agreement"]["value"] == first
    # the second run answered every engine call from the database
    assert store.fetch("SELECT count(*) AS n FROM attempts")[0]["n"] == sum(kinds.values())


def test_judge_eval_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response_a": "a"}\n', encoding="utf-8")
    code = main(["--db", str(tmp_path / "x.duckdb"), "--engine", "fake", "judge", "eval", "--pairs", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.jsonl:1: column 'response_b'" in err[0]
    assert main(["--engine", "fake", "judge", "eval", "--pairs", str(bad), "--mode", "vibes"]) == 2
    assert "--mode must be one of" in capsys.readouterr().err


def test_the_shipped_eval_set_is_balanced():
    pairs = list(read_pair_file(Path(__file__).parents[1] / "rlaif" / "data" / "judge_eval_pairs.jsonl",
                                require_label=True))
    assert len(pairs) >= 60
    labels = [p.label for p in pairs]
    assert abs(labels.count("A") - labels.count("B")) <= 2
    longer = sum(len((p.given[0] if p.label == "A" else p.given[1]).text) >
                 len((p.given[1] if p.label == "A" else p.given[0]).text) for p in pairs)
    assert 0.4 < longer / len(pairs) < 0.6  # "always the longer" cannot do well on it
