"""Problems posed as a question and answered in a reply with a final answer: what ``task=reasoning_gym`` and
``task=prompts`` share (the interface ``proposal=policy``, the LM acceptances and the LM evaluation use).

A problem (``entries[i]``) is a dict with its ``question`` and its ``answer`` (the gold answer text: what a
gold completion writes, through ``gold_template``). Prompts are chat conversations (``chat=true``: an
optional system prompt, the few-shot ``examples`` as user/assistant turns, then the question) that the model
renders with its tokenizer's chat template, or plain text (``chat=false``: ``Question: …\\nAnswer:`` blocks).

:meth:`score` reads each reply's answer (``answer_format``, :mod:`rsft.tasks.answers`), asks the subclass for
its score in [0, 1] (:meth:`QuestionAnswerTask.score_reply`) and writes the candidate fields: ``reward``
(the score), ``correct`` (score ≥ ``correct_threshold``), ``equations_ok`` (= correct: only final answers
are checked), ``has_answer``, ``answer`` (a 64-bit id of the canonical answer, for majority votes: the same
id as :meth:`answers` gives the reference) and ``path_hash`` (the reply with its whitespace normalised:
the reasoning path ``acceptance=dedup`` compares).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rsft.batch import Batch
from rsft.tasks.answers import AnswerReader, answer_id
from rsft.tasks.problem_pools import ProblemPoolTask, path_hash

Prompt = str | list[dict[str, str]]


class QuestionAnswerTask(ProblemPoolTask):
    """Question → reply with a final answer; subclasses fill ``entries`` / ``examples`` and give
    :meth:`score_reply` (and :meth:`reference` when the reference is not the gold answer text)."""

    entries: list[dict[str, Any]]
    examples: list[dict[str, Any]]

    def _set_prompting(
        self,
        *,
        chat: bool,
        system_prompt: str | None,
        gold_template: str,
        answer_format: str,
        correct_threshold: float,
    ) -> None:
        """Check and keep the settings of prompts, gold completions and scoring (each error names its key)."""
        if not isinstance(gold_template, str) or "{answer}" not in gold_template:
            raise ValueError(f"task.gold_template must contain '{{answer}}', got {gold_template!r}")
        try:
            gold_template.format(answer="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"task.gold_template={gold_template!r} has braces other than {{answer}} ({err!r}); write a literal "
                "brace as {{ or }}"
            ) from err
        if isinstance(correct_threshold, bool) or not 0.0 < correct_threshold <= 1.0:
            raise ValueError(f"task.correct_threshold must be in (0, 1] (scores are in [0, 1]): {correct_threshold}")
        self.chat = bool(chat)
        self.system_prompt = system_prompt
        self.gold_template = gold_template
        self.read_answer = AnswerReader(answer_format)
        self.answer_format = answer_format
        self.correct_threshold = float(correct_threshold)

    # -- what subclasses give -------------------------------------------------------------------
    def score_reply(self, problem_id: int, entry: dict[str, Any], reply: str, answer: str | None) -> float:
        """The score in [0, 1] of ``reply`` (whose answer reads as ``answer``) to problem ``problem_id``."""
        raise NotImplementedError  # pragma: no cover - interface

    def reference(self, entry: dict[str, Any]) -> str:
        """The reference answer of a problem (what majority votes compare with): the gold answer by default."""
        return str(entry["answer"])

    # -- pools and prompts ----------------------------------------------------------------------
    def _entry(self, i: int) -> dict[str, Any]:
        return self.entries[self._check_id(i)]

    def _gold(self, entry: dict[str, Any]) -> str:
        return self.gold_template.format(answer=entry["answer"])

    def prompt(self, question: str) -> Prompt:
        """The prompt of one question: a chat conversation (``chat``) or plain text."""
        if self.chat:
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            for example in self.examples:
                messages += [
                    {"role": "user", "content": example["question"]},
                    {"role": "assistant", "content": self._gold(example)},
                ]
            return [*messages, {"role": "user", "content": question}]
        header = f"{self.system_prompt}\n\n" if self.system_prompt else ""
        shots = "".join(f"Question: {e['question']}\nAnswer: {self._gold(e)}\n\n" for e in self.examples)
        return f"{header}{shots}Question: {question}\nAnswer:"

    def prompts(self, ids: torch.Tensor | Sequence[int]) -> list[Prompt]:
        return [self.prompt(self._entry(int(i))["question"]) for i in ids]

    def gold_completions(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            if not int(i) < self.num_sft:
                raise ValueError(f"problem {int(i)} is not in the sft pool: only those serve as gold SFT rows")
            completion = self._gold(self._entry(int(i)))
            out.append(completion if self.chat else " " + completion)
        return out

    # -- verification ---------------------------------------------------------------------------
    def score(self, prompt_ids: torch.Tensor, completions: Sequence[str]) -> Batch:
        """Score each completion; one row of figures per completion (the fields in the module docstring)."""
        ids = prompt_ids.tolist()
        if len(ids) != len(completions):
            raise ValueError(f"score got {len(ids)} prompt ids but {len(completions)} completions")
        scores, answers = [], []
        for pid, text in zip(ids, completions):
            answer = self.read_answer(text)
            scores.append(self.score_reply(pid, self._entry(pid), text, answer))
            answers.append(answer)
        device = prompt_ids.device
        reward = torch.tensor(scores, dtype=torch.float32, device=device)
        correct = reward >= self.correct_threshold
        return {
            "reward": reward,
            "correct": correct,
            "equations_ok": correct.clone(),
            "has_answer": torch.tensor([a is not None for a in answers], dtype=torch.bool, device=device),
            "answer": torch.tensor(
                [answer_id(a) if a is not None else 0 for a in answers], dtype=torch.long, device=device
            ),
            "path_hash": torch.tensor(
                [path_hash(" ".join(t.split())) for t in completions], dtype=torch.long, device=device
            ),
        }

    def answers(self, ids: torch.Tensor) -> torch.Tensor:
        """64-bit ids of the reference answers (what :meth:`score` writes as ``answer`` for a matching one)."""
        return torch.tensor(
            [answer_id(self.reference(self._entry(int(i)))) for i in ids], dtype=torch.long, device=ids.device
        )
