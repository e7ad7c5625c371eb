"""``task=arithmetic``: verifiable multi-step arithmetic with several valid solution paths.

A problem is an expression such as ``3+4*5-2``; a solution reduces it one operation at a time and
writes each step as an equation, then the answer after ``#``::

    prompt      3+4*5-2:
    completion  4*5=20;3+20=23;23-2=21;#21

Steps may be taken in any order that respects precedence and the left-to-right reading of ``-``
(``3+4+5`` can start with ``3+4`` or with ``4+5``), so problems have several distinct reasoning paths
— what RFT deduplicates by. Problems come from a seed; three disjoint pools are drawn: ``sft``
(with a gold chain of thought, for supervised training), ``answer_only`` (final answer only: cheap
labels that a verifier can still use, STaR-style) and ``test`` (held out). ``num_operands`` and
``digits`` set the difficulty.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rsft.batch import Batch
from rsft.tasks.problem_pools import ProblemPoolTask, check_counts, path_hash

OPERATORS = "+-*"
EQUATION = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$")
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    operators: str
    answer: int
    gold: str | None  # gold completion (chain of thought + answer); None in the answer-only pool

    @property
    def expression(self) -> str:
        parts = [str(self.operands[0])]
        for op, x in zip(self.operators, self.operands[1:]):
            parts += [op, str(x)]
        return "".join(parts)

    @property
    def prompt(self) -> str:
        return self.expression + ":"


@dataclass
class Verdict:
    """What a verifier says about one completion."""

    correct: bool
    has_answer: bool = False
    answer: int = 0
    equations_ok: bool = False
    step_fraction: float = 0.0  # share of the needed steps written correctly, in order
    path: str = ""  # the reasoning path (the sequence of equations) — what dedup compares


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def valid_steps(operands: Sequence[int], operators: str) -> list[int]:
    """Indices i where ``operands[i] op_i operands[i+1]`` may be computed next without changing the value.

    ``*`` binds tightest, so a product of two adjacent numbers is always a valid step. ``+``/``-`` is
    valid when neither neighbour is ``*`` and the operator before it is not ``-`` (a−b+c ≠ a−(b+c)).
    """
    steps = []
    for i, op in enumerate(operators):
        if op == "*":
            steps.append(i)
        else:
            before = operators[i - 1] if i > 0 else None
            after = operators[i + 1] if i + 1 < len(operators) else None
            if before not in ("*", "-") and after != "*":
                steps.append(i)
    return steps


def reduce_step(operands: list[int], operators: str, i: int) -> tuple[list[int], str, str]:
    """Carry out step ``i``; return the new operands, operators and the equation written."""
    a, op, b = operands[i], operators[i], operands[i + 1]
    c = _apply(a, op, b)
    return operands[:i] + [c] + operands[i + 2 :], operators[:i] + operators[i + 1 :], f"{a}{op}{b}={c}"


def count_paths(operands: Sequence[int], operators: str) -> int:
    """Number of distinct step orders (reasoning paths) for a problem."""
    if not operators:
        return 1
    total = 0
    for i in valid_steps(operands, operators):
        nxt, ops, _ = reduce_step(list(operands), operators, i)
        total += count_paths(nxt, ops)
    return total


class ArithmeticVerifier:
    """Final answer correct; with ``check_equations`` also every written equation a valid step.

    The equations are replayed on the expression: each must compute two adjacent numbers that may be
    combined next (see :func:`valid_steps`) with the right result, and together they must reduce the
    expression to the written answer. Without ``check_equations`` only the final answer counts.
    """

    def __init__(self, check_equations: bool = False):
        self.check_equations = bool(check_equations)

    def __call__(self, problem: Problem, completion: str) -> Verdict:
        body, sep, tail = completion.rpartition("#")
        has_answer = bool(sep) and re.fullmatch(r"-?\d+", tail.strip()) is not None
        answer = int(tail.strip()) if has_answer else 0
        if has_answer and abs(answer) > INT64_MAX:
            answer = 0
            has_answer = False
        segments = [s for s in (body if sep else completion).split(";") if s]
        operands, operators = list(problem.operands), problem.operators
        done = 0
        ok = True
        for segment in segments:
            match = EQUATION.match(segment)
            if match is None:
                ok = False
                break
            a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
            step = next(
                (
                    i
                    for i in valid_steps(operands, operators)
                    if operands[i] == a and operators[i] == op and operands[i + 1] == b
                ),
                None,
            )
            if step is None or _apply(a, op, b) != c:
                ok = False
                break
            operands, operators, _ = reduce_step(operands, operators, step)
            done += 1
        needed = len(problem.operators)
        equations_ok = ok and not operators and has_answer and operands[0] == answer
        correct = has_answer and answer == problem.answer
        if self.check_equations:
            correct = correct and equations_ok
        return Verdict(
            correct=correct,
            has_answer=has_answer,
            answer=answer,
            equations_ok=equations_ok,
            step_fraction=done / needed if needed else 1.0,
            path=";".join(segments),
        )


class ArithmeticTask(ProblemPoolTask):
    """Seeded arithmetic problems in three disjoint pools (see :mod:`rsft.tasks.problem_pools`); scores
    completions with a verifier."""

    name = "arithmetic"

    def __init__(
        self,
        num_operands: int = 4,
        digits: int = 1,
        operators: str = OPERATORS,
        num_sft: int = 256,
        num_answer_only: int = 1024,
        num_eval: int = 256,
        num_train_eval: int = 256,
        seed: int = 0,
        check_equations: bool = False,
        answer_weight: float = 1.0,
        verifier: Callable[[Problem, str], Verdict | bool] | None = None,
    ):
        if isinstance(num_operands, bool) or not isinstance(num_operands, int) or num_operands < 2:
            raise ValueError(f"task.num_operands must be an integer ≥ 2, got {num_operands!r}")
        if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 6:
            raise ValueError(f"task.digits must be an integer in 1..6, got {digits!r}")
        if not operators or set(operators) - set(OPERATORS):
            raise ValueError(f"task.operators must be a non-empty subset of {OPERATORS!r}, got {operators!r}")
        check_counts(num_sft=num_sft, num_answer_only=num_answer_only, num_eval=num_eval, num_train_eval=num_train_eval)
        if not 0.0 <= answer_weight <= 1.0:
            raise ValueError(f"task.answer_weight must be in [0, 1], got {answer_weight}")
        self.num_operands = num_operands
        self.digits = digits
        self.operators = operators
        self.seed = int(seed)
        self.answer_weight = float(answer_weight)
        self.verifier = verifier if verifier is not None else ArithmeticVerifier(check_equations)
        self.problems = self._generate(num_sft + num_answer_only + num_eval, with_gold=num_sft)
        self._set_pools(num_sft, num_answer_only, num_eval, num_train_eval)

    # -- problems ------------------------------------------------------------------------
    def _generate(self, total: int, with_gold: int) -> list[Problem]:
        rng = random.Random(self.seed)
        high = 10**self.digits - 1
        space = (high + 1) ** self.num_operands * len(self.operators) ** (self.num_operands - 1)
        if total > space // 2:
            raise ValueError(
                f"task=arithmetic: {total:,} distinct problems asked for, but {self.num_operands} operands of "
                f"{self.digits} digit(s) over {self.operators!r} give only {space:,}; lower task.num_sft / "
                "task.num_answer_only / task.num_eval or raise task.num_operands / task.digits"
            )
        seen: set[tuple[tuple[int, ...], str]] = set()
        problems = []
        while len(problems) < total:
            operands = tuple(rng.randint(0, high) for _ in range(self.num_operands))
            ops = "".join(rng.choice(self.operators) for _ in range(self.num_operands - 1))
            if (operands, ops) in seen:
                continue
            seen.add((operands, ops))
            gold = self._gold(operands, ops, rng) if len(problems) < with_gold else None
            problems.append(Problem(operands, ops, self._evaluate(operands, ops), gold))
        return problems

    @staticmethod
    def _evaluate(operands: tuple[int, ...], ops: str) -> int:
        nums, rest = list(operands), ops
        while rest:
            nums, rest, _ = reduce_step(nums, rest, valid_steps(nums, rest)[0])
        return nums[0]

    @staticmethod
    def _gold(operands: tuple[int, ...], ops: str, rng: random.Random) -> str:
        """One valid reasoning path, with the step order drawn at random (a varied gold set)."""
        nums, rest, steps = list(operands), ops, []
        while rest:
            nums, rest, equation = reduce_step(nums, rest, rng.choice(valid_steps(nums, rest)))
            steps.append(equation)
        return ";".join(steps) + f";#{nums[0]}"

    def _problem(self, i: int) -> Problem:
        return self.problems[self._check_id(i)]

    def prompts(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        return [self._problem(int(i)).prompt for i in ids]

    def gold_completions(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            gold = self._problem(int(i)).gold
            if gold is None:
                raise ValueError(f"problem {int(i)} is in the answer-only pool and has no gold chain of thought")
            out.append(gold)
        return out

    # -- verification --------------------------------------------------------------------
    def score(self, prompt_ids: torch.Tensor, completions: Sequence[str]) -> Batch:
        """Verify each completion against its problem; one row of figures per completion.

        Fields: ``reward`` (float), ``correct``, ``equations_ok``, ``has_answer`` (bool), ``answer``
        and ``path_hash`` (int64). A verifier that raises is reported with the prompt id.
        """
        ids = prompt_ids.tolist()
        if len(ids) != len(completions):
            raise ValueError(f"score got {len(ids)} prompt ids but {len(completions)} completions")
        rows = []
        for pid, text in zip(ids, completions):
            problem = self._problem(pid)
            try:
                verdict = self.verifier(problem, text)
            except Exception as err:
                raise RuntimeError(
                    f"the verifier {type(self.verifier).__name__} raised on prompt id {pid} "
                    f"({problem.prompt!r}, completion {text!r}): {type(err).__name__}: {err}"
                ) from err
            if isinstance(verdict, bool):
                verdict = Verdict(correct=verdict)
            if not isinstance(verdict, Verdict):
                raise TypeError(
                    f"the verifier {type(self.verifier).__name__} returned {type(verdict).__name__} for prompt id "
                    f"{pid}; it must return a Verdict or a bool"
                )
            rows.append(verdict)
        device = prompt_ids.device
        correct = torch.tensor([v.correct for v in rows], dtype=torch.bool, device=device)
        steps = torch.tensor([v.step_fraction for v in rows], dtype=torch.float32, device=device)
        return {
            "reward": self.answer_weight * correct.float() + (1.0 - self.answer_weight) * steps,
            "correct": correct,
            "equations_ok": torch.tensor([v.equations_ok for v in rows], dtype=torch.bool, device=device),
            "has_answer": torch.tensor([v.has_answer for v in rows], dtype=torch.bool, device=device),
            "answer": torch.tensor([v.answer for v in rows], dtype=torch.long, device=device),
            "path_hash": torch.tensor([path_hash(v.path) for v in rows], dtype=torch.long, device=device),
        }

    def answers(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self._problem(int(i)).answer for i in ids], dtype=torch.long, device=ids.device)
