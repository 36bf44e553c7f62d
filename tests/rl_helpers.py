"""Helpers for the RL tests: a store of prompts for the tiny model and a rule reward file in the working directory.

The rule rewards an answer that ends with the word "word": the tiny random model ends about 3% of its 8-token
answers so at the start (measured on these prompts), so the reward has room to rise and is seen from step one.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.prompts import make_prompt
from rlaif.store import Store

WORDS = ("cat dog bird fish tree river mountain city house road car train book letter word sentence story poem "
         "song").split()

RULES = '''
def ends_with_word(prompts, completions, **info):
    return [1.0 if c.rstrip().endswith("word") else 0.0 for c in completions]

def dislikes_word(prompts, completions, **info):
    return [0.0 if c.rstrip().endswith("word") else 1.0 for c in completions]
'''
RULE = "rule:rl_test_rules:ends_with_word"
# A stand-in judge that disagrees with the proxy: as the policy learns the proxy, this "judge" falls.
CONTRARY_JUDGE = "rl_test_rules:dislikes_word"


def shared_tiny_model(tmp_path_factory) -> Path:
    """The tiny model, built once per test session for every RL test module (building it takes seconds)."""
    from tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.getbasetemp() / "tiny-llama-rl")


def prompt_store(path: Path, n: int = 48) -> Store:
    """A migrated store holding ``n`` short prompts (about a tenth of them fall in the eval split)."""
    store = Store(path)
    store.migrate()
    store.insert("prompts", [make_prompt(f"tell me about the {WORDS[i % len(WORDS)]} number {i}").as_row()
                             for i in range(n)])
    return store


def write_rules(folder: Path) -> str:
    (Path(folder) / "rl_test_rules.py").write_text(RULES, encoding="utf-8")
    return RULE
