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
    assert "agreement  " in out and "contrast" in out and "first-slot rate" in out and "no orders" in out
    assert "baseline: word overlap" in out and "baseline: always slot (A)" in out
    assert "NO MEASURED SIGNAL" in out  # the fake judge reads nothing
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


SHIPPED = Path(__file__).parents[1] / "rlaif" / "data" / "judge_eval_kinds.jsonl"
KINDS = ("evasiveness", "harmlessness", "helpfulness")


def test_baselines_and_kinds_match_hand_computed_values():
    from rlaif.judge.metrics import baselines, best_baseline, by_kind, signal

    records = [
        EvalRecord(label_a=True, p=0.9, len_a=10, len_b=5, overlap_a=-1.0, overlap_b=-1.5, kind="x"),
        EvalRecord(label_a=False, p=0.2, len_a=9, len_b=4, overlap_a=-1.2, overlap_b=-1.2, kind="x"),
        EvalRecord(label_a=False, p=0.6, len_a=3, len_b=8, overlap_a=-2.0, overlap_b=-1.0, kind="y"),
    ]
    b = baselines(records)
    assert b["longer"].value == pytest.approx(2 / 3) and b["shorter"].value == pytest.approx(1 / 3)
    assert b["overlap"].value == pytest.approx((1 + 0.5 + 1) / 3)  # the second pair is a tie
    assert b["slot_a"].value == pytest.approx(1 / 3)
    assert (b["overlap"].lo, b["overlap"].hi) == pytest.approx(wilson(2.5, 3))
    assert best_baseline(evaluate(records)) == ("overlap", pytest.approx(2.5 / 3))
    assert not signal(evaluate(records))  # 2 of 3 right, lower bound far below 0.83
    kinds = by_kind(records)
    assert set(kinds) == {"x", "y"} and kinds["x"]["agreement"].value == 1.0 and kinds["y"]["agreement"].n == 1
    assert kinds["x"]["longer"].value == 0.5 and kinds["y"]["overlap"].value == 1.0
    strong = [EvalRecord(label_a=i % 2 == 0, p=0.9 if i % 2 == 0 else 0.1, len_a=5, len_b=5) for i in range(60)]
    assert signal(evaluate(strong))  # 60 of 60 right beats every baseline at 0.5


def test_the_kinds_set_is_not_solved_by_any_baseline_that_cannot_read():
    from rlaif.judge.evaluate import overlap
    from rlaif.judge.metrics import baselines

    pairs = list(read_pair_file(SHIPPED, require_label=True))
    assert {p.kind for p in pairs} == set(KINDS) and {p.split for p in pairs} == {"dev", "eval"}
    for split, least in (("dev", 15), ("eval", 30)):
        for kind in KINDS:
            members = [p for p in pairs if p.split == split and p.kind == kind]
            assert len(members) >= least
            better = [(p.given[0] if p.label == "A" else p.given[1]).text for p in members]
            worse = [(p.given[1] if p.label == "A" else p.given[0]).text for p in members]
            assert sum(len(b) < len(w) for b, w in zip(better, worse)) * 2 == len(members)  # length-controlled
            assert [p.label for p in members].count("A") * 2 == len(members)
    for group in [[p for p in pairs if p.kind == k] for k in KINDS] + [[p for p in pairs if p.split == s]
                                                                    for s in ("dev", "eval")]:
        records = [EvalRecord(label_a=p.label == "A", len_a=len(p.given[0].text.strip()),
                              len_b=len(p.given[1].text.strip()), overlap_a=overlap(p.pair.messages, p.given[0].text),
                              overlap_b=overlap(p.pair.messages, p.given[1].text)) for p in group]
        for name, m in baselines(records).items():
            assert 0.4 <= m.value <= 0.6 and m.lo < 0.5 < m.hi, (name, m)  # near chance, chance inside


