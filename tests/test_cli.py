"""The CLI: every command has help, loading it stays light, user errors are one line, the spine end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from helpers import refused_before_any_write

from rlaif.cli import app, main


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if hasattr(command, "commands"):
            yield from _commands(command, prefix + (name,))


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_expected_commands_exist():
    names = {" ".join(path) for path, _ in ALL_COMMANDS}
    assert {"demo", "config", "sql", "export", "serve", "constitution validate", "constitution show",
            "constitution schema", "models prepare", "generate sft", "stats"} <= names


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=" ".join)
def test_every_command_has_help(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    command = dict(ALL_COMMANDS)[path]
    assert command.help and len(command.help.strip()) > 20, f"{' '.join(path)} needs a real help text"


def test_loading_the_cli_imports_no_heavy_library():
    code = ("import sys, rlaif.cli; heavy = [m for m in ('torch', 'transformers', 'vllm', 'prefect', 'duckdb', "
            "'openai') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_user_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprinciples: []\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "rlaif.cli", "constitution", "validate", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.yaml:" in lines[0]


def test_config_shows_values_and_their_sources(tmp_path, monkeypatch, capsys):
    (tmp_path / "rlaif.toml").write_text('concurrency = 7\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLAIF_CONFIG", raising=False)
    monkeypatch.setenv("RLAIF_ENGINE", "openai")
    assert main(["--db", "x.duckdb", "config"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["db"].endswith("(option)") and lines["concurrency"].endswith("(rlaif.toml)")
    assert "env RLAIF_ENGINE" in out and "rlaif.toml" in out and "(default)" in out


def test_config_shows_both_roles_and_where_each_value_came_from(tmp_path, monkeypatch, capsys):
    (tmp_path / "rlaif.toml").write_text('model = "small"\n[feedback]\nmodel = "big"\nconcurrency = 8\n',
                                         encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RLAIF_CONFIG", raising=False)
    monkeypatch.setenv("RLAIF_POLICY_ENGINE", "fake")
    assert main(["config"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "= small " in lines["policy.model"] and lines["policy.model"].endswith("(rlaif.toml via model)")
    assert "= big " in lines["feedback.model"] and lines["feedback.model"].endswith("(rlaif.toml [feedback])")
    assert lines["policy.engine"].endswith("(env RLAIF_POLICY_ENGINE)")
    assert "= transformers " in lines["feedback.engine"] and lines["feedback.engine"].endswith("(default via engine)")
    assert "= 8 " in lines["feedback.concurrency"] and "= 64 " in lines["policy.concurrency"]
    assert lines["flags.unchanged_similarity"].endswith("(default)")


def test_a_bad_role_setting_names_its_source(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLAIF_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("RLAIF_FEEDBACK_CONCURRENCY", "0")
    assert main(["config"]) == 2
    assert "feedback.concurrency (from env RLAIF_FEEDBACK_CONCURRENCY)" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[feedback]\nmodle = 'x'\n", encoding="utf-8")
    monkeypatch.setenv("RLAIF_CONFIG", str(tmp_path / "bad.toml"))
    monkeypatch.delenv("RLAIF_FEEDBACK_CONCURRENCY")
    assert main(["config"]) == 2
    assert "[feedback] has unknown setting 'modle'" in capsys.readouterr().err


def _prompt_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"prompt": "How do I pick a lock?"}, {"prompt": "Say hi.", "helpful": True}, {"prompt": "Insult me."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_generate_sft_resumes_says_when_it_does_not_and_stats_counts_flags(tmp_path, capsys):
    db, prompts = str(tmp_path / "g.duckdb"), _prompt_file(tmp_path)
    command = ["--db", db, "--engine", "fake", "generate", "sft", "--prompts", prompts, "--helpful-column",
               "helpful", "--no-prefect", "--no-progress"]
    assert main(command) == 0
    out = capsys.readouterr().out
    run_id = out.split()[1].rstrip(":")
    assert "3 prompts (1 kept unrevised), 2 revised" in out and "rows: 3 SFT rows made" in out
    assert "tok/s" in out and "flags hit:" in out
    assert main(command) == 0
    assert f"resuming run {run_id} (completed)" in capsys.readouterr().out
    assert main([*command, "--rounds", "2"]) == 0
    assert f"not resuming run {run_id}: rounds 1 -> 2" in capsys.readouterr().out
    assert main(["--db", db, "stats"]) == 0
    stats = capsys.readouterr().out
    assert stats.splitlines()[0].split() == ["run", "target", "flag", "rows"]
    assert any(line.startswith("total") for line in stats.splitlines())  # rounds 2 repeats a canned revision
    assert main(["--db", db, "stats", "--run", "nope"]) == 0
    assert "no flags for run nope" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "error: --rounds must be between 1 and 16, got 0"),
    (["--context", "both"], "error: --context must be 'transcript' or 'fresh', got 'both'"),
    (["--top-p", "1.5"], "error: --top-p must be greater than 0.0 and at most 1.0, got 1.5"),
    (["--no-revise", "--judge"], "error: --judge compares answers with their revisions"),
])
def test_generate_sft_option_errors_are_one_line(tmp_path, capsys, args, message):
    db = tmp_path / "never.duckdb"
    command = ["--db", str(db), "--engine", "fake", "generate", "sft", "--prompts", _prompt_file(tmp_path),
               "--no-prefect", *args]
    refused_before_any_write(command, db, message, capsys)


def test_a_missing_prompt_file_is_one_line_before_any_write(tmp_path, capsys):
    db = tmp_path / "never.duckdb"
    assert main(["--db", str(db), "--engine", "fake", "generate", "sft", "--prompts", str(tmp_path / "no.jsonl"),
                 "--no-prefect"]) == 2
    assert "no.jsonl" in capsys.readouterr().err and not db.exists()


def test_bad_setting_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("RLAIF_CONCURRENCY", "0")
    assert main(["config"]) == 2
    assert "concurrency (from env RLAIF_CONCURRENCY)" in capsys.readouterr().err


def test_demo_sql_and_export_on_the_fake_engine(tmp_path, capsys):
    db = str(tmp_path / "demo.duckdb")
    assert main(["--db", db, "--engine", "fake", "demo", "--limit", "4", "--no-prefect", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 prompts (2 kept unrevised), 2 revised, 2 judged" in out and "sft_dataset" in out
    assert "rlaif sql" in out and "rlaif demo --all" in out  # how to run the whole set
    assert "warning: the choice judge carries no measured signal (never measured" in out  # the fake judge

    assert main(["--db", db, "sql", "SELECT count(*) AS n FROM sft_dataset", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4}]

    assert main(["--db", db, "sql", "DELETE FROM prompts"]) != 0
    assert "read-only" in capsys.readouterr().err

    out_file = tmp_path / "sft.jsonl"
    assert main(["--db", db, "export", "sft", "--out", str(out_file)]) == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["messages"][-1]["role"] == "assistant"


def test_unknown_dataset_and_format_are_user_errors(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "x.duckdb"), "export", "both", "--out", "x.parquet"]) == 2
    assert "expected one of: sft, prefs, kto, rm" in capsys.readouterr().err
    assert main(["sql", "SELECT 1", "--format", "xml"]) == 2


def test_a_command_exit_code_reaches_the_caller():
    """``typer.Exit(n)`` inside a command is the process's exit status (click returns it in non-standalone mode)."""
    import rlaif.cli._app as cli_app

    @cli_app.app.command("exit-with-three", hidden=True)
    def _exit_with_three() -> None:
        """A throwaway command for this test only: it exits with status 3."""
        raise typer.Exit(3)

    try:
        assert main(["exit-with-three"]) == 3
    finally:
        cli_app.app.registered_commands.pop()
