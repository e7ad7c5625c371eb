"""Verifiers of ``task=prompts`` (``task.verifier``): how a reply is scored against its problem's reference.

Every verifier gives a score in [0, 1] for (question, reply, the answer read from the reply, reference):

- ``numeric``: 1 when the answer and the reference are numbers within ``tolerance`` (absolute) or
  ``relative_tolerance`` (relative) of each other, else 0; the references must all be numbers;
- ``exact``: 1 when the answer equals the reference, whitespace collapsed (numbers compared canonically:
  ``1,000`` = ``1000``), else 0;
- ``math_verify``: Hugging Face's ``math-verify`` (the verifier TRL and open-r1 use for math rewards) parses
  both (plain numbers, LaTeX, ``\\boxed{}``) and checks that they are equivalent (``0.5`` = ``\\frac{1}{2}``);
- any callable ``f(question, reply, reference) -> float`` (``task.verifier={_target_: my.module.score,
  _partial_: true}``): it sees the whole reply, and its score is checked to be a number in [0, 1].

:meth:`check_reference` is called on every reference when the task is built, so a reference the verifier
cannot use is refused (with its row) before anything runs.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable
from typing import Any

from rsft.tasks.answers import canonical, parse_number

NAMED_VERIFIERS = ("numeric", "exact", "math_verify")
KEY = "task.verifier"


class Verifier:
    """Scores a reply; subclasses give :meth:`__call__` and may refuse references they cannot use."""

    name = "verifier"

    def check_reference(self, reference: str) -> str | None:
        """Why this verifier cannot use ``reference`` (a phrase for the error), or None when it can."""
        return None

    def __call__(self, question: str, reply: str, answer: str | None, reference: str) -> float:  # pragma: no cover
        raise NotImplementedError


class NumericVerifier(Verifier):
    name = "numeric"

    def __init__(self, tolerance: float = 1e-6, relative_tolerance: float = 0.0):
        for key, value in (("task.tolerance", tolerance), ("task.relative_tolerance", relative_tolerance)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
                raise ValueError(f"{key} must be a finite number ≥ 0, got {value!r}")
        self.tolerance, self.relative_tolerance = float(tolerance), float(relative_tolerance)

    def check_reference(self, reference: str) -> str | None:
        if parse_number(reference) is None:
            return "is not a number (task.verifier=numeric needs numbers: use task.verifier=exact or math_verify)"
        return None

    def __call__(self, question: str, reply: str, answer: str | None, reference: str) -> float:
        value = parse_number(answer) if answer is not None else None
        if value is None:
            return 0.0
        want = parse_number(reference)
        assert want is not None  # checked when the task was built
        return float(math.isclose(value, want, rel_tol=self.relative_tolerance, abs_tol=self.tolerance))


class ExactVerifier(Verifier):
    name = "exact"

    def __call__(self, question: str, reply: str, answer: str | None, reference: str) -> float:
        return float(answer is not None and canonical(answer) == canonical(reference))


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError as err:
        raise ImportError(
            "task.verifier=math_verify needs Hugging Face's 'math-verify' package: pip install 'rsft[prompts]'"
        ) from err
    return math_verify


class MathVerifyVerifier(Verifier):
    """``math_verify.verify(parse(reference), parse(answer))``. LaTeX that does not parse as it stands (it has a
    backslash, no ``$``) is tried again as inline maths (``$…$``): a bare ``\\sqrt{2}`` read from a ``\\boxed{}``."""

    name = "math_verify"

    def __init__(self) -> None:
        self.library = _math_verify()
        self._references: dict[str, Any] = {}

    def _timeout(self) -> int | None:
        # math-verify times out with SIGALRM, which only the main thread may set; elsewhere run without one.
        return 5 if threading.current_thread() is threading.main_thread() else None

    def _parse(self, text: str) -> Any:
        timeout = self._timeout()
        parsed = self.library.parse(text, parsing_timeout=timeout)
        if not parsed and "\\" in text and "$" not in text:  # bare LaTeX, e.g. from a \boxed{}
            parsed = self.library.parse(f"${text}$", parsing_timeout=timeout)
        return parsed

    def _reference(self, reference: str) -> Any:
        if reference not in self._references:
            self._references[reference] = self._parse(reference)
        return self._references[reference]

    def check_reference(self, reference: str) -> str | None:
        if not self._reference(reference):
            return "cannot be parsed by math-verify (use task.verifier=exact, or fix the reference)"
        return None

    def __call__(self, question: str, reply: str, answer: str | None, reference: str) -> float:
        if answer is None:
            return 0.0
        parsed = self._parse(answer)
        if not parsed:
            return 0.0
        return float(bool(self.library.verify(self._reference(reference), parsed, timeout_seconds=self._timeout())))


class CallableVerifier(Verifier):
    """A user's ``f(question, reply, reference)``; a score that is not a number in [0, 1] is an error."""

    def __init__(self, function: Callable[..., Any]):
        self.function = function
        target = getattr(function, "func", function)  # a functools.partial (_partial_: true) names its function
        self.name = getattr(target, "__qualname__", type(target).__name__)

    def __call__(self, question: str, reply: str, answer: str | None, reference: str) -> float:
        score = self.function(question, reply, reference)
        if not isinstance(score, numbers.Real):  # int, float, bool, numpy scalars; not str, None, tensors
            raise TypeError(
                f"{KEY} ({self.name}) returned {score!r} ({type(score).__name__}) for the reply {reply[:60]!r}; "
                "it must return a number in [0, 1] (the reply's score): fix the function"
            )
        score = float(score)
        if not 0.0 <= score <= 1.0:  # NaN fails this too
            raise ValueError(
                f"{KEY} ({self.name}) returned {score!r} for the reply {reply[:60]!r}, outside [0, 1]; it must "
                "return a score in [0, 1]: rescale it (e.g. 1 for correct, 0 for wrong)"
            )
        return score


def make_verifier(spec: Any, tolerance: float, relative_tolerance: float) -> Verifier:
    """The verifier ``task.verifier`` names (a name of :data:`NAMED_VERIFIERS`, or a callable)."""
    if callable(spec):
        return CallableVerifier(spec)
    if spec == "numeric":
        return NumericVerifier(tolerance, relative_tolerance)
    if spec == "exact":
        return ExactVerifier()
    if spec == "math_verify":
        return MathVerifyVerifier()
    raise ValueError(
        f"{KEY}={spec!r} is not a verifier: use one of {NAMED_VERIFIERS}, or a function of (question, reply, "
        f"reference) returning a score in [0, 1]: {KEY}={{_target_: my.module.score, _partial_: true}}"
    )
