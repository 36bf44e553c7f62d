"""Prompt sources: every format read end to end from real files, each bad input's exact one-line message,
bad rows skipped as data, SQL through the sandbox, and streaming (a source larger than memory is never read whole)."""

from __future__ import annotations

import csv
import json
import os
import threading
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlaif.errors import ConfigError, StoreError
from rlaif.prompts import load_prompts, make_prompt
from rlaif.sources import (
    BadRow,
    Record,
    check_prompts,
    describe_spec,
    inspect_source,
    read_prompts,
    read_records,
)
from rlaif.store import Store, utcnow

ROWS = [
    {"prompt": "How do I bake bread?", "category": "helpful"},
    {"prompt": "Insult my neighbour.", "category": "red-team"},
    {"prompt": "Name three rivers.", "category": "helpful"},
]
TEXTS = [r["prompt"] for r in ROWS]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tell me a joke."}]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_delimited(path: Path, rows: list[dict], delimiter: str) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict], **kw) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, **kw)
    return path


def write_dataset(path: Path, rows: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path), num_shards=min(3, len(rows)))  # Arrow files in order
    return path


def write_db(path: Path, query_rows: list[dict]) -> Path:
    store = Store(path)
    store.migrate()
    store.insert("prompts", [{"prompt_id": f"p{i}", "text": r["prompt"], "messages": r["messages"],
                              "source": "test", "split": "train", "created_at": utcnow()}
                             for i, r in enumerate(query_rows)])
    return path


def make_source(kind: str, tmp: Path, rows: list[dict]) -> tuple[str, dict]:
    """A source of ``kind`` holding ``rows``: (spec, extra read_prompts arguments)."""
    if kind == "jsonl":
        return str(write_jsonl(tmp / "p.jsonl", rows)), {}
    if kind == "csv":
        return str(write_delimited(tmp / "p.csv", rows, ",")), {}
    if kind == "tsv":
        return str(write_delimited(tmp / "p.tsv", rows, "\t")), {}
    if kind == "parquet":
        return str(write_parquet(tmp / "p.parquet", rows)), {}
    if kind == "txt":
        (tmp / "p.txt").write_text("\n".join(r["prompt"] for r in rows) + "\n", encoding="utf-8")
        return str(tmp / "p.txt"), {}
    if kind == "dataset":
        return str(write_dataset(tmp / "ds", rows)), {}
    assert kind == "sql"
    db = write_db(tmp / "db.duckdb", [{"prompt": r["prompt"], "messages": [{"role": "user", "content": r["prompt"]}]}
                                      for r in rows])
    return "sql:SELECT text AS prompt FROM prompts ORDER BY prompt_id", {"db": db}


KINDS = ["jsonl", "csv", "tsv", "parquet", "txt", "dataset", "sql"]


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


# -- bad rows: one exact line each -------------------------------------------------------------------------------

TURNS = "expected a string or a list of {role, content} turns, got"
JSONL_BAD = [
    ({"prompt": 3}, "column 'prompt': " + TURNS + " a number"),
    ({"prompt": None}, "column 'prompt': " + TURNS + " NULL"),
    ({"prompt": {"text": "x"}}, "column 'prompt': " + TURNS + " an object"),
    ({"text": "x"}, "column 'prompt': expected a string or a 'messages' list, got no such column (columns: text)"),
    ({"prompt": "  "}, "column 'prompt': expected text, got an empty string"),
    ({"messages": []}, "column 'messages': expected a list of {role, content} turns, got an empty list"),
    ({"messages": "hi"}, "column 'messages': expected a list of {role, content} turns, got text that is not JSON"),
    ({"messages": ["hi"]}, "column 'messages': expected turn 1 to be a {role, content} object, got a string"),
    ({"messages": [{"role": "user"}]}, "column 'messages': expected turn 1 to be a {role, content} object, got keys role"),
    ({"messages": [{"role": "bot", "content": "x"}]},
     "column 'messages': expected turn 1's role to be system, user or assistant, got 'bot'"),
    ({"messages": [{"role": "user", "content": 5}]}, "column 'messages': expected turn 1's content to be a string, got a number"),
    ({"messages": CHAT[:3]}, "column 'messages': expected the last turn to be the user's, got 'assistant'"),
    ({"messages": [CHAT[1], CHAT[0], CHAT[3]]}, "column 'messages': expected a system turn only as turn 1, got one as turn 2"),
    ({"messages": [{"role": "user", "content": ""}]}, "column 'messages': expected text in the last user turn, got an empty string"),
    ([1, 2], "expected a JSON object, got a list"),
]


