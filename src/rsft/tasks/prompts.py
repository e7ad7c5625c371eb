"""``task=prompts``: the user's own prompt file (question, reference answer) as verifiable problems for a
language model, scored by a standard verifier and, optionally, a learned reward model.

``task.path`` is read by :mod:`rsft.tasks.prompt_files` (JSONL, JSON, CSV, Parquet, a ``save_to_disk``
directory). ``task.question`` and ``task.answer`` name its columns. The answer cell is the gold answer:
what a gold completion writes (SFT, ``mix_gold``, few-shot examples, through ``gold_template``), and the
reference is read from it by ``reference_format``:

- ``raw``: the cell itself, stripped;
- ``gsm8k``: the text after the last ``####`` (GSM8K's worked solutions end in ``#### 1,234``; the commas of
  a number are dropped);
- ``last_number``: the last number in the cell.

The held-out split is ``task.test_path`` (a second file, read the same way) or ``task.test_size`` (that many
rows of ``task.path``, or that fraction, drawn with ``task.seed``). Train and test are disjoint by question
text (whitespace collapsed): a question in both is an error, or with ``task.dedup=true`` is dropped from the
training split; a question twice in one file likewise (``task.dedup=true`` keeps its first row). Then, with
``task.seed``: ``few_shot`` solved examples are drawn from the training rows (and leave the pool), the
``sft`` pool is ``num_sft`` of the rest (null: all), and ``num_eval`` of the held-out rows are evaluated
(null: all). Growing ``num_sft`` extends the pool; the held-out split does not move.

Replies are read by ``answer_format`` (:mod:`rsft.tasks.answers`) and scored by ``verifier``
(:mod:`rsft.tasks.verifiers`): the score is ``reward``, and ``correct`` is ``score >= correct_threshold``.
With ``reward_model.path`` set, ``reward`` is the reward model's score of (question, reply) instead
(:mod:`rsft.tasks.reward_model`): ``acceptance=reward_threshold | best_of_n | boltzmann`` then select by the
learned reward, while ``correct`` (``acceptance=verifier``, the held-out accuracy) stays the verifier's.

Every row is checked when the task is built (before the run dir is touched), each error naming the key,
the file and the row: a missing column (the columns found are listed), an empty question or answer, a
reference the ``reference_format`` cannot read, one the verifier cannot use. ``records()`` writes
``prompts.json`` into the run dir: rows read, dropped and why, the split sizes, the few-shot and held-out
rows, and how many gold completions the verifier accepts (a check of ``answer_format``: when none is
accepted a warning says so).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rsft.batch import Batch
from rsft.tasks.answers import NUMBER
from rsft.tasks.problem_pools import check_counts
from rsft.tasks.prompt_files import PromptFile, read_prompt_file
from rsft.tasks.question_answer import QuestionAnswerTask
from rsft.tasks.reward_model import RewardModel
from rsft.tasks.verifiers import Verifier, make_verifier

log = logging.getLogger("rsft")

REFERENCE_FORMATS = ("raw", "gsm8k", "last_number")
#: Training rows whose gold completion is scored when the task is built (a check of answer_format).
GOLD_CHECK_ROWS = 64
REWARD_MODEL_DEFAULTS = {"path": None, "batch_size": 16, "max_length": 512, "format": "auto", "output": "probability"}


def read_reference(answer: str, reference_format: str) -> str | None:
    """The reference answer in an answer cell, or None when ``reference_format`` finds none."""
    if reference_format == "raw":
        return answer.strip() or None
    if reference_format == "gsm8k":
        head, sep, tail = answer.rpartition("####")
        tail = tail.strip()
        if not sep or not tail:
            return None
        return tail.replace(",", "") if re.fullmatch(NUMBER, tail) else tail
    numbers = NUMBER.findall(answer)
    return numbers[-1].replace(",", "") if numbers else None


def normalised_question(text: str) -> str:
    """A question as compared for duplicates and for the train/test split: its whitespace collapsed."""
    return " ".join(text.split())


@dataclass
class Problem:
    question: str
    answer: str  # the gold answer text (the answer cell)
    reference: str
    where: str  # its row in the file ("line 12", "row 12")
    source: str  # the file, as the key that names it ("task.path='/data/train.jsonl'")

    @property
    def place(self) -> str:
        return f"{self.source}, {self.where}"


class PromptsTask(QuestionAnswerTask):
    """Problems from the user's prompt file (module docstring); the same interface as ``task=reasoning_gym``."""

    name = "prompts"

    def __init__(
        self,
        path: str | None = None,
        question: str = "question",
        answer: str = "answer",
        test_path: str | None = None,
        test_size: int | float | None = None,
        reference_format: str = "raw",
        answer_format: str = "last_number",
        verifier: str | Callable[..., Any] = "numeric",
        tolerance: float = 1e-6,
        relative_tolerance: float = 0.0,
        correct_threshold: float = 1.0,
        dedup: bool = False,
        num_sft: int | None = None,
        num_eval: int | None = None,
        num_train_eval: int = 64,
        few_shot: int = 0,
        seed: int = 0,
        chat: bool = True,
        system_prompt: str | None = None,
        gold_template: str = "{answer}",
        reward_model: dict[str, Any] | None = None,
    ):
        counts = {"num_train_eval": num_train_eval, "few_shot": few_shot}
        counts.update({k: v for k, v in (("num_sft", num_sft), ("num_eval", num_eval)) if v is not None})
        check_counts(**counts)
        if num_sft == 0:
            raise ValueError("task.num_sft must be positive or null (all training rows): the rounds sample these")
        if reference_format not in REFERENCE_FORMATS:
            raise ValueError(f"task.reference_format must be one of {REFERENCE_FORMATS}, got {reference_format!r}")
        if question == answer:
            raise ValueError(f"task.question and task.answer name the same column {question!r}; name two columns")
        self._set_prompting(
            chat=chat,
            system_prompt=system_prompt,
            gold_template=gold_template,
            answer_format=answer_format,
            correct_threshold=correct_threshold,
        )
        self.verifier: Verifier = make_verifier(verifier, tolerance, relative_tolerance)
        self.reward_model = self._reward_model(reward_model)
        self.columns = {"question": question, "answer": answer}
        self.reference_format = reference_format
        self.seed = int(seed)
        self.dedup = bool(dedup)

        train, test, files = self._read_splits(path, test_path, test_size)
        examples, pool, evaluated = self._draw(train, test, few_shot, num_sft, num_eval)
        self.examples = [self._entry_of(p) for p in examples]
        self.entries = [self._entry_of(p) for p in pool + evaluated]
        self.num_sft, self.num_answer_only = len(pool), 0
        self._set_pools(len(pool), 0, len(evaluated), num_train_eval)
        gold_checked, gold_correct = self._check_gold(pool)
        files["train"].update(few_shot=len(examples), pool=len(pool), unused=len(train) - len(examples) - len(pool))
        files["test"].update(held_out=len(test), evaluated=len(evaluated))
        self._records = {
            **files,
            "reference_format": reference_format,
            "answer_format": answer_format,
            "verifier": self.verifier.name,
            "few_shot_rows": [p.where for p in examples],
            "evaluated_rows": [p.where for p in evaluated],
            "gold_completions_checked": gold_checked,
            "gold_completions_correct": gold_correct,
            "reward_model": self.reward_model.describe() if self.reward_model is not None else None,
        }

    # -- reading and splitting ----------------------------------------------------------------------
    def _read_splits(
        self, path: str | None, test_path: str | None, test_size: int | float | None
    ) -> tuple[list[Problem], list[Problem], dict[str, Any]]:
        """The training and held-out problems, and what was read and dropped (for ``prompts.json``)."""
        train_file = read_prompt_file(path, "task.path")  # type: ignore[arg-type]
        train, train_dups = self._problems(train_file, "task.path")
        record = {
            "columns": self.columns,
            "columns_found": train_file.columns,
            "train": {**self._file_record(train_file), "duplicate_questions_dropped": train_dups},
        }
        if test_path is not None:
            if test_size is not None:
                raise ValueError(
                    "task.test_path and task.test_size are both set; give one held-out split (set the other to null)"
                )
            test_file = read_prompt_file(test_path, "task.test_path")
            test, test_dups = self._problems(test_file, "task.test_path")
            train, overlap = self._drop_overlap(train, test)
            record["train"].update(in_test_dropped=overlap, held_out=0)
            record["test"] = {**self._file_record(test_file), "duplicate_questions_dropped": test_dups}
        elif test_size is not None:
            train, test = self._split(train, test_size)
            record["train"].update(in_test_dropped=0, held_out=len(test))
            record["test"] = {"split_from": "task.path", "duplicate_questions_dropped": 0}
        else:
            raise ValueError(
                "task=prompts needs a held-out split to evaluate on: set task.test_path=FILE, or task.test_size to a "
                "number of rows (or a fraction) of task.path to hold out"
            )
        if not train:
            raise ValueError(
                "task.path has no training rows left: every question in it is also held out; give a training file "
                "with other questions than task.test_path"
            )
        return train, test, record

    def _draw(
        self, train: list[Problem], test: list[Problem], few_shot: int, num_sft: int | None, num_eval: int | None
    ) -> tuple[list[Problem], list[Problem], list[Problem]]:
        """The few-shot examples and the sft pool (from one seeded order of the training rows, so a larger
        ``num_sft`` extends the pool), and the held-out problems evaluated (from their own seeded order)."""
        train = list(train)
        random.Random(f"{self.seed}:train").shuffle(train)
        if few_shot >= len(train):
            raise ValueError(
                f"task.few_shot={few_shot} takes every one of the {len(train)} training rows; lower it (the rest are "
                "the problems)"
            )
        examples, pool = train[:few_shot], train[few_shot:]
        if num_sft is not None and num_sft > len(pool):
            raise ValueError(
                f"task.num_sft={num_sft} but task.path has only {len(pool)} training problems (after the held-out "
                f"split and {few_shot} few-shot examples); lower task.num_sft or set it to null (all)"
            )
        test = list(test)
        random.Random(f"{self.seed}:test").shuffle(test)
        if num_eval is not None and num_eval > len(test):
            raise ValueError(
                f"task.num_eval={num_eval} but the held-out split has only {len(test)} problems; lower task.num_eval "
                "or set it to null (all)"
            )
        return examples, pool[:num_sft], test[:num_eval]  # a slice to None is all of it

    def _problems(self, file: PromptFile, key: str) -> tuple[list[Problem], int]:
        """Every row of ``file`` as a problem, each checked; duplicate questions refused or (dedup) dropped."""
        missing = [f"task.{role}={name!r}" for role, name in self.columns.items() if name not in file.columns]
        if missing:
            raise ValueError(
                f"{key}={str(file.path)!r} has no column {' or '.join(missing)}: the columns found are "
                f"{file.columns}; set task.question / task.answer to the column names"
            )
        if not file.rows:
            raise ValueError(f"{key}={str(file.path)!r} holds no rows")
        problems = []
        for row, where in zip(file.rows, file.where):
            question = self._cell(row, "question", file, where, key)
            answer = self._cell(row, "answer", file, where, key)
            reference = read_reference(answer, self.reference_format)
            source = f"{key}={str(file.path)!r}"
            place = f"{source}, {where}"
            if reference is None:
                raise ValueError(
                    f"task.reference_format={self.reference_format!r} cannot read a reference in {place}: "
                    f"{answer[-80:]!r}; fix the row or choose the reference_format the file is written in "
                    f"{REFERENCE_FORMATS}"
                )
            why = self.verifier.check_reference(reference)
            if why is not None:
                raise ValueError(f"the reference {reference!r} of {place} {why}")
            problems.append(Problem(question, answer, reference, where, source))
        return self._dedup_within(problems, key, file)

    def _cell(self, row: dict[str, Any], role: str, file: PromptFile, where: str, key: str) -> str:
        column = self.columns[role]
        value = row.get(column)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:  # not NaN
            value = str(value)
        if value is None or (isinstance(value, float) and value != value):
            value = ""
        if not isinstance(value, str):
            raise ValueError(
                f"{key}={str(file.path)!r}, {where}: the {role} (column {column!r}) is {type(value).__name__}, not "
                f"text; set task.{role} to a text column"
            )
        if not value.strip():
            empty = sum(1 for r in file.rows if not str(r.get(column) or "").strip())
            raise ValueError(
                f"{key}={str(file.path)!r}, {where}: the {role} (column {column!r}) is empty ({empty} empty in the "
                f"file); remove those rows or set task.{role} to the right column"
            )
        return value

    def _dedup_within(self, problems: list[Problem], key: str, file: PromptFile) -> tuple[list[Problem], int]:
        first: dict[str, Problem] = {}
        repeats = []
        for problem in problems:
            text = normalised_question(problem.question)
            if text in first:
                repeats.append((problem, first[text]))
            else:
                first[text] = problem
        if repeats and not self.dedup:
            again, original = repeats[0]
            raise ValueError(
                f"{key}={str(file.path)!r} asks {len(repeats)} question(s) more than once (e.g. {again.where} repeats "
                f"{original.where}); remove them, or set task.dedup=true to keep the first row of each"
            )
        return list(first.values()), len(repeats)

    def _drop_overlap(self, train: list[Problem], test: list[Problem]) -> tuple[list[Problem], int]:
        held_out = {normalised_question(p.question) for p in test}
        shared = [p for p in train if normalised_question(p.question) in held_out]
        if shared and not self.dedup:
            raise ValueError(
                f"{len(shared)} question(s) of task.path are also in task.test_path (e.g. {shared[0].place}): train "
                "and test must be disjoint. Remove them, or set task.dedup=true to drop them from the training split"
            )
        return [p for p in train if normalised_question(p.question) not in held_out], len(shared)

    def _split(self, problems: list[Problem], test_size: int | float) -> tuple[list[Problem], list[Problem]]:
        """Hold out ``test_size`` rows (or that fraction) of ``problems``, drawn with the seed; questions are unique
        here (duplicates were refused or dropped), so the split is disjoint by question."""
        n = len(problems)
        if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
            raise ValueError(f"task.test_size must be a number of rows or a fraction in (0, 1), got {test_size!r}")
        count = test_size if isinstance(test_size, int) else round(test_size * n)
        if isinstance(test_size, float) and not 0.0 < test_size < 1.0:
            raise ValueError(f"task.test_size={test_size} as a fraction must be in (0, 1)")
        if not 0 < count < n:
            raise ValueError(
                f"task.test_size={test_size} holds out {count} of the {n} rows of task.path; both splits need rows"
            )
        order = list(range(n))
        random.Random(f"{self.seed}:split").shuffle(order)
        held = set(order[:count])
        return [p for i, p in enumerate(problems) if i not in held], [p for i, p in enumerate(problems) if i in held]

    @staticmethod
    def _entry_of(problem: Problem) -> dict[str, Any]:
        return {
            "question": problem.question,
            "answer": problem.answer,
            "reference": problem.reference,
            "place": problem.place,
        }

    @staticmethod
    def _file_record(file: PromptFile) -> dict[str, Any]:
        return {"path": str(file.path), "format": file.kind, "rows_read": len(file.rows)}

    @staticmethod
    def _reward_model(settings: dict[str, Any] | None) -> RewardModel | None:
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(REWARD_MODEL_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown task.reward_model keys {unknown}; use {', '.join(REWARD_MODEL_DEFAULTS)} (e.g. "
                "task.reward_model.path=DIR)"
            )
        settings = {**REWARD_MODEL_DEFAULTS, **settings}
        if settings["path"] is None:
            return None
        return RewardModel(**settings)

    def _check_gold(self, pool: list[Problem]) -> tuple[int, int]:
        """Score the gold completions of the first training problems: a verifier that rejects all of them is
        reading replies another way than the answers are written (a warning), and a user verifier that returns
        a bad score fails here, before the run starts."""
        rows = pool[:GOLD_CHECK_ROWS]
        correct = 0
        for problem in rows:
            entry = self._entry_of(problem)
            gold = self._gold(entry)
            correct += self._verify(entry, gold, self.read_answer(gold)) >= self.correct_threshold
        if rows and correct == 0:
            log.warning(
                "task=prompts: task.verifier=%s with task.answer_format=%r accepts none of the %d gold completions "
                "checked (e.g. %r for the reference %r): replies written like the file's answers will never count "
                "as correct; check task.answer_format / task.reference_format / task.gold_template",
                self.verifier.name,
                self.answer_format,
                len(rows),
                self._gold(self._entry_of(rows[0]))[-80:],
                rows[0].reference,
            )
        return len(rows), int(correct)

    # -- what the run uses ---------------------------------------------------------------------------
    def records(self) -> dict[str, Any]:
        return {"prompts.json": self._records}

    def reference(self, entry: dict[str, Any]) -> str:
        return entry["reference"]

    def pool(self, name: str) -> torch.Tensor:
        if name == "answer_only":
            raise ValueError(
                "task=prompts puts every training row in the sft pool (each has its answer): use proposal.pool=sft"
            )
        return super().pool(name)

    def score_reply(self, problem_id: int, entry: dict[str, Any], reply: str, answer: str | None) -> float:
        return self._verify(entry, reply, answer)

    def _verify(self, entry: dict[str, Any], reply: str, answer: str | None) -> float:
        """The verifier's score of ``reply``; anything it raises is reported with the problem's row."""
        try:
            return self.verifier(entry["question"], reply, answer, entry["reference"])
        except (TypeError, ValueError) as err:
            if "task.verifier" in str(err):  # the verifier's own check of a score: already names the key
                raise type(err)(f"{err} (the problem at {entry['place']})") from err
            raise RuntimeError(self._raised(entry, reply, err)) from err
        except Exception as err:
            raise RuntimeError(self._raised(entry, reply, err)) from err

    def _raised(self, entry: dict[str, Any], reply: str, err: Exception) -> str:
        return (
            f"task.verifier ({self.verifier.name}) raised on the problem at {entry['place']} (reply {reply[:60]!r}): "
            f"{type(err).__name__}: {err}"
        )

    def score(self, prompt_ids: torch.Tensor, completions: list[str]) -> Batch:
        scored = super().score(prompt_ids, completions)
        if self.reward_model is not None:  # the learned reward replaces the verifier's score as ``reward``
            questions = [self._entry(int(i))["question"] for i in prompt_ids.tolist()]
            scored["reward"] = self.reward_model.score(questions, list(completions), prompt_ids.device)
        return scored
