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

Prompts, answer reading (``answer_format``: ``last_number``, ``tag`` — reasoning-gym's
``<answer>…</answer>`` —, ``boxed``, ``full`` or a regular expression, :mod:`rsft.tasks.answers`) and the
candidate fields are those of :mod:`rsft.tasks.question_answer`. The dataset's ``score_answer(answer, entry)``
in [0, 1] is the ``reward`` (what ``acceptance=reward_threshold`` thresholds); ``correct`` is
``reward >= correct_threshold`` (what ``acceptance=verifier`` keeps).
"""

from __future__ import annotations

from typing import Any

from rsft.tasks.problem_pools import check_counts
from rsft.tasks.question_answer import QuestionAnswerTask

#: Seed offsets of the generator streams (reasoning-gym seeds item i with seed + i, so streams of
#: nearby seeds would overlap: these keep them ten million items apart).
STREAM_OFFSETS = {"train": 0, "test": 10_000_000, "few_shot": 20_000_000}
DEFAULT_SYSTEM_PROMPT = "Solve the problem. Reply with the final answer only."


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError("task=reasoning_gym needs the 'reasoning-gym' package: pip install 'rsft[lm]'") from err
    return reasoning_gym


class ReasoningGymTask(QuestionAnswerTask):
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
        self._set_prompting(
            chat=chat,
            system_prompt=system_prompt,
            gold_template=gold_template,
            answer_format=answer_format,
            correct_threshold=correct_threshold,
        )
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

    def score_reply(self, problem_id: int, entry: dict[str, Any], reply: str, answer: str | None) -> float:
        """The dataset's ``score_answer`` of the answer read from ``reply``."""
        try:
            return float(self.scorer.score_answer(answer, entry))
        except Exception as err:
            raise RuntimeError(
                f"{self.dataset_name}.score_answer raised on prompt id {problem_id} (completion {reply!r}, answer "
                f"{answer!r}): {type(err).__name__}: {err}"
            ) from err