@pytest.mark.parametrize(("row", "reason"), JSONL_BAD, ids=[r for _, r in JSONL_BAD])
def test_jsonl_bad_rows(row: object, reason: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, row])
    with pytest.raises(ConfigError) as err:
        list(read_prompts(path))
    assert str(err.value) == f"{path}:2: {reason}"


def test_jsonl_invalid_json_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        list(read_prompts(path))
    assert str(err.value) == f"{path}:3: expected a JSON object, got invalid JSON (Expecting ',' delimiter)"


def test_a_json_array_file_is_refused_once(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text('[\n{"prompt": "a"}\n]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"array\.json: expected JSON Lines \(one object a line\), got a JSON array"):
        list(read_prompts(path))


BAD_BYTES = [
    ("jsonl", b'{"prompt": "ok"}\n\n{"prompt": "caf\xe9"}\n', 3, "column 'prompt': "),
    ("txt", b"ok\n\ncaf\xe9\n", 3, "column 'prompt': "),
    ("csv", b'prompt,n\nok,1\n"caf\xe9",2\n', 2, "column 'prompt': "),
    ("tsv", b"n\tprompt\n1\tok\n2\tcaf\xe9\n", 2, "column 'prompt': "),
]


@pytest.mark.parametrize(("kind", "data", "row", "column"), BAD_BYTES, ids=[b[0] for b in BAD_BYTES])
def test_bad_utf8_is_a_bad_row_with_its_row_number(kind: str, data: bytes, row: int, column: str,
                                                   tmp_path: Path) -> None:
    path = tmp_path / f"latin1.{kind}"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        list(read_prompts(path))
    assert str(err.value) == f"{path}:{row}: {column}expected UTF-8 text, got byte 0xe9"
    got = list(read_prompts(path, skip_bad_rows=True))
    assert [type(r).__name__ for r in got] == ["PromptRow", "BadRow"] and got[1].row == row


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt\r\nhello\r\n")
    assert next(read_prompts(path)).text == "hello"


def test_csv_rows_count_data_rows_after_the_header(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    # Row 1 spans two lines (a quoted newline), row 2 is blank (skipped, counted), row 3 is empty text.
    path.write_text('prompt,category\n"two\nlines",x\n\n,y\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        list(read_prompts(path))
    assert str(err.value) == f"{path}:3: column 'prompt': expected text, got an empty string"
    assert next(read_prompts(path)).text == "two\nlines"


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("csv", "prompt,n\na,1\nb\n", "2: expected 2 fields as in the header, got 1"),
    ("csv", "prompt,n\na,1,2\n", "1: expected 2 fields as in the header, got 3"),
    ("tsv", "prompt\tn\na\t1\t2\n", "1: expected 2 fields as in the header, got 3"),
    ("csv", 'messages\n"[{""role"": ""user""}]"\n', ("1: column 'messages': expected turn 1 to be a {role, content} "
             "object, got keys role")),
])
def test_delimited_bad_rows(kind: str, text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / f"bad.{kind}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        list(read_prompts(path))
    assert str(err.value) == f"{path}:{message}"


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet", "dataset", "txt"])
def test_a_column_the_whole_source_lacks_is_one_error(kind: str, tmp_path: Path) -> None:
    spec, _ = make_source(kind, tmp_path, ROWS)
    names = "prompt" if kind == "txt" else "prompt, category"
    with pytest.raises(ConfigError) as err:
        read_prompts(spec, prompt_column="question", skip_bad_rows=True).__next__()
    assert str(err.value) == f"{spec}: column 'question': expected a column 'question' or 'messages', got columns: {names}"
    with pytest.raises(ConfigError) as err:
        next(read_prompts(spec, helpful_column="helpfull"))
    assert str(err.value) == f"{spec}: column 'helpfull': expected a column of helpful flags, got columns: {names}"


@pytest.mark.parametrize("kind", ["parquet", "dataset"])
def test_columnar_bad_rows(kind: str, tmp_path: Path) -> None:
    rows = [{"prompt": "ok", "n": 1}, {"prompt": None, "n": 2}, {"prompt": "", "n": 3}]
    spec, _ = make_source(kind, tmp_path, rows)
    with pytest.raises(ConfigError) as err:
        list(read_prompts(spec))
    assert str(err.value) == f"{spec}:2: column 'prompt': {TURNS} NULL"
    got = list(read_prompts(spec, skip_bad_rows=True))
    assert [(type(r).__name__, getattr(r, "row", None)) for r in got] == [
        ("PromptRow", None), ("BadRow", 2), ("BadRow", 3)]
    (tmp_path / "numbers").mkdir()
    spec, _ = make_source(kind, tmp_path / "numbers", [{"prompt": 7}])
    with pytest.raises(ConfigError) as err:
        list(read_prompts(spec))
    assert str(err.value) == f"{spec}:1: column 'prompt': {TURNS} a number"


def test_skip_bad_rows_yields_bad_rows_in_place(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "a"}, {"prompt": 1}, {"x": 1}, {"prompt": "b"}])
    got = list(read_prompts(path, skip_bad_rows=True))
    assert [type(r).__name__ for r in got] == ["PromptRow", "BadRow", "BadRow", "PromptRow"]
    bad = got[1]
    assert bad == BadRow(str(path), 2, "prompt", f"{TURNS} a number")
    assert bad.message == f"{path}:2: column 'prompt': {TURNS} a number"
    row = bad.as_row("run-1")
    assert set(row) == {"run_id", "source", "row_number", "column_name", "reason", "created_at"}
    assert (row["run_id"], row["row_number"], row["column_name"]) == ("run-1", 2, "prompt")
    assert row["created_at"].tzinfo is None


def test_check_prompts_counts_and_caps_bad_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.sources import prompt_rows

    monkeypatch.setattr(prompt_rows, "MAX_BAD_ROWS", 2)
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "a", "h": "yes"}, {"prompt": 1}, {"prompt": "a"},
                                              {"prompt": ""}, {"prompt": None}, {"prompt": "b"}])
    with pytest.raises(ConfigError, match=r"c\.jsonl:2: column 'prompt'"):
        check_prompts(path)
    check = check_prompts(path, skip_bad_rows=True, helpful_column="h")
    assert (check.count, check.bad_total, check.duplicates, check.helpful) == (2, 3, 1, 1)
    assert [b.row for b in check.bad_rows] == [2, 4]


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


