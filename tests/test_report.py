"""`rlaif report` on a real small run: sections and numbers against SQL over the same database, escaping, a page
that fetches nothing, empty sections in one line, and the page in headless Chromium without console errors.

The data: `rlaif demo` on the fake engine into a real DuckDB file (4 prompts, 2 rounds), plus crafted rows for
what a fake run cannot produce (tests/report_data.py): failed attempts, data-quality flags, judged pairs that
are not ties, training and RL runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from report_data import (
    AGREEMENT,
    CANARIES,
    CRAFTED,
    FIGURES,
    RL_RUNS,
    WIN,
    Page,
    crafted_rows,
    demo_comparisons,
    demo_run,
    sql,
)

from rlaif.cli import main
from rlaif.report import beside, write_report
from rlaif.store import Store, utcnow


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
