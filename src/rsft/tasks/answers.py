"""Reading the final answer out of a reply (``task.answer_format``), and writing answers canonically.

A reader turns a model's reply into the answer it gives, or None when it gives none:

- ``last_number``: the last number written (``-1,234.5`` reads as ``-1234.5``; thousands separators are
  commas between groups of three digits; a ``-`` right after a digit is a minus sign of an operation, not
  of the number: ``5-3`` reads as ``3``);
- ``boxed``: the contents of the last ``\\boxed{…}`` (nested braces kept: ``\\boxed{\\frac{1}{2}}`` reads
  as ``\\frac{1}{2}``);
- ``tag``: the contents of the last ``<answer>…</answer>`` (reasoning-gym's format);
- ``full``: the whole reply, stripped;
- anything else is a regular expression with one capture group; the group of its last match is the answer
  (``'#### (.+)'`` reads a GSM8K-style final line; ``.`` stops at a line end unless the pattern says ``(?s)``).

:func:`canonical` writes an answer so that equal answers are equal strings (numbers as numbers: ``1,000``,
``1000.0`` and ``1000`` are all ``1000``); :func:`answer_id` hashes that for majority votes.
"""

from __future__ import annotations

import re

from rsft.tasks.problem_pools import path_hash

#: A number as people write it: optional minus (not right after a digit), digits with or without
#: thousands commas, optional decimals.
NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
NAMED_FORMATS = ("last_number", "boxed", "tag", "full")
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", flags=re.DOTALL)


def parse_number(text: str) -> float | None:
    """The number ``text`` is (``'1,234'``, ``'-5'``, ``'$3.50'``, ``'42.'``), or None when it is not one."""
    body = text.strip().rstrip(".").strip()
    if body.startswith("$"):
        body = body[1:].strip()
    match = NUMBER.fullmatch(body)
    return float(match.group(0).replace(",", "")) if match else None


def canonical(text: str) -> str:
    """An answer written canonically: a number as the shortest exact form of its value (``1,000.0`` →
    ``1000``), anything else with its whitespace collapsed."""
    value = parse_number(text)
    if value is None:
        return " ".join(text.split())
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def answer_id(text: str) -> int:
    """A 64-bit id of the canonical answer: equal for answers that are the same (majority votes compare these)."""
    return path_hash(canonical(text))


def boxed_contents(text: str) -> str | None:
    """The contents of the last ``\\boxed{…}`` in ``text`` (braces matched), or None."""
    starts = list(BOXED.finditer(text))
    for start in reversed(starts):
        depth, begin = 1, start.end()
        for position in range(begin, len(text)):
            if text[position] == "{":
                depth += 1
            elif text[position] == "}":
                depth -= 1
                if depth == 0:
                    return text[begin:position].strip()
    return None  # none closed


class AnswerReader:
    """Reads the answer a reply gives: one of :data:`NAMED_FORMATS`, or a regular expression with one group."""

    def __init__(self, answer_format: str, key: str = "task.answer_format"):
        if not isinstance(answer_format, str) or not answer_format:
            raise ValueError(f"{key} must be one of {NAMED_FORMATS} or a regular expression, got {answer_format!r}")
        self.format = answer_format
        self.pattern: re.Pattern[str] | None = None
        if answer_format in NAMED_FORMATS:
            return
        try:
            pattern = re.compile(answer_format)
        except re.error as err:
            raise ValueError(
                f"{key}={answer_format!r} is not one of {NAMED_FORMATS} and not a valid regular expression ({err})"
            ) from err
        if pattern.groups != 1:
            raise ValueError(
                f"{key}={answer_format!r} is not one of {NAMED_FORMATS}; as a regular expression it has "
                f"{pattern.groups} capture groups, and it needs exactly one around the answer, e.g. '#### (.+)'"
            )
        self.pattern = pattern

    def __call__(self, reply: str) -> str | None:
        if self.format == "last_number":
            numbers = NUMBER.findall(reply)
            return numbers[-1].replace(",", "") if numbers else None
        if self.format == "boxed":
            found = boxed_contents(reply)
        elif self.format == "tag":
            matches = TAG.findall(reply)
            found = matches[-1].strip() if matches else None
        elif self.format == "full":
            found = reply.strip()
        else:
            assert self.pattern is not None
            matches = list(self.pattern.finditer(reply))
            found = (matches[-1].group(1) or "").strip() if matches else None
        return found or None