# -- SQL through the sandbox -------------------------------------------------------------------------------------

def test_sql_source_is_read_only_and_releases_the_database(tmp_path: Path) -> None:
    db = write_db(tmp_path / "db.duckdb", [{"prompt": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}]}
                                           for i in range(2500)])
    rows = read_prompts("sql:SELECT text AS prompt FROM prompts ORDER BY text", db=db)
    assert next(rows).text == "q0"
    # The result was spooled: the database is free for the run's own writes while the prompts stream on.
    Store(db).insert("runs", [{"run_id": "r", "kind": "sft", "status": "running", "started_at": utcnow()}])
    assert sum(1 for _ in rows) == 2499
    with pytest.raises(ConfigError) as err:
        list(read_prompts("sql:SELECT NULL AS prompt", db=db))
    assert str(err.value) == f"sql:1: column 'prompt': {TURNS} NULL"
    with pytest.raises(StoreError, match="read-only: DELETE is not allowed"):
        list(read_prompts("sql:DELETE FROM prompts", db=db))
    with pytest.raises(StoreError, match="cannot read files outside the database"):
        list(read_prompts(f"sql:SELECT * FROM read_csv('{tmp_path}/x.csv')", db=db))
    assert Store(db).fetch("SELECT count(*) AS n FROM prompts") == [{"n": 2500}]
    with pytest.raises(ConfigError, match="a sql: source needs the project database"):
        list(read_prompts("sql:SELECT 1 AS prompt"))
    assert list(read_prompts("sql:SELECT text AS prompt FROM prompts WHERE false", db=db)) == []


