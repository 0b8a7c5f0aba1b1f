"""Hostile YAML costs little: an alias bomb or a self-holding alias is refused before it is built, a key given twice
is refused, and an error line quotes a value in bounded time (never the repr of all of it)."""
import time

import pytest

from ctinit.errors import ConfigError
from ctinit.schema import MAX_YAML_NODES, yaml_load
from ctinit_training.config import load_config

from robust_support import TINY

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
FLOW_BOMB = "[&a [x, x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], " \
            "&c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], " \
            "&e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]]"


@pytest.mark.parametrize("text", [BOMB, FLOW_BOMB, "a: &a [*a]\n", "- &x {k: *x}\n"],
                         ids=["bomb", "flow bomb", "self list", "self mapping"])
def test_alias_bombs_and_self_holding_aliases_are_refused_fast(text):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_NODES} values, or holds itself"):
        yaml_load(text)
    assert time.perf_counter() - started < 5  # seconds on any machine; the bomb itself stands for 10**9 values


@pytest.mark.parametrize("where", ["override", "recipe"])
def test_a_bomb_in_a_typed_key_is_one_line(where, tmp_path):
    if where == "override":
        args = (TINY, [f"tasks={FLOW_BOMB}"])
    else:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(BOMB.replace("i:", "tasks:"))
        args = (str(recipe), [])
    with pytest.raises(ConfigError) as refused:
        load_config(*args)
    assert "holds itself" in str(refused.value) and len(str(refused.value)) < 400


@pytest.mark.parametrize("text,line", [("steps: 1\nsteps: 2\n", 2), ("a:\n  b: 1\n  c: 2\n  b: 3\n", 4)],
                         ids=["top level", "nested"])
def test_a_key_given_twice_is_refused(text, line):
    with pytest.raises(ConfigError, match=f"appears twice \\(line {line}\\)"):
        yaml_load(text)


def test_aliases_of_a_few_values_still_work_and_merges_are_kept():
    assert yaml_load("x: &x [1, 2]\ny: *x\n") == {"x": [1, 2], "y": [1, 2]}
    assert yaml_load("base: &b {lr: 1}\nopt:\n  <<: *b\n  name: sgd\n")["opt"] == {"lr": 1, "name": "sgd"}


@pytest.mark.parametrize("value", ["[" + ", ".join(["1"] * 2_000) + "]", "'" + "x" * 1_000_000 + "'",
                                   "[[[[[[[[[[1]]]]]]]]]]"], ids=["long list", "long string", "deep list"])
def test_an_error_line_quotes_a_huge_value_in_bounded_time(value):
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        load_config(TINY, [f"steps={value}"])
    line = str(refused.value)
    assert line.startswith("steps = ") and len(line) < 300 and "\n" not in line
    assert time.perf_counter() - started < 10
