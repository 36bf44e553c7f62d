"""Prompt sources: every format read end to end from real files (tests/source_files.py), the spec forms, and
`rlaif prompts inspect`. Bad rows are in tests/test_sources_bad_rows.py; SQL and streaming in
tests/test_sources_streaming.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from source_files import CHAT, KINDS, ROWS, TEXTS, TURNS, make_source, write_db, write_jsonl

from rlaif.errors import ConfigError
from rlaif.prompts import load_prompts, make_prompt
from rlaif.sources import (
    BadRow,
    check_prompts,
    describe_spec,
    inspect_source,
    read_prompts,
    read_records,
)

# -- every format, end to end ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_each_format_reads_its_prompts_in_order(kind: str, tmp_path: Path) -> None:
    spec, kw = make_source(kind, tmp_path, ROWS)
    rows = list(read_prompts(spec, **kw))
    assert [r.text for r in rows] == TEXTS
    assert rows[0] == make_prompt(TEXTS[0], source=describe_spec(spec), category=rows[0].category)
    assert all(r.source == describe_spec(spec) for r in rows)
    records = list(read_records(spec, **kw))
    assert [r.row for r in records] == [1, 2, 3]
    assert records[1].values["prompt"] == TEXTS[1]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "dataset"])
def test_helpful_column_marks_rows_and_all_helpful_marks_every_row(kind: str, tmp_path: Path) -> None:
    spec, kw = make_source(kind, tmp_path, ROWS)
    assert [r.helpful for r in read_prompts(spec, helpful_column="category", **kw)] == [True, False, True]
    assert [r.category for r in read_prompts(spec, **kw)] == ["helpful", "red-team", "helpful"]
    assert all(r.helpful for r in read_prompts(spec, all_helpful=True, **kw))
    assert not any(r.helpful for r in read_prompts(spec, **kw))


@pytest.mark.parametrize(("value", "helpful"), [
    (True, True), (1, True), ("true", True), ("Yes", True), ("1", True), (" HELPFUL ", True),
    (False, False), (0, False), ("no", False), ("red-team", False), (None, False), (2, False), ("", False),
])
def test_helpful_values(value: object, helpful: bool, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "h.jsonl", [{"prompt": "x", "h": value}])
    assert next(read_prompts(path, helpful_column="h")).helpful is helpful


def test_helpful_is_not_part_of_the_prompt_id() -> None:
    assert make_prompt("x", helpful=True).prompt_id == make_prompt("x").prompt_id


def test_the_demo_marks_its_helpfulness_prompts_helpful() -> None:
    rows = load_prompts()
    assert len(rows) == 105
    assert {r.category for r in rows if r.helpful} == {"helpful"}
    assert sum(r.helpful for r in rows) == 52 and load_prompts(limit=4)[0].helpful


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "dataset", "csv", "sql"])
def test_multi_turn_conversations_are_kept_whole(kind: str, tmp_path: Path) -> None:
    rows = [{"prompt": None, "messages": CHAT}, {"prompt": "single", "messages": None}]
    if kind == "csv":
        rows = [{"messages": json.dumps(CHAT)}]
    if kind == "sql":
        db = write_db(tmp_path / "db.duckdb", [{"prompt": "Tell me a joke.", "messages": CHAT}])
        spec, kw = "sql:SELECT messages FROM prompts", {"db": db}
    else:
        spec, kw = make_source(kind, tmp_path, rows)
    got = list(read_prompts(spec, **kw))
    assert got[0].messages == tuple(CHAT) and got[0].prompt_id == make_prompt(CHAT).prompt_id
    assert got[0].text == "Tell me a joke."
    if kind in ("jsonl", "parquet", "dataset"):
        assert got[1].messages == ({"role": "user", "content": "single"},)


def test_a_conversation_in_the_prompt_column_is_read_as_turns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": CHAT}])
    assert next(read_prompts(path)).messages == tuple(CHAT)


def test_duplicates_collapse_by_prompt_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "dup.jsonl", [
        {"prompt": "a", "category": "first"}, {"prompt": "b"}, {"prompt": "a", "category": "second"},
        {"messages": [{"role": "user", "content": "a"}]},  # the same conversation as "a": the same id
        {"messages": CHAT}, {"messages": CHAT[:2]}, {"messages": CHAT},
    ])
    rows = list(read_prompts(path))
    assert [r.text for r in rows] == ["a", "b", "Tell me a joke.", "Hi"]
    assert rows[0].category == "first"
    check = check_prompts(path)
    assert (check.count, check.duplicates, check.bad_total) == (4, 3, 0)


def test_limit_counts_prompts_not_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "l.jsonl", [{"prompt": "a"}, {"prompt": "a"}, {"prompt": ""}, {"prompt": "b"},
                                              {"prompt": "c"}])
    assert [r.text for r in read_prompts(path, limit=2, skip_bad_rows=True) if not isinstance(r, BadRow)] == ["a", "b"]
    assert check_prompts(path, limit=2, skip_bad_rows=True).count == 2
    with pytest.raises(ConfigError, match="limit: expected at least 1, got 0"):
        read_prompts(path, limit=0)


# -- specs -------------------------------------------------------------------------------------------------------

def test_unknown_type_and_missing_file_name_the_file_and_the_formats(tmp_path: Path) -> None:
    (tmp_path / "p.xlsx").write_bytes(b"x")
    with pytest.raises(ConfigError) as err:
        read_prompts(tmp_path / "p.xlsx")
    assert str(err.value).startswith(f"{tmp_path / 'p.xlsx'}: unknown source type '.xlsx'; expected a .jsonl")
    assert "sql:SELECT" in str(err.value) and "save_to_disk" in str(err.value)
    with pytest.raises(ConfigError) as err:
        read_records(tmp_path / "missing.jsonl")
    assert str(err.value).startswith(f"{tmp_path / 'missing.jsonl'}: no such file or folder; expected a .jsonl")


def test_folders_that_are_not_one_dataset(tmp_path: Path) -> None:
    import datasets

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="expected a folder written by datasets.Dataset.save_to_disk"):
        read_prompts(tmp_path / "empty").__next__()
    ds = datasets.Dataset.from_list(ROWS)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match=r"got a DatasetDict with splits train, test; give one split's folder"):
        next(read_prompts(tmp_path / "dd"))
    assert len(list(read_prompts(tmp_path / "dd" / "train"))) == 3


def test_not_a_parquet_file(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_text("hello", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"x\.parquet: expected a Parquet file, got"):
        next(read_prompts(tmp_path / "x.parquet"))


def test_describe_spec_is_a_stable_identifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert describe_spec("data/../p.jsonl") == str(tmp_path / "p.jsonl") == describe_spec(tmp_path / "p.jsonl")
    assert describe_spec("  sql:  SELECT 1 ;  ") == "sql:SELECT 1" == describe_spec("SQL:SELECT 1")
    with pytest.raises(ConfigError, match="expected a query after 'sql:'"):
        describe_spec("sql: ")


# -- inspect -----------------------------------------------------------------------------------------------------

def test_inspect_source_counts_columns_and_three_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "i.jsonl", [*ROWS, {"prompt": "a", "extra": 1}, {"prompt": "a"}, {"prompt": 2}])
    info = inspect_source(path)
    assert (info.count, info.rows, info.check.duplicates, info.check.bad_total) == (4, 6, 1, 1)
    assert info.columns == ["prompt", "category", "extra"]
    assert [r.values["prompt"] for r in info.sample] == TEXTS


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_inspect_shows_a_source_without_a_prompt_column_and_names_the_flag(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from rlaif.cli import main

    rows = [{"id": i, "question": text, "answer": "no"} for i, text in enumerate(TEXTS)]
    spec, _ = make_source(kind, tmp_path, rows)
    info = inspect_source(spec)
    assert (info.has_prompt_column, info.count, info.rows, info.check.bad_total) == (False, 0, 3, 0)
    assert info.columns == ["id", "question", "answer"] and info.suggested[0] == "question"
    assert [r.values["question"] for r in info.sample] == TEXTS
    assert main(["prompts", "inspect", spec]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == ["prompts: none read (3 rows): no column 'prompt' or 'messages'",
                        "columns: id, question, answer"]
    assert len(out) == 8 and out[3].startswith("row 1: ") and TEXTS[0] in out[3]
    assert out[6:] == ["to read prompts from a column, pass --prompt-column question", "other candidates: answer"]
    assert main(["prompts", "inspect", spec, "--prompt-column", "question"]) == 0
    assert "prompts: 3 (3 rows; 0 duplicates, 0 bad, 0 helpful)" in capsys.readouterr().out


def test_rlaif_prompts_inspect(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rlaif.cli import main

    spec, _ = make_source("csv", tmp_path, [*ROWS, ROWS[0]])
    assert main(["prompts", "inspect", spec, "--helpful-column", "category"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"source:  {spec}", "prompts: 3 (4 rows; 1 duplicate, 0 bad, 2 helpful)",
                       "columns: prompt, category"]
    assert out[3:] == [f"row {i + 1}: {json.dumps(r)}" for i, r in enumerate(ROWS)]

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}, {"prompt": 1}, {"text": "b"}])
    assert main(["prompts", "inspect", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-2:] == [
        f"{bad}:2: column 'prompt': {TURNS} a number",
        f"{bad}:3: column 'prompt': expected a string or a 'messages' list, got no such column (columns: text)"]
    assert captured.err.strip() == (f"error: 2 bad rows in {bad}: fix them, or generate with --skip-bad-rows "
                                    "to record and skip them")

    db = write_db(tmp_path / "db.duckdb", [{"prompt": "q", "messages": CHAT}])
    assert main(["--db", str(db), "prompts", "inspect", "sql:SELECT messages FROM prompts"]) == 0
    assert "prompts: 1 (1 row; 0 duplicates, 0 bad, 0 helpful)" in capsys.readouterr().out
    assert main(["prompts", "inspect", str(tmp_path / "x.xlsx")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