def test_a_long_sql_source_query_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.sources import sql

    monkeypatch.setattr(sql, "SPOOL_TIMEOUT_S", 0.3)
    db = write_db(tmp_path / "db.duckdb", [])
    with pytest.raises(StoreError, match=r"stopped the query after 0\.3s"):
        list(read_prompts("sql:SELECT count(*)::VARCHAR AS prompt FROM range(1000000000000) a, range(1000) b", db=db))


# -- streaming ---------------------------------------------------------------------------------------------------

def _endless_fifo(path: Path, header: str, line: str) -> threading.Thread:
    """A named pipe that yields ``line`` forever: a source no reader could hold whole, read until it is closed."""
    os.mkfifo(path)

    def feed() -> None:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(header)
                while True:
                    f.write(line * 1000)
        except (BrokenPipeError, OSError):
            return  # the reader closed the pipe

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("suffix", "header", "line"), [
    (".jsonl", "", '{"prompt": "again"}\n'), (".csv", "prompt\n", "again\n"), (".txt", "", "again\n"),
])
def test_text_sources_stream_an_endless_file(suffix: str, header: str, line: str, tmp_path: Path) -> None:
    feeder = _endless_fifo(tmp_path / f"endless{suffix}", header, line)
    records = read_records(tmp_path / f"endless{suffix}")
    got = list(islice(records, 5000))
    assert [r.row for r in got[:3]] == [1, 2, 3] and len(got) == 5000
    records.close()  # closes the file: the feeder's next write fails and it stops
    feeder.join(timeout=5)
    assert not feeder.is_alive()


def test_duplicates_collapse_while_streaming(tmp_path: Path) -> None:
    feeder = _endless_fifo(tmp_path / "same.jsonl", '{"prompt": "first"}\n', '{"prompt": "again"}\n')
    prompts = read_prompts(tmp_path / "same.jsonl")
    assert [next(prompts).text, next(prompts).text] == ["first", "again"]
    prompts.close()
    feeder.join(timeout=5)
    assert not feeder.is_alive()


def test_parquet_is_read_a_batch_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_parquet(tmp_path / "big.parquet", [{"prompt": f"p{i}"} for i in range(20_000)], row_group_size=2000)
    pulled: list[int] = []
    real = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            pulled.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    prompts = read_prompts(path)
    assert next(prompts).text == "p0"
    assert pulled == [1024]  # one batch of 20 read so far
    assert sum(1 for _ in prompts) == 19_999 and sum(pulled) == 20_000


def test_records_are_frozen_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "a", "extra": [1, 2]}])
    (record,) = read_records(path)
    assert record == Record(str(path), 1, {"prompt": "a", "extra": [1, 2]})
    with pytest.raises(ConfigError, match=r"r2\.jsonl:1: expected a JSON object, got a number"):
        list(read_records(write_jsonl(tmp_path / "r2.jsonl", [3])))
    assert isinstance(next(read_records(tmp_path / "r2.jsonl", skip_bad_rows=True)), BadRow)


# -- inspect -----------------------------------------------------------------------------------------------------

def test_inspect_source_counts_columns_and_three_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "i.jsonl", [*ROWS, {"prompt": "a", "extra": 1}, {"prompt": "a"}, {"prompt": 2}])
    info = inspect_source(path)
    assert (info.count, info.rows, info.check.duplicates, info.check.bad_total) == (4, 6, 1, 1)
    assert info.columns == ["prompt", "category", "extra"]
    assert [r.values["prompt"] for r in info.sample] == TEXTS


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
