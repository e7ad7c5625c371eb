"""Write rsft's example prompt files: arithmetic word problems in GSM8K's format, generated from a seed.

Each row is ``{"question": ..., "answer": ...}`` where the answer is a short worked solution whose last line
is ``#### <number>`` (numbers of 1,000 or more written with thousands commas, which GSM8K's format allows):
what ``task=prompts task.reference_format=gsm8k`` reads. One or two steps of +, −, ×, ÷ on small whole
numbers, in eight templates; no third-party data. The held-out file's questions are not in the training file.

    python experiments/make_word_problems.py            # experiments/data/word_problems/{train,test}.jsonl

The committed files are this script's output with the defaults (tests/test_prompts.py checks it).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "word_problems"
PEOPLE = [
    ("Ava", "she"),
    ("Ben", "he"),
    ("Chloe", "she"),
    ("Dev", "he"),
    ("Elena", "she"),
    ("Farid", "he"),
    ("Grace", "she"),
    ("Hugo", "he"),
    ("Imani", "she"),
    ("Jonas", "he"),
    ("Keiko", "she"),
    ("Liam", "he"),
]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards", "beads", "books"]
GOODS = [("notebook", 3), ("sandwich", 4), ("ticket", 6), ("toy car", 5), ("plant", 7), ("scarf", 9)]


def number(n: int) -> str:
    """A whole number as GSM8K writes a final answer: thousands separated by commas."""
    return f"{n:,}"


def gets_more(rng: random.Random) -> tuple[str, str, int]:
    (name, he), (friend, _), items = *rng.sample(PEOPLE, 2), rng.choice(ITEMS)
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    question = (
        f"{name} has {a} {items}. {he.capitalize()} gets {b} more {items} from {friend}. How many {items} does "
        f"{name} have now?"
    )
    return question, f"{name} has {a} + {b} = {a + b} {items} now.", a + b


def gives_away(rng: random.Random) -> tuple[str, str, int]:
    (name, _), (friend, _), items = *rng.sample(PEOPLE, 2), rng.choice(ITEMS)
    a = rng.randint(10, 60)
    b = rng.randint(1, a - 1)
    question = f"{name} had {a} {items} and gave {b} of them to {friend}. How many {items} does {name} have left?"
    return question, f"{name} has {a} - {b} = {a - b} {items} left.", a - b


def bags(rng: random.Random) -> tuple[str, str, int]:
    (name, _), items = rng.choice(PEOPLE), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    question = f"{name} buys {a} bags of {items}. Each bag holds {b} {items}. How many {items} does {name} buy?"
    return question, f"{name} buys {a} * {b} = {a * b} {items}.", a * b


def shares(rng: random.Random) -> tuple[str, str, int]:
    (name, _), items = rng.choice(PEOPLE), rng.choice(ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(2, 12)
    total = friends * each
    question = f"{name} shares {total} {items} equally among {friends} friends. How many {items} does each friend get?"
    return question, f"Each friend gets {total} / {friends} = {each} {items}.", each


def packs(rng: random.Random) -> tuple[str, str, int]:
    (name, _), items = rng.choice(PEOPLE), rng.choice(ITEMS)
    a, b, c = rng.randint(1, 20), rng.randint(2, 6), rng.randint(2, 10)
    question = (
        f"{name} has {a} {items} and buys {b} packs with {c} {items} in each pack. How many {items} does {name} "
        "have now?"
    )
    answer = f"The packs hold {b} * {c} = {b * c} {items}.\n{name} has {a} + {b * c} = {a + b * c} {items} now."
    return question, answer, a + b * c


def change(rng: random.Random) -> tuple[str, str, int]:
    (name, _), (thing, top) = rng.choice(PEOPLE), rng.choice(GOODS)
    price, count = rng.randint(2, top), rng.randint(2, 5)
    cost = price * count
    bill = next(b for b in (10, 20, 50, 100) if b >= cost)
    question = (
        f"A {thing} costs ${price}. {name} buys {count} of them and pays with a ${bill} bill. How many dollars of "
        f"change does {name} get?"
    )
    answer = f"{count} of them cost {count} * {price} = ${cost}.\nThe change is {bill} - {cost} = ${bill - cost}."
    return question, answer, bill - cost


def farm(rng: random.Random) -> tuple[str, str, int]:
    animals = rng.choice(["chickens", "sheep", "ducks", "goats"])
    a = rng.randint(80, 900) * 10
    b, c = rng.randint(5, a // 20) * 10, rng.randint(5, 90) * 10
    question = (
        f"A farm has {number(a)} {animals}. It sells {number(b)} of them and buys {number(c)} more. How many "
        f"{animals} does the farm have now?"
    )
    answer = f"After selling it has {a} - {b} = {a - b} {animals}.\nAfter buying it has {a - b} + {c} = {a - b + c}."
    return question, answer, a - b + c


def walks(rng: random.Random) -> tuple[str, str, int]:
    name, _ = rng.choice(PEOPLE)
    distance, days = rng.randint(2, 15), rng.randint(3, 30)
    question = f"{name} walks {distance} kilometres every day. How many kilometres does {name} walk in {days} days?"
    return question, f"{name} walks {distance} * {days} = {distance * days} kilometres.", distance * days


TEMPLATES: list[Callable[[random.Random], tuple[str, str, int]]] = [
    gets_more,
    gives_away,
    bags,
    shares,
    packs,
    change,
    farm,
    walks,
]


def problems(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` problems with distinct questions, the templates in turn, numbers drawn from ``seed``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < count:
        question, solution, result = TEMPLATES[len(out) % len(TEMPLATES)](rng)
        if question in seen:
            continue
        seen.add(question)
        out.append({"question": question, "answer": f"{solution}\n#### {number(result)}"})
    return out


def write(out: Path, train: int, test: int, seed: int) -> None:
    rows = problems(train + test, seed)
    rng = random.Random(seed + 1)
    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", rows[:test]), ("train", rows[test:])):
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in part)
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write(args.out, args.train, args.test, args.seed)


if __name__ == "__main__":
    main()
