"""``task=reasoning_gym``: any `reasoning-gym <https://github.com/open-thought/reasoning-gym>`_ dataset as
verifiable problems for a language model, scored by the dataset's own ``score_answer``.

``dataset`` names the generator (``basic_arithmetic``, ``chain_sum``, ``gsm_symbolic``, …) and ``config``
its own settings (e.g. ``{min_terms: 2, max_terms: 2}``). Problems come from seeded streams of the
generator, one per use, so the held-out set does not move when the training pools are resized:

- ``sft`` (``num_sft`` problems) and ``answer_only`` (``num_answer_only``): the training pools, as in
  ``task=arithmetic``. Every reasoning-gym problem has its answer, so both can be verified; the ``sft``
  pool also gives gold completions (the answer, written as ``gold_template``) for SFT / ``mix_gold``;
- ``test`` (``num_eval``): held out; ``train`` evaluation uses the first ``num_train_eval`` ``sft`` problems;
- ``few_shot`` solved examples placed before each question (from a stream of their own).

No question appears in two pools (a repeated question is skipped and the stream read further); the
held-out problems are drawn first, so they stay the same whatever the training pool sizes.

Prompts are chat conversations (``chat=true``: an optional system prompt, the few-shot examples as
user/assistant turns, then the question) that the model renders with its tokenizer's chat template,
or plain text (``chat=false``: ``Question: …\\nAnswer:`` blocks) for models without one.

The answer is read from a completion by ``answer_format``: ``last_number`` (the last number written),
``tag`` (reasoning-gym's ``<answer>…</answer>``) or ``full`` (the whole completion, stripped). The
dataset's ``score_answer(answer, entry)`` in [0, 1] is the ``reward`` (what ``acceptance=reward_threshold``
thresholds); ``correct`` is ``reward >= correct_threshold`` (what ``acceptance=verifier`` keeps).
Reasoning-gym checks final answers only, so ``equations_ok`` equals ``correct``; the reasoning path that
``acceptance=dedup`` compares is the completion with its whitespace normalised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from rsft.batch import Batch
from rsft.tasks.problem_pools import ProblemPoolTask, check_counts, path_hash

ANSWER_FORMATS = ("last_number", "tag", "full")
#: Seed offsets of the generator streams (reasoning-gym seeds item i with seed + i, so streams of
#: nearby seeds would overlap: these keep them ten million items apart).
STREAM_OFFSETS = {"train": 0, "test": 10_000_000, "few_shot": 20_000_000}
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
DEFAULT_SYSTEM_PROMPT = "Solve the problem. Reply with the final answer only."


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError("task=reasoning_gym needs the 'reasoning-gym' package: pip install 'rsft[lm]'") from err
    return reasoning_gym


def extract_answer(completion: str, answer_format: str) -> str | None:
    """The answer a completion gives, or None when it gives none."""
    if answer_format == "last_number":
        numbers = NUMBER.findall(completion)
        return numbers[-1].replace(",", "") if numbers else None
    if answer_format == "tag":
        match = list(re.finditer(r"<answer>\s?(.*?)\s?</answer>", completion, flags=re.DOTALL))
        return match[-1].group(1).strip() if match else None
    text = completion.strip()
    return text or None


class ReasoningGymTask(ProblemPoolTask):
    """Seeded problems of one reasoning-gym dataset in disjoint pools (see :mod:`rsft.tasks.problem_pools`),
    scored by its ``score_answer``."""

    name = "reasoning_gym"

    def __init__(
        self,
        dataset: str,
        config: dict[str, Any] | None = None,
        num_sft: int = 256,
        num_answer_only: int = 0,
        num_eval: int = 256,
        num_train_eval: int = 64,
        few_shot: int = 0,
        seed: int = 0,
        chat: bool = True,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        answer_format: str = "last_number",
        gold_template: str = "{answer}",
        correct_threshold: float = 1.0,
    ):
        check_counts(
            num_sft=num_sft,
            num_answer_only=num_answer_only,
            num_eval=num_eval,
            num_train_eval=num_train_eval,
            few_shot=few_shot,
        )
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"task.answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        if not 0.0 < correct_threshold <= 1.0:
            raise ValueError(f"task.correct_threshold must be in (0, 1] (score_answer's range): {correct_threshold}")
        if "{answer}" not in gold_template:
            raise ValueError(f"task.gold_template must contain '{{answer}}', got {gold_template!r}")
        rg = _reasoning_gym()
        settings = dict(config or {})
        for reserved in ("seed", "size"):
            if reserved in settings:
                raise ValueError(
                    f"task.config.{reserved} is set by rsft (task.seed and the pool sizes); remove it from task.config"
                )
        self.dataset_name = dataset
        self.config = settings
        self.seed = int(seed)
        self.num_sft, self.num_answer_only = num_sft, num_answer_only
        self.chat = bool(chat)
        self.system_prompt = system_prompt
        self.answer_format = answer_format
        self.gold_template = gold_template
        self.correct_threshold = float(correct_threshold)

        def stream(kind: str) -> Any:
            try:
                return rg.create_dataset(dataset, seed=self.seed + STREAM_OFFSETS[kind], size=1, **settings)
            except (ValueError, TypeError, AssertionError) as err:  # unknown name or bad config key/value
                raise ValueError(
                    f"task=reasoning_gym cannot build dataset {dataset!r} with task.config={settings}: "
                    f"{type(err).__name__}: {err}"
                ) from err

        self.scorer = stream("train")  # every stream of one dataset scores answers the same way
        seen: set[str] = set()
        # Held-out problems first, so the test set does not move when the training pools are resized.
        test = self._draw(stream("test"), num_eval, seen, "test")
        self.examples = self._draw(stream("few_shot"), few_shot, seen, "few_shot")
        train = self._draw(stream("train"), num_sft + num_answer_only, seen, "train")
        self.entries: list[dict[str, Any]] = train + test
        self._set_pools(num_sft, num_answer_only, num_eval, num_train_eval)

    def _draw(self, dataset: Any, count: int, seen: set[str], kind: str) -> list[dict[str, Any]]:
        """``count`` problems with questions not ``seen`` before, read in order from a seeded stream."""
        out: list[dict[str, Any]] = []
        index, limit = 0, 10 * count + 100
        while len(out) < count:
            if index >= limit:
                raise ValueError(
                    f"task=reasoning_gym: {self.dataset_name!r} with task.config={self.config} gave only {len(out)} "
                    f"distinct new questions in {limit} draws for the {kind} problems; it has too few distinct "
                    "problems: lower task.num_sft / task.num_answer_only / task.num_eval or widen task.config"
                )
            entry = dataset[index]
            index += 1
            if entry["question"] in seen:
                continue
            seen.add(entry["question"])
            out.append(entry)
        return out

    @staticmethod
    def _answer_id(answer: str) -> int:
        return path_hash(answer.strip())

    # -- pools and prompts ------------------------------------------------------------------
    def _entry(self, i: int) -> dict[str, Any]:
        return self.entries[self._check_id(i)]

    def _gold(self, entry: dict[str, Any]) -> str:
        return self.gold_template.format(answer=entry["answer"])

    def prompt(self, question: str) -> str | list[dict[str, str]]:
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

    def prompts(self, ids: torch.Tensor | Sequence[int]) -> list[str | list[dict[str, str]]]:
        return [self.prompt(self._entry(int(i))["question"]) for i in ids]

    def gold_completions(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        out = []
        for i in ids:
            if not int(i) < self.num_sft:
                raise ValueError(f"problem {int(i)} is not in the sft pool: only those serve as gold SFT rows")
            completion = self._gold(self._entry(int(i)))
            out.append(completion if self.chat else " " + completion)
        return out

    # -- verification ---------------------------------------------------------------------
    def score(self, prompt_ids: torch.Tensor, completions: Sequence[str]) -> Batch:
        """Score each completion with the dataset's ``score_answer``; one row of figures per completion.

        Fields: ``reward`` (the score, float), ``correct`` (score ≥ ``correct_threshold``),
        ``equations_ok`` (= correct), ``has_answer`` (an answer could be read), ``answer`` (a 64-bit id of
        the answer text, for majority votes) and ``path_hash`` (of the whitespace-normalised completion).
        """
        ids = prompt_ids.tolist()
        if len(ids) != len(completions):
            raise ValueError(f"score got {len(ids)} prompt ids but {len(completions)} completions")
        rewards, answers, paths = [], [], []
        for pid, text in zip(ids, completions):
            entry = self._entry(pid)
            answer = extract_answer(text, self.answer_format)
            try:
                reward = float(self.scorer.score_answer(answer, entry))
            except Exception as err:
                raise RuntimeError(
                    f"{self.dataset_name}.score_answer raised on prompt id {pid} (completion {text!r}, answer "
                    f"{answer!r}): {type(err).__name__}: {err}"
                ) from err
            rewards.append(reward)
            answers.append(answer)
            paths.append(path_hash(" ".join(text.split())))
        device = prompt_ids.device
        reward = torch.tensor(rewards, dtype=torch.float32, device=device)
        correct = reward >= self.correct_threshold
        return {
            "reward": reward,
            "correct": correct,
            "equations_ok": correct.clone(),
            "has_answer": torch.tensor([a is not None for a in answers], dtype=torch.bool, device=device),
            "answer": torch.tensor(
                [self._answer_id(a) if a is not None else 0 for a in answers], dtype=torch.long, device=device
            ),
            "path_hash": torch.tensor(paths, dtype=torch.long, device=device),
        }

    def answers(self, ids: torch.Tensor) -> torch.Tensor:
        """64-bit ids of the gold answers (what :meth:`score` writes as ``answer`` for a matching one)."""
        return torch.tensor(
            [self._answer_id(self._entry(int(i))["answer"]) for i in ids], dtype=torch.long, device=ids.device
        )
