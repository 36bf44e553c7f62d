"""`rlaif sql`: one read-only statement, no files, no settings; every refusal is one clear line."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import duckdb
import pytest

from rlaif.errors import ConfigError, StoreError
from rlaif.sandbox import SANDBOX_CONFIG, Written, sandbox_query, sandbox_write
from rlaif.store import Store, utcnow

READ_ONLY = "rlaif sql is read-only: "
NO_FILES = "rlaif sql cannot read files outside the database: "

# (statement, the start of the one-line refusal)
REFUSED = [
    ("INSERT INTO prompts VALUES ('x', 'x', [], NULL, NULL, now()::TIMESTAMP)", READ_ONLY + "INSERT is not allowed"),
    ("UPDATE prompts SET text = 'pwned'", READ_ONLY + "UPDATE is not allowed"),
    ("DELETE FROM prompts", READ_ONLY + "DELETE is not allowed"),
    ("DROP TABLE prompts", READ_ONLY + "DROP TABLE is not allowed"),
    ("DROP VIEW sft_dataset", READ_ONLY + "DROP VIEW is not allowed"),
    ("CREATE TABLE t (a INTEGER)", READ_ONLY + "CREATE TABLE is not allowed"),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", READ_ONLY + "CREATE VIEW is not allowed"),
    ("CREATE TEMP TABLE t AS SELECT 1", READ_ONLY + "CREATE TABLE is not allowed"),
    ("ALTER TABLE prompts ADD COLUMN z INTEGER", READ_ONLY + "ALTER TABLE is not allowed"),
    ("ATTACH '/tmp/other.duckdb' AS other", READ_ONLY + "ATTACH is not allowed"),
    ("COPY prompts TO '/tmp/rlaif-leak.csv'", READ_ONLY + "COPY ... TO is not allowed"),
    ("COPY (SELECT * FROM prompts) TO '/tmp/rlaif-leak.parquet' (FORMAT parquet)", READ_ONLY + "COPY ... TO"),
    ("EXPORT DATABASE '/tmp/rlaif-leak'", READ_ONLY + "EXPORT DATABASE is not allowed"),
    ("INSTALL httpfs", READ_ONLY + "INSTALL is not allowed"),
    ("LOAD httpfs", READ_ONLY + "LOAD is not allowed"),
    ("SET threads = 1", READ_ONLY + "SET is not allowed"),
    ("PRAGMA threads = 1", READ_ONLY + "PRAGMA threads is not allowed"),
    ("PRAGMA force_checkpoint", READ_ONLY + "PRAGMA force_checkpoint is not allowed"),
    ("CHECKPOINT", READ_ONLY + "CHECKPOINT is not allowed"),
    ("VACUUM", READ_ONLY + "VACUUM is not allowed"),
    ("BEGIN TRANSACTION", READ_ONLY + "BEGIN is not allowed"),
    ("EXPLAIN DELETE FROM prompts", READ_ONLY + "DELETE is not allowed"),
    ("SELECT * FROM read_csv('/etc/passwd')", NO_FILES + "/etc/passwd"),
    ("SELECT * FROM read_text('/etc/hostname')", NO_FILES + "/etc/hostname"),
    ("SELECT * FROM glob('/etc/*')", NO_FILES + "/etc/*"),
    ("SELECT 1; SELECT 2", "rlaif sql runs exactly one statement; got 2"),
    ("SELECT 1; DELETE FROM prompts", "rlaif sql runs exactly one statement; got 2"),
    ("", "rlaif sql runs exactly one statement; got 0"),
    ("SELEC 1", "rlaif sql: Parser Error: syntax error"),
    ("SELECT * FROM no_such_table", "rlaif sql: Catalog Error: Table with name no_such_table does not exist"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = Store(tmp_path_factory.mktemp("sandbox") / "rlaif.duckdb")
    store.migrate()
    prompts = [{"prompt_id": f"p{i}", "text": f"prompt {i}", "messages": [{"role": "user", "content": f"prompt {i}"}],
                "split": "train", "created_at": utcnow()} for i in range(3)]
    runs = [{"run_id": "r1", "kind": "sft", "status": "completed", "params": '{"rounds": 2}', "started_at": utcnow()}]
    revisions = [{"chain_id": "c0", "round": 1, "run_id": "r1", "prompt_id": "p0", "principle_id": "harm",
                  "original": "o", "before": "o", "revision": "better", "constitution_name": "harmless",
                  "constitution_version": "v1", "model": "m", "created_at": utcnow()}]
    store.write({"prompts": prompts, "runs": runs, "revisions": revisions})
    return store.path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("sql", "message"), REFUSED, ids=[s[:40] for s, _ in REFUSED])
def test_refused_with_one_clear_line(db: Path, sql: str, message: str) -> None:
    with pytest.raises(StoreError) as err:
        sandbox_query(db, sql)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_the_file_is_byte_identical_after_every_refusal(db: Path) -> None:
    before = digest(db)
    for sql, _ in REFUSED:
        with pytest.raises(StoreError):
            sandbox_query(db, sql)
    sandbox_query(db, "SELECT * FROM checkpoint()")  # a SELECT that asks for a checkpoint: a no-op read-only
    assert digest(db) == before
    assert not Path("/tmp/rlaif-leak.csv").exists() and not Path("/tmp/rlaif-leak.parquet").exists()


@pytest.mark.parametrize("sql", [
    "DELETE FROM prompts",
    "CREATE TABLE t (a INTEGER)",
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY prompts TO '/tmp/rlaif-leak.csv'",
    "SET threads = 1",
    "LOAD httpfs",
])
def test_the_connection_itself_refuses_without_the_statement_check(db: Path, sql: str) -> None:
    # The statement check gives clear messages; the guard is DuckDB's read-only, no-file-access connection.
    with Store(db).connect(read_only=True, config=SANDBOX_CONFIG) as con, pytest.raises(duckdb.Error):
        con.execute(sql)


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT count(*) AS n FROM prompts", [{"n": 3}]),
    ("SELECT prompt_id, completion FROM sft_dataset", [{"prompt_id": "p0", "completion": "better"}]),
    ("FROM preference_dataset SELECT count(*) AS n", [{"n": 0}]),
    ("WITH t AS (SELECT prompt_id FROM prompts WHERE prompt_id > 'p0') SELECT count(*) AS n FROM t", [{"n": 2}]),
    ("SELECT params->>'rounds' AS rounds FROM runs", [{"rounds": "2"}]),
    ("SELECT version, name FROM schema_migrations ORDER BY version LIMIT 1", [{"version": 1, "name": "001_initial"}]),
])
def test_reads_are_allowed(db: Path, sql: str, expected: list[dict]) -> None:
    assert json.loads(sandbox_query(db, sql, fmt="json")) == expected


@pytest.mark.parametrize("sql", ["DESCRIBE prompts", "SHOW TABLES", "PRAGMA table_info('runs')", "EXPLAIN SELECT 1",
                                 "SUMMARIZE prompts"])
def test_schema_inspection_is_allowed(db: Path, sql: str) -> None:
    assert sandbox_query(db, sql).strip()


QUERY = "SELECT * FROM (VALUES (1, 'a', 0.5), (22, NULL, NULL)) t(n, s, x) ORDER BY n"


def test_table_format_is_aligned_plain_text(db: Path) -> None:
    assert sandbox_query(db, QUERY) == (
        " n | s    |    x\n"
        "---+------+-----\n"
        " 1 | a    |  0.5\n"
        "22 | NULL | NULL\n"
        "(2 rows)\n"
    )


def test_csv_format_has_a_header_and_empty_nulls(db: Path) -> None:
    assert sandbox_query(db, QUERY, fmt="csv") == "n,s,x\n1,a,0.5\n22,,\n"


def test_json_format_is_an_array_of_objects(db: Path) -> None:
    rows = json.loads(sandbox_query(db, "SELECT prompt_id, messages, created_at FROM prompts ORDER BY 1", fmt="json"))
    assert [r["prompt_id"] for r in rows] == ["p0", "p1", "p2"]
    assert rows[0]["messages"] == [{"role": "user", "content": "prompt 0"}]
    assert isinstance(rows[0]["created_at"], str)  # datetimes via default=str


def test_max_rows_cuts_and_the_table_says_so(db: Path) -> None:
    table = sandbox_query(db, "SELECT prompt_id FROM prompts ORDER BY 1", max_rows=2)
    assert table.splitlines()[-1].startswith("(first 2 rows shown")
    assert sandbox_query(db, "SELECT prompt_id FROM prompts ORDER BY 1", fmt="csv", max_rows=2) == "prompt_id\np0\np1\n"


def test_a_long_query_is_stopped(db: Path) -> None:
    with pytest.raises(StoreError, match=r"stopped the query after 0\.3s"):
        sandbox_query(db, "SELECT count(*) FROM range(1000000000000) a, range(1000) b", timeout_s=0.3)


def test_unknown_format_and_missing_database(db: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of: table, csv, json, jsonl"):
        sandbox_query(db, "SELECT 1", fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no database at"):
        sandbox_query(tmp_path / "missing.duckdb", "SELECT 1")


# -- every row, or a limit that says what it left out ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_every_row_is_written_when_no_limit_is_given(db: Path, fmt: str) -> None:
    buf = io.StringIO()
    assert sandbox_write(db, "SELECT range AS n FROM range(20000)", buf, fmt=fmt) == Written(20000, 0)
    text = buf.getvalue()
    if fmt == "csv":
        lines = text.splitlines()
        assert lines[0] == "n" and lines[1:] == [str(i) for i in range(20000)]
    elif fmt == "json":
        assert [r["n"] for r in json.loads(text)] == list(range(20000))
    else:
        assert [json.loads(line)["n"] for line in text.splitlines()] == list(range(20000))


def test_a_limit_counts_the_rows_it_left_out(db: Path) -> None:
    buf = io.StringIO()
    assert sandbox_write(db, "SELECT range AS n FROM range(3000)", buf, fmt="jsonl", max_rows=1500) == Written(1500,
                                                                                                           1500)
    assert [json.loads(line)["n"] for line in buf.getvalue().splitlines()] == list(range(1500))
    empty = io.StringIO()
    assert sandbox_write(db, "SELECT 1 AS n WHERE false", empty, fmt="csv") == Written(0, 0)
    assert empty.getvalue() == "n\n"
    assert sandbox_query(db, "SELECT 1 AS n WHERE false", fmt="json") == "[]"


def test_the_sql_command_says_on_stderr_how_many_rows_were_left_out(db: Path, capsys: pytest.CaptureFixture) -> None:
    from rlaif.cli import main

    assert main(["--db", str(db), "sql", "select * from range(20000)", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 20001 and captured.err == ""
    assert main(["--db", str(db), "sql", "select * from range(20000)", "--format", "jsonl", "--max-rows", "7"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 7
    assert captured.err == "rlaif sql: wrote 7 rows; 19993 more left out by --max-rows 7\n"
    assert main(["--db", str(db), "sql", "select * from range(20000)"]) == 0
    captured = capsys.readouterr()
    assert "10000 more left out" in captured.out.splitlines()[-1] and "table's default of 10000 rows" in captured.err
