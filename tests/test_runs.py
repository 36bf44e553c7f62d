"""`rlaif runs` and `rlaif runs show` on real runs (fake engine, real DuckDB file): counts by SQL, failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlaif.cli import main
from rlaif.engines import Engines
from rlaif.engines.fake import FakeEngine
from rlaif.errors import ConfigError
from rlaif.options import RunOptions
from rlaif.prompts import demo_prompts_path
from rlaif.run_history import list_runs, run_detail
from rlaif.runner import generate_sft
from rlaif.store import Store


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A completed run of two rounds, then a partial one (another seed) whose judge calls all failed."""
    from rlaif.config import load_settings

    db = tmp_path_factory.mktemp("runs") / "runs.duckdb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLAIF_CONFIG", str(db.parent / "absent.toml"))
        settings = load_settings(db=db, engine="fake")
    options = RunOptions.parse(prompts=str(demo_prompts_path()), limit=4, constitution="example", judge=True)
    fake = FakeEngine()
    good = generate_sft(settings, options.model_copy(update={"rounds": 2}), kind="sft", engines=Engines(fake, fake),
                        show_progress=False, log=lambda line: None)
    failing = FakeEngine().fail(stages=("judge",))
    bad = generate_sft(settings, options.model_copy(update={"seed": 7}), kind="prefs",
                       engines=Engines(failing, failing), show_progress=False, log=lambda line: None)
    return db, good.as_dict(), bad.as_dict()


def test_list_counts_rows_by_sql_and_reports_tokens(two_runs) -> None:
    db, good, bad = two_runs
    runs = {r["run_id"]: r for r in list_runs(db)}
    assert list(runs) == [bad["run_id"], good["run_id"]]  # newest first
    g, b = runs[good["run_id"]], runs[bad["run_id"]]
    assert (g["kind"], g["status"], b["kind"], b["status"]) == ("sft", "completed", "prefs", "partial")
    assert g["generations"] == good["engine_calls"] and g["revisions"] == 4 * 2 and g["comparisons"] == 4
    assert g["tokens"] == good["output_tokens"] > 0 and g["duration_s"] is not None and g["tokens_per_s"] > 0
    judged = bad["failed_prompts"]  # prompts whose judge pass failed, each in both orders
    assert judged > 0 and b["comparisons"] == 0 and b["failed_attempts"] == 2 * judged
    assert b["rows"]["attempts"] == b["generations"] + 2 * judged
    assert [r["run_id"] for r in list_runs(db, kind="sft")] == [good["run_id"]]
    assert len(list_runs(db, limit=1)) == 1


def test_show_gives_options_summary_and_failures(two_runs) -> None:
    db, _, bad = two_runs
    detail = run_detail(db, bad["run_id"][:-3])  # a unique prefix will do
    assert detail["run"]["run_id"] == bad["run_id"]
    assert detail["options"]["params"]["rounds"] == 1 and detail["options"]["seed"] == 7
    assert detail["options"]["config_hash"]  # a column migration 004 added, read as it exists
    assert {s["stage"] for s in detail["stages"]} == {"respond", "critique", "revise"}
    failures = detail["failures"]
    judged = bad["failed_prompts"]
    assert failures["error"].startswith(f"{judged} prompts failed") and failures["requests_failed"] == 2 * judged
    assert failures["attempt_errors"] == [{"stage": "judge", "error": "fake failure", "tries": 2 * judged}]
    with pytest.raises(ConfigError, match="no run 'nope'"):
        run_detail(db, "nope")
    with pytest.raises(ConfigError, match="ambiguous"):
        run_detail(db, "20")


def test_cli_lists_as_table_and_json_and_shows_one(two_runs, capsys) -> None:
    db, good, bad = two_runs
    assert main(["--db", str(db), "runs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "kind", "status"] and "prefect flow run" in table[0]
    assert len(table) == 3 and table[1].startswith(bad["run_id"]) and "partial" in table[1]
    assert main(["--db", str(db), "runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [bad["run_id"], good["run_id"]]
    assert main(["--db", str(db), "runs", "show", bad["run_id"]]) == 0
    text = capsys.readouterr().out
    assert "options (as given):" in text and "failures:" in text
    assert f"{2 * bad['failed_prompts']} x judge: fake failure" in text
    assert main(["--db", str(db), "runs", "show", "nope"]) == ConfigError.exit_code


READ_HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    print("held", flush=True)
    time.sleep(30)
""")


def test_reads_read_only_beside_another_reader_and_columns_added_later(two_runs, tmp_path) -> None:
    db, good, _ = two_runs
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(db.read_bytes())
    with Store(copy).connect() as con:  # what a later migration may add to runs, read as it exists
        con.execute("ALTER TABLE runs ADD COLUMN placement VARCHAR")
        con.execute("UPDATE runs SET placement = 'rack-7'")
    # A process holding the file read-only shuts out read-write opens, not read-only ones.
    holder = subprocess.Popen([sys.executable, "-c", READ_HOLDER, str(copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert len(list_runs(copy)) == 2
        assert run_detail(copy, good["run_id"])["options"]["placement"] == "rack-7"
        assert time.monotonic() - started < 5
    finally:
        holder.terminate()
        holder.wait(timeout=10)


def test_an_empty_database_has_no_runs(tmp_path, capsys) -> None:
    db = tmp_path / "empty.duckdb"
    Store(db).migrate()
    assert main(["--db", str(db), "runs"]) == 0
    assert capsys.readouterr().out.strip() == "no runs yet"


def test_training_runs_are_listed_beside_generation_runs(tmp_path) -> None:
    from rlaif.store import utcnow

    db = tmp_path / "train.duckdb"
    store = Store(db)
    store.migrate()
    started = utcnow()
    store.insert("train_runs", [{
        "run_id": "train-abc", "kind": "dpo", "status": "completed", "config": '{"beta": 0.1}', "base_model": "m",
        "dataset": "preference_dataset", "data_version": "v", "data_rows": 10, "train_rows": 9, "eval_rows": 1,
        "out_dir": "/tmp/x", "world_size": 1, "device": "cpu", "precision": "fp32", "total_steps": 2,
        "steps_done": 2, "resumes": 0, "started_at": started, "finished_at": started,
        "prefect_flow_run_id": "flow-9"}])
    store.insert("train_metrics", [{"run_id": "train-abc", "phase": "step", "step": s, "name": "loss", "value": 0.5,
                                    "created_at": started} for s in (1, 2)])
    (run,) = list_runs(db)
    assert (run["kind"], run["prefect_flow_run_id"], run["rows"]) == ("train-dpo", "flow-9", {"train_metrics": 2})
    assert list_runs(db, kind="train-dpo") == [run]
    assert run_detail(db, "train-a")["options"]["params"] == {"beta": 0.1}
