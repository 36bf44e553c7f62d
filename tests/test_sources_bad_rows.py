"""Prompt sources' bad rows: each bad input's exact one-line message, with the row number the user counts, and
bad rows skipped as data (``skip_bad_rows``) or counted by ``check_prompts``."""

from __future__ import annotations

from pathlib import Path

import pytest
from source_files import CHAT, ROWS, TURNS, make_source, write_jsonl

from rlaif.errors import ConfigError
from rlaif.sources import BadRow, check_prompts, read_prompts

JSONL_BAD = [
    ({"prompt": 3}, "column 'prompt': " + TURNS + " a number"),
    ({"prompt": None}, "column 'prompt': " + TURNS + " NULL"),
    ({"prompt": {"text": "x"}}, "column 'prompt': " + TURNS + " an object"),
    ({"text": "x"}, "column 'prompt': expected a string or a 'messages' list, got no such column (columns: text)"),
    ({"prompt": "  "}, "column 'prompt': expected text, got an empty string"),
    ({"messages": []}, "column 'messages': expected a list of {role, content} turns, got an empty list"),
    ({"messages": "hi"}, "column 'messages': expected a list of {role, content} turns, got text that is not JSON"),
    ({"messages": ["hi"]}, "column 'messages': expected turn 1 to be a {role, content} object, got a string"),
    ({"messages": [{"role": "user"}]},
     "column 'messages': expected turn 1 to be a {role, content} object, got keys role"),
    ({"messages": [{"role": "bot", "content": "x"}]},
     "column 'messages': expected turn 1's role to be system, user or assistant, got 'bot'"),
    ({"messages": [{"role": "user", "content": 5}]},
     "column 'messages': expected turn 1's content to be a string, got a number"),
    ({"messages": CHAT[:3]}, "column 'messages': expected the last turn to be the user's, got 'assistant'"),
    ({"messages": [CHAT[1], CHAT[0], CHAT[3]]},
     "column 'messages': expected a system turn only as turn 1, got one as turn 2"),
    ({"messages": [{"role": "user", "content": ""}]},
     "column 'messages': expected text in the last user turn, got an empty string"),
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
    assert str(err.value) == (f"{spec}: column 'question': expected a column 'question' or 'messages', "
                              f"got columns: {names}")
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