def test_the_old_set_still_reads_and_its_overlap_solves_it():
    from rlaif.judge.evaluate import overlap
    from rlaif.judge.metrics import baselines

    old = list(read_pair_file(Path(__file__).parents[1] / "rlaif" / "data" / "judge_eval_pairs.jsonl",
                              require_label=True))
    records = [EvalRecord(label_a=p.label == "A", overlap_a=overlap(p.pair.messages, p.given[0].text),
                          overlap_b=overlap(p.pair.messages, p.given[1].text)) for p in old]
    assert baselines(records)["overlap"].value > 0.8  # why it no longer chooses the default: it measures topicality


def test_judge_eval_reports_kinds_splits_and_signal(tmp_path, capsys, settings):
    from rlaif.store import Store

    db = str(tmp_path / "kinds.duckdb")
    assert main(["--db", db, "--engine", "fake", "judge", "eval", "--dev", "--mode", "contrast", "--json",
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    contrast = report["modes"]["contrast"]
    assert report["split"] == "dev" and contrast["pairs"] == 48 and report["signal"] is False
    assert set(contrast["kinds"]) == set(KINDS)
    assert set(contrast["kinds"]["helpfulness"]) == {"agreement", "longer", "shorter", "overlap", "slot_a"}
    store = Store(db)
    (row,) = store.fetch("SELECT split, signal, best_baseline, overlap, slot_a, kinds FROM judge_evals")
    assert row["split"] == "dev" and row["signal"] is False and row["slot_a"] == 0.5
    assert set(json.loads(row["kinds"])) == set(KINDS)
    kinds = store.fetch("SELECT kind, split, count(*) AS n FROM judge_eval_pairs GROUP BY ALL ORDER BY kind")
    assert [(k["kind"], k["split"], k["n"]) for k in kinds] == [(k, "dev", 16) for k in KINDS]
    assert main(["--db", db, "--engine", "fake", "judge", "eval", "--write-defaults"]) == 2
    assert "--write-defaults needs --dev" in capsys.readouterr().err


def test_the_defaults_file_chooses_the_mode_and_says_whether_it_carries_signal(tmp_path, monkeypatch):
    from rlaif.judge import config
    from rlaif.judge.evaluate import EvalReport, ModeResult, measured_entry, write_defaults
    from rlaif.judge.metrics import Metric

    def result(mode, value, lo, hi):
        metrics = {"agreement": Metric(value, lo, hi, 48), "longer": Metric(0.5, 0.36, 0.64, 48),
                   "shorter": Metric(0.5, 0.36, 0.64, 48), "overlap": Metric(0.55, 0.41, 0.68, 48),
                   "slot_a": Metric(0.5, 0.36, 0.64, 48)}
        return ModeResult(mode, metrics, 48, 48, 0, 1.0)

    report = EvalReport("r1", "set.jsonl", "m", [result("choice", 0.6, 0.46, 0.72), result("score", 0.75, 0.61, 0.85),
                                                 result("contrast", 0.8, 0.52, 0.9)], split="dev", judge_engine="e")
    entry = measured_entry(report, "rlaif judge eval --dev")
    assert entry["mode"] == "score" and entry["signal"] is True  # the highest lower bound above overlap's 0.55
    assert entry["modes"]["contrast"]["signal"] is False  # 0.52 does not beat 0.55
    path = write_defaults(report, "rlaif judge eval --dev", tmp_path / "d.json")
    monkeypatch.setattr(config, "measured_defaults", lambda: json.loads(path.read_text())["engines"])
    assert config.default_mode("e") == "score" and config.default_has_signal("e")
    assert config.signal_warning("e", "score") is None
    assert "no measured signal on m" in config.signal_warning("e", "contrast")
    assert config.default_mode("unknown") == "choice" and not config.default_has_signal("unknown")
    assert "never measured" in config.signal_warning("unknown", "choice")
    weak = EvalReport("r2", "s", "m", [result("choice", 0.6, 0.46, 0.72), result("cot", 0.55, 0.4, 0.7)], "dev", "w")
    assert measured_entry(weak, "c")["mode"] == "choice" and measured_entry(weak, "c")["signal"] is False
