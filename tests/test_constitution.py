"""Constitution format: the shipped files load, the version hashes content only, and every kind of broken file
gives one ``file:line: field: message`` error. Also the demo prompt set. No model here: all of it is fast."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from rlaif.constitution import (
    MAX_BYTES,
    TEMPLATE_FIELDS,
    Constitution,
    constitution_json_schema,
    describe,
    load_constitution,
    render,
    resolve_constitution,
    shipped_constitutions,
)
from rlaif.errors import ConfigError, ConstitutionError, TemplateError
from rlaif.resources import package_file

BAD = Path(__file__).parent / "data" / "bad_constitutions"
SHIPPED = {p.stem: p for p in shipped_constitutions()}


def _error(path: Path) -> ConstitutionError:
    with pytest.raises(ConstitutionError) as info:
        load_constitution(path)
    return info.value


# --- the shipped constitutions ---------------------------------------------------------------------------------


def test_three_constitutions_ship():
    assert set(SHIPPED) == {"harmless", "helpful-harmless", "example"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_constitution_loads_and_renders(name):
    c = load_constitution(SHIPPED[name])
    assert c.name == name and c.source == SHIPPED[name]
    assert re.fullmatch(r"[0-9a-f]{16}", c.version)
    for field, (_, allowed) in TEMPLATE_FIELDS.items():
        text = render(getattr(c.templates, field), **{f: f"<{f}>" for f in allowed})
        assert "{" not in text.replace("{{", "")
    judge = render(c.templates.judge, conversation="c", question="q", response_a="a", response_b="b")
    assert judge.endswith("(")
    for example in c.fewshot.critique_revision:
        assert c.principle(example.principle).id == example.principle
    for example in c.fewshot.judge:
        assert c.judge_principle(example.principle).id == example.principle


def test_shipped_sizes_match_the_brief():
    harmless, hh, example = (load_constitution(SHIPPED[n]) for n in ("harmless", "helpful-harmless", "example"))
    assert len(harmless.principles) >= 14 and len(harmless.judge_principles) >= 5
    assert {e.answer for e in harmless.fewshot.judge} == {"A", "B"}
    assert len(harmless.fewshot.critique_revision) == 2
    assert len(hh.principles) >= 7 and len(hh.judge_principles) >= 4
    assert len(hh.fewshot.critique_revision) == 1 and len(hh.fewshot.judge) == 1
    assert (len(example.principles), len(example.judge_principles)) == (2, 1)
    assert not example.fewshot.critique_revision and not example.fewshot.judge


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_fewshot_fits_a_small_context(name):
    """The few-shot block goes with every request to a 2048-token model: keep it near 800 tokens (~4 chars each)."""
    c = load_constitution(SHIPPED[name])
    critique = 0
    for e in c.fewshot.critique_revision:
        p = c.principle(e.principle)
        critique += sum(map(len, (e.prompt, e.response, p.critique_request, e.critique, p.revision_request,
                                   e.revision)))
    judge = 0
    for e in c.fewshot.judge:
        judge += len(c.templates.judge) + sum(map(len, (e.prompt, e.response_a, e.response_b)))
        judge += len(c.judge_principle(e.principle).question)
    assert critique < 3200 and judge < 3200


def test_principle_lookup_names_allowed_ids():
    c = load_constitution(SHIPPED["example"])
    with pytest.raises(ConfigError, match="no principle 'nope'; expected one of: harmful, unhelpful"):
        c.principle("nope")
    with pytest.raises(ConfigError, match="expected one of: better"):
        c.judge_principle("nope")


def test_describe_lists_each_principle():
    c = load_constitution(SHIPPED["harmless"])
    text = describe(c)
    assert c.version in text and str(c.source) in text
    assert all(p.id in text for p in [*c.principles, *c.judge_principles])


# --- version -----------------------------------------------------------------------------------------------------


def _reformatted(src: Path, dst: Path, edit=None) -> Path:
    """Write ``src`` again as plain block YAML with keys reversed and a new comment: same content, new text."""
    data = json.loads(json.dumps(YAML(typ="safe").load(src.read_text())))
    if edit:
        edit(data)

    def reverse(node):
        if isinstance(node, dict):
            return {k: reverse(node[k]) for k in reversed(list(node))}
        return [reverse(v) for v in node] if isinstance(node, list) else node

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with dst.open("w") as f:
        f.write("# rewritten by a test: other order, other layout\n")
        yaml.dump(reverse(data), f)
    return dst


def test_version_ignores_layout_comments_and_key_order(tmp_path):
    original = load_constitution(SHIPPED["harmless"])
    copy = _reformatted(SHIPPED["harmless"], tmp_path / "copy.yaml")
    assert copy.read_text() != SHIPPED["harmless"].read_text()
    assert load_constitution(copy).version == original.version


def test_version_changes_with_a_principle_text(tmp_path):
    def edit(data):
        data["principles"][0]["revision_request"] += " Be brief."

    changed = _reformatted(SHIPPED["harmless"], tmp_path / "changed.yaml", edit)
    assert load_constitution(changed).version != load_constitution(SHIPPED["harmless"]).version


def test_version_ignores_source():
    a = load_constitution(SHIPPED["example"])
    b = Constitution.model_validate(a.model_dump())
    assert b.source is None and b.version == a.version


def test_a_changed_copy_has_its_own_version_and_derived_values():
    a = load_constitution(SHIPPED["example"])
    fence = lambda c: c.judge.candidate  # noqa: E731 - a build function for Constitution.derived
    assert a.derived(fence) == a.judge.candidate  # cache the version and a derived value first
    b = a.model_copy(update={"judge": a.judge.model_copy(update={"candidate": "[[[{text}]]]"})})
    assert b.version != a.version and b.derived(fence) == "[[[{text}]]]" and a.derived(fence) == a.judge.candidate
    assert a.model_copy().version == a.version


# --- broken files ----------------------------------------------------------------------------------------------

BAD_CASES = [
    ("syntax.yaml", 5, "", "invalid YAML: expected ',' or ']'"),
    ("not_mapping.yaml", 2, "", "expected a mapping"),
    ("missing_field.yaml", 7, "principles[1].revision_request", "Field required"),
    ("unknown_field.yaml", 10, "judge_principles[0].colour", "unknown field; expected one of: id, question"),
    ("misspelt_field.yaml", 5, "principles[0].critque_request", "did you mean 'critique_request'?"),
    ("wrong_type.yaml", 7, "principles[0].weight", "should be a number (got text)"),
    ("duplicate_id.yaml", 10, "principles[2].id", "duplicate id 'harmful'"),
    ("empty_principles.yaml", 3, "principles", "needs at least 1 item; got none"),
    ("unknown_fewshot_principle.yaml", 15, "fewshot.judge[0].principle", "unknown judge_principles id 'more-polite'"),
    ("unknown_placeholder.yaml", 15, "templates.judge", "unknown placeholder {respnse_a}; allowed: conversation"),
    ("missing_placeholder.yaml", 12, "templates.revision", "missing placeholder {revision_request}"),
    ("duplicate_key.yaml", 7, "", "duplicate key 'name'"),
    ("judge_trailing_newline.yaml", 15, "templates.judge", "must end with '('"),
    ("format_spec.yaml", 11, "templates.critique", "may not have a conversion or format spec"),
    ("bad_id.yaml", 4, "principles[0].id", "'Harmful Content' should use only lowercase letters"),
]


@pytest.mark.parametrize(("name", "line", "field", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_file_gives_file_line_field(name, line, field, message):
    err = _error(BAD / name)
    assert (err.file, err.line, err.field) == (str(BAD / name), line, field)
    assert message in err.message
    assert str(err).startswith(f"{BAD / name}:{line}: ") and "\n" not in str(err)


def test_every_bad_file_is_tested():
    assert {p.name for p in BAD.glob("*.yaml")} == {c[0] for c in BAD_CASES}


def test_file_not_found(tmp_path):
    err = _error(tmp_path / "nope.yaml")
    assert str(err) == f"{tmp_path / 'nope.yaml'}: file not found"


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\u00e9\n".encode("latin-1"))
    err = _error(path)
    assert err.line == 2 and "not valid UTF-8" in err.message


def test_too_large_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"[" * (MAX_BYTES + 1))  # would be a YAML error if it were parsed
    assert "at most 5,242,880" in _error(path).message


@pytest.mark.parametrize(("text", "message"), [("", "got an empty file"), ("- a\n- b\n", "got list")])
def test_top_level_must_be_a_mapping(tmp_path, text, message):
    path = tmp_path / "top.yaml"
    path.write_text(text)
    assert message in _error(path).message


def test_alias_bomb_is_bounded(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert "too large once YAML aliases are expanded" in _error(path).message


def test_attribute_access_in_a_template_is_refused(tmp_path):
    text = SHIPPED["example"].read_text().replace('"Human: {content}"', '"Human: {content.text}"')
    path = tmp_path / "attr.yaml"
    path.write_text(text)
    err = _error(path)
    assert err.field == "templates.human_turn" and "must be a plain name" in err.message


# --- render --------------------------------------------------------------------------------------------------------


def test_render_fills_and_leaves_value_braces_alone():
    assert render("{a} and {{b}} then {c}", a="{c}", c="}{") == "{c} and {b} then }{"


def test_render_missing_value_is_a_template_error():
    with pytest.raises(TemplateError, match=r"template needs \{b\}; got a"):
        render("{a} {b}", a="x")


def test_render_rejects_attribute_access():
    with pytest.raises(TemplateError, match="plain name"):
        render("{a.b}", a="x")


# --- finding files, schema ----------------------------------------------------------------------------------------


def test_resolve_finds_shipped_by_name_and_paths_as_themselves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_constitution("harmless") == SHIPPED["harmless"]
    assert resolve_constitution("harmless.yaml") == SHIPPED["harmless"]
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    assert resolve_constitution(mine) == mine
    with pytest.raises(ConfigError, match="shipped: example, harmless, helpful-harmless"):
        resolve_constitution("harmles")


def test_json_schema_has_the_top_level_properties():
    schema = constitution_json_schema()
    assert set(schema["properties"]) == {
        "name", "description", "system_prompt", "principles", "judge_principles", "fewshot", "templates", "judge"
    }
    assert set(schema["required"]) == {"name", "principles", "judge_principles", "templates"}
    assert schema["title"] and schema["description"]
    json.dumps(schema)


# --- demo prompts --------------------------------------------------------------------------------------------------


def test_demo_prompts():
    lines = package_file("data", "demo_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(set(r) == {"prompt", "category"} and r["prompt"].strip() for r in rows)
    categories = [r["category"] for r in rows]
    assert set(categories) == {"red-team", "helpful"}
    assert categories.count("red-team") >= 50 and categories.count("helpful") >= 50
    assert len({r["prompt"].strip().lower() for r in rows}) == len(rows)
    assert set(categories[:10]) == {"red-team", "helpful"}
