"""task=arithmetic: problem pools, solution paths, the verifier and its errors."""

from __future__ import annotations

import pytest
import torch

from rsft.tasks.arithmetic import ArithmeticTask, ArithmeticVerifier, Problem, count_paths, valid_steps


def small_task(**kw):
    settings = dict(num_operands=4, digits=1, num_sft=40, num_answer_only=60, num_eval=30, num_train_eval=20, seed=3)
    settings.update(kw)
    return ArithmeticTask(**settings)


def test_pools_are_disjoint_seeded_and_sized_by_config():
    task = small_task()
    sizes = {name: len(task.pool(name)) for name in ("sft", "answer_only", "test")}
    assert sizes == {"sft": 40, "answer_only": 60, "test": 30}
    expressions = [p.expression for p in task.problems]
    assert len(set(expressions)) == len(expressions)  # held-out test problems are never training problems
    assert [p.expression for p in small_task().problems] == expressions
    assert [p.expression for p in small_task(seed=4).problems] != expressions
    assert all(p.gold is not None for p in task.problems[:40]) and all(p.gold is None for p in task.problems[40:])
    with pytest.raises(ValueError, match="no gold chain of thought"):
        task.gold_completions(task.pool("answer_only")[:1])
    with pytest.raises(ValueError, match="task.num_answer_only"):
        small_task(num_answer_only=0).pool("answer_only")


def test_gold_chains_of_thought_are_verified_correct_and_answers_match_python():
    task = small_task()
    verifier = ArithmeticVerifier(check_equations=True)
    for problem in task.problems[:40]:
        assert problem.answer == eval(problem.expression)  # noqa: S307 - our own digits and + - *
        verdict = verifier(problem, problem.gold)
        assert verdict.correct and verdict.equations_ok and verdict.step_fraction == 1.0


def test_valid_steps_respect_precedence_and_subtraction():
    assert valid_steps([3, 4, 5, 2], "+*-") == [1]  # only 4*5
    assert valid_steps([3, 4, 5], "++") == [0, 1]  # both orders
    assert valid_steps([3, 4, 5], "-+") == [0]  # 4+5 first would compute 3-(4+5)
    assert count_paths([3, 4, 5], "++") == 2
    assert count_paths([2, 3, 4, 5], "*+*") == 2  # the two products in either order, then the sum


def test_verifier_answer_extraction_and_equation_checks():
    problem = Problem((3, 4, 5, 2), "+*-", 21, None)
    lax, strict = ArithmeticVerifier(False), ArithmeticVerifier(True)
    good = "4*5=20;3+20=23;23-2=21;#21"
    assert lax(problem, good).correct and strict(problem, good).correct
    wrong_step = "4*5=21;3+21=24;24-3=21;#21"  # right answer, wrong arithmetic
    assert lax(problem, wrong_step).correct and not strict(problem, wrong_step).correct
    invalid_order = "3+4=7;7*5=35;35-2=33;#21"  # true facts, not valid steps of this expression
    assert not strict(problem, invalid_order).equations_ok
    assert not lax(problem, "4*5=20;3+20=23;23-2=21;#2").correct
    assert not lax(problem, "4*5=20;3+20=23;23-2=21;21").has_answer  # no '#': no answer
    assert not lax(problem, "#x").has_answer
    assert lax(problem, good).path == lax(problem, good + "").path != lax(problem, "4*5=20;20-2=18;#21").path


def test_score_fields_and_verifier_that_raises_names_the_prompt_id():
    task = small_task()
    ids = task.pool("sft")[:3]
    scored = task.score(ids, task.gold_completions(ids))
    assert scored["correct"].all() and scored["reward"].eq(1).all()
    assert scored["answer"].tolist() == task.answers(ids).tolist()

    def broken(problem, completion):
        raise ZeroDivisionError("bad verifier")

    task.verifier = broken
    with pytest.raises(RuntimeError, match=r"prompt id 1 .*ZeroDivisionError"):
        task.score(torch.tensor([1]), ["1+1=2;#2"])


def test_bad_task_config_is_rejected():
    with pytest.raises(ValueError, match="task.num_operands"):
        ArithmeticTask(num_operands=1)
    with pytest.raises(ValueError, match="task.operators"):
        ArithmeticTask(operators="+/")
    with pytest.raises(ValueError, match="distinct problems"):
        ArithmeticTask(num_operands=2, digits=1, operators="+", num_sft=100, num_answer_only=0, num_eval=10)
