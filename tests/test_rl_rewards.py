"""Reward specs, rule functions (imported from the current directory), weights, and their one-line errors."""

from __future__ import annotations

import pytest

from rlaif.errors import ConfigError
from rlaif.train.rewards import (
    CombinedReward,
    RewardBatch,
    RewardSpec,
    RuleReward,
    SourceScores,
    fill_missing,
    parse_reward_spec,
    parse_reward_specs,
)

RULES = '''
def ends_with_please(prompts, completions, **info):
    return [1.0 if c.endswith("please") else 0.0 for c in completions]

def length(prompts, completions, *, ended, **info):
    return [len(c) if e else None for c, e in zip(completions, ended)]

def broken(prompts, completions, **info):
    raise ValueError("no scores today")

def wrong_count(prompts, completions, **info):
    return [1.0]

def not_a_number(prompts, completions, **info):
    return ["high" for _ in completions]

def one_argument(text):
    return 1.0
'''


def batch(*responses: str, ended=None) -> RewardBatch:
    n = len(responses)
    return RewardBatch(messages=[[{"role": "user", "content": f"q{i}"}] for i in range(n)], responses=responses,
                       prompt_ids=[f"p{i}" for i in range(n)], ended=ended or [True] * n)


@pytest.fixture
def rules_dir(tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text(RULES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_parse_specs_and_weights():
    assert parse_reward_spec("judge") == RewardSpec("judge", "", 1.0)
    assert parse_reward_spec("rm:runs/rm/final@0.5") == RewardSpec("rm", "runs/rm/final", 0.5)
    assert parse_reward_spec("rule:my_rules:length@-2") == RewardSpec("rule", "my_rules:length", -2.0)
    assert parse_reward_spec("rm:/data/model@v2").target == "/data/model@v2"  # an '@' in a path is no weight
    assert str(parse_reward_spec("rule:a:b@0.5")) == "rule:a:b@0.5"
    for bad in ("rule:nofunction", "rm:", "judge:x", "bandit", "rule::f"):
        with pytest.raises(ConfigError, match="expected rm:CKPT | judge | rule:module:function"):
            parse_reward_spec(bad)
    with pytest.raises(ConfigError, match="twice"):
        parse_reward_specs(["judge", "judge@2"])
    with pytest.raises(ConfigError, match="at least one"):
        parse_reward_specs([])


def test_rule_from_the_current_directory(rules_dir):
    rule = RuleReward("my_rules:ends_with_please")
    assert rule.score(batch("thanks", "yes please")).values == [0.0, 1.0]
    lengths = RuleReward("my_rules:length").score(batch("abc", "de", ended=[True, False]))
    assert lengths.values == [3.0, None] and lengths.details[1] == "the rule returned None"


@pytest.mark.parametrize("target, message", [
    ("no_such_module:f", "cannot import module 'no_such_module'"),
    ("my_rules:missing", "has no function 'missing'"),
    ("my_rules:broken", "rule:my_rules:broken raised ValueError: no scores today"),
    ("my_rules:wrong_count", "returned 1 values for 2 completions"),
    ("my_rules:not_a_number", "returned 'high' for completion 0"),
    ("my_rules:one_argument", r"expected def f\(prompts, completions, \*\*info\)"),
])
def test_rule_errors_are_one_line(rules_dir, target, message):
    with pytest.raises(ConfigError, match=message) as info:
        RuleReward(target).score(batch("a", "b"))
    assert "\n" not in str(info.value)


class Constant:
    def __init__(self, source, values):
        self.source, self.values = source, values

    def score(self, b):
        return SourceScores(list(self.values), [None] * len(self.values))


def test_combined_reward_weights_and_missing_values():
    combined = CombinedReward([(Constant("a", [1.0, 3.0, None]), 2.0), (Constant("b", [0.5, 0.5, 0.5]), -1.0)])
    scores = combined.score(batch("x", "y", "z"))
    # a's missing value takes a's batch mean, 2.0: totals 2*1 - 0.5, 2*3 - 0.5, 2*2 - 0.5
    assert scores.total == [1.5, 5.5, 3.5]
    assert scores.by_source["a"].values == [1.0, 3.0, None]  # what is stored keeps the NULL
    rows = scores.rows(["k1", "k2", "k3"], "run", now=None)
    assert len(rows) == 6 and {r["source"] for r in rows} == {"a", "b"}
    assert [r["value"] for r in rows if r["source"] == "a"] == [1.0, 3.0, None]
    assert all(r["weight"] == -1.0 for r in rows if r["source"] == "b")
    assert fill_missing([None, None]) == [0.0, 0.0]


def test_the_monitor_warns_when_the_proxy_rises_and_the_judge_falls():
    from rlaif.train.overopt import Measurement, divergence

    def m(step, proxy, judge):
        return Measurement(step, 8, 0.0, 10.0, 1.0, proxy, judge)

    history = [m(0, 0.0, 0.5), m(10, 0.3, 0.6), m(20, 0.5, 0.55)]
    # compared with step 10 (the judge's best): proxy +0.4, judge -0.2
    w = divergence(history, m(30, 0.7, 0.4), proxy_margin=0.0, judge_margin=0.05)
    assert (w.since_step, round(w.proxy_delta, 6), round(w.judge_delta, 6)) == (10, 0.4, -0.2)
    assert "rose by +0.400" in w.message and "fell by -0.200 since step 10" in w.message
    assert divergence(history, m(30, 0.7, 0.58), proxy_margin=0.0, judge_margin=0.05) is None  # a small dip
    assert divergence(history, m(30, 0.2, 0.1), proxy_margin=0.0, judge_margin=0.05) is None  # both fell
    assert divergence(history, m(30, 0.9, None), proxy_margin=0.0, judge_margin=0.05) is None  # no judge


def test_the_judge_reward_is_the_d_rlaif_score_mapped_onto_minus_one_one(settings):
    import math

    from rlaif.engines.fake import FakeEngine
    from rlaif.judge.arithmetic import score_expectation
    from rlaif.judge.modes import SCORE_CHOICES
    from rlaif.train.judge_reward import judge_reward
    from rlaif.train.reward_sources import judge_to_reward

    assert (judge_to_reward(1.0), judge_to_reward(5.5), judge_to_reward(10.0)) == (-1.0, 0.0, 1.0)
    engine = FakeEngine().prefer("8", 0.9)
    reward = judge_reward(settings, "harmless", engine=engine)
    b = batch("a kind answer", "another answer")
    scores = reward.score(b)
    rest = math.log(0.1 / 9)
    expected = score_expectation({c: math.log(0.9) if c == "8" else rest for c in SCORE_CHOICES})
    assert scores.values == pytest.approx([judge_to_reward(expected)] * 2)
    assert scores.details[0] == f"score {expected:.3f} of 10"
    assert len(engine.choice_requests) == 2 and "a kind answer" in engine.choice_requests[0].prompt
    assert engine.choice_requests[0].choices == SCORE_CHOICES

    failing = FakeEngine().fail(stages=("judge",))
    out = judge_reward(settings, "harmless", engine=failing).score(batch("x"))
    assert out.values == [None] and "could not be read" in out.details[0]  # a failure is no score, never a default
