"""task=prompts: the user's prompt file (JSONL, JSON, CSV, Parquet, a save_to_disk directory, under any column
names), reference formats, answer readers and verifiers on hand-made cases, the held-out split, the records,
and rsft-train runs from config on files the tests create. The reward model is in test_reward_model.py.

Mutations seen failing these tests (each reverted): the number pattern without thousands groups (``1,234``
read as ``234``) or without the lookbehind (``5-3`` read as ``-3``); ``boxed`` without brace matching (the
first ``}`` ends ``\\frac{1}{2}``); gsm8k keeping the commas; the numeric verifier ignoring its tolerance
(``==``); the split unseeded, or seeded without ``task.seed``; duplicates between train and test not dropped
with dedup; the gold check skipped (a bad user verifier not caught before the run); the canonical answer id
without number normalisation (``1,000`` ≠ ``1000`` votes).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROMPT_ROWS as ROWS
from conftest import prompt_run, write_jsonl

from rsft.tasks.answers import AnswerReader, answer_id, canonical, parse_number
from rsft.tasks.prompt_files import read_prompt_file
from rsft.tasks.prompts import PromptsTask, read_reference
from rsft.tasks.verifiers import CallableVerifier, ExactVerifier, NumericVerifier, make_verifier
from rsft.train import train

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "experiments" / "data" / "word_problems"


def write_csv(path: Path, rows: list[dict], opener=open) -> Path:
    with opener(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_task(path: Path, **settings) -> PromptsTask:
    defaults = {"question": "problem", "answer": "solution", "reference_format": "gsm8k", "test_size": 3}
    return PromptsTask(path=str(path), **{**defaults, **settings})


# -- reading files ---------------------------------------------------------------------------------------
def test_every_format_reads_the_same_rows_under_other_column_names(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as parquet

    files = {
        "jsonl": write_jsonl(tmp_path / "p.jsonl", ROWS),
        "json": tmp_path / "p.json",
        "csv": write_csv(tmp_path / "p.csv", ROWS),
        "csv.gz": write_csv(tmp_path / "p.csv.gz", ROWS, opener=gzip.open),
        "parquet": tmp_path / "p.parquet",
        "datasets": tmp_path / "saved",
    }
    files["json"].write_text(json.dumps(ROWS, indent=1))
    parquet.write_table(pyarrow.Table.from_pylist(ROWS), files["parquet"])
    datasets.Dataset.from_list(ROWS).save_to_disk(str(files["datasets"]))
    first = None
    for kind, path in files.items():
        table = read_prompt_file(str(path), "task.path")
        assert table.columns == ["problem", "solution"] and table.rows == ROWS, kind
        task = make_task(path)
        questions = [e["question"] for e in task.entries]
        first = first or questions
        assert questions == first, kind  # the same problems, split the same way, whatever the format
        assert task.records()["prompts.json"]["train"]["format"] == kind.split(".")[0]
    # where rows came from: lines of text files (the CSV header is line 1; its cells span two lines), rows of the others
    assert read_prompt_file(str(files["jsonl"]), "task.path").where[:2] == ["line 1", "line 2"]
    assert read_prompt_file(str(files["csv"]), "task.path").where[:2] == ["line 2", "line 4"]  # a row's first line
    assert read_prompt_file(str(files["parquet"]), "task.path").where[:2] == ["row 1", "row 2"]


def test_a_saved_dataset_dict_points_at_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:7]), "test": datasets.Dataset.from_list(ROWS[7:])}
    )
    data.save_to_disk(str(tmp_path / "gsm"))
    with pytest.raises(ValueError, match=r"is a DatasetDict .* e\.g\. task\.path=.*gsm/train"):
        read_prompt_file(str(tmp_path / "gsm"), "task.path")
    task = make_task(tmp_path / "gsm" / "train", test_size=None, test_path=str(tmp_path / "gsm" / "test"))
    assert task.num_sft == 7 and len(task.pool("test")) == 3


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("p.txt", "x", "rsft reads files named .jsonl"),
        ("p.jsonl", '{"a": 1}\n{"a": \n', "line 2 is not valid JSON"),
        ("p.jsonl", '{"a": 1}\n[1, 2]\n', "line 2 is list, not a JSON object"),
        ("p.csv", "a,b\n1,2\n3,4,5\n", "line 3 has 3 cells but the header has 2 columns"),
        ("p.json", '[{"a": 1},', "not valid JSON at line 1"),
    ],
)
def test_a_file_that_does_not_parse_names_its_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_prompt_file(str(tmp_path / name), "task.path")


def test_a_missing_file_and_a_directory_not_written_by_save_to_disk(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.path='/no/such.jsonl' does not exist"):
        read_prompt_file("/no/such.jsonl", "task.path")
    with pytest.raises(ValueError, match="not one written by datasets' save_to_disk"):
        read_prompt_file(str(tmp_path), "task.test_path")


# -- references, answers, verifiers ----------------------------------------------------------------------
def test_reference_formats():
    assert read_reference("48/2 = 24\n24+48 = 72\n#### 72", "gsm8k") == "72"
    assert read_reference("so\n#### 1,234,567", "gsm8k") == "1234567"
    assert read_reference("#### -5", "gsm8k") == "-5" and read_reference("#### 3.25", "gsm8k") == "3.25"
    assert read_reference("#### ten", "gsm8k") == "ten"  # not a number: kept as text (exact / math_verify)
    assert read_reference("#### 1 ####  2 ", "gsm8k") == "2"  # the text after the last ####
    assert read_reference("no final line 7", "gsm8k") is None and read_reference("####  ", "gsm8k") is None
    assert read_reference("It is 1,200 then -3.5.", "last_number") == "-3.5"
    assert read_reference("no number", "last_number") is None
    assert read_reference("  x + 1 \n", "raw") == "x + 1" and read_reference("  ", "raw") is None


def test_answer_readers_on_hand_made_replies():
    last = AnswerReader("last_number")
    assert last("12 + 30 = 42") == "42"
    assert last("It costs $1,234.50 in total.") == "1234.50"
    assert last("The balance is -7.") == "-7"
    assert last("5-3") == "3"  # a minus right after a digit is the operation, not the number's sign
    assert last("numbers 1,2,3") == "3"  # not thousands groups
    assert last("0.5 of 12345") == "12345"
    assert last("no idea") is None
    boxed = AnswerReader("boxed")
    assert boxed(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert boxed(r"\boxed{1} then \boxed{ 2 }") == "2"
    assert boxed(r"\boxed{3} and an unclosed \boxed{4") == "3"
    assert boxed("no box") is None and boxed(r"\boxed{}") is None
    assert AnswerReader("tag")("x <answer> 7 </answer> y") == "7"
    assert AnswerReader("full")("  8 \n") == "8" and AnswerReader("full")("  ") is None
    gsm = AnswerReader("#### (.+)")
    assert gsm("work\n#### 18\nthanks") == "18" and gsm("#### 1\n#### 2") == "2" and gsm("18") is None
    for bad, message in [
        ("boxd", "has 0 capture groups"),
        ("(a)(b)", "has 2 capture groups"),
        ("(", "not a valid regular expression"),
        ("", "must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            AnswerReader(bad)


def test_numbers_are_canonical_for_votes():
    assert parse_number("$1,234.") == 1234.0 and parse_number("-0.5") == -0.5 and parse_number("1,23") is None
    assert canonical("1,000") == canonical("1000.0") == canonical(" 1000 ") == "1000"
    assert canonical("2.50") == "2.5" and canonical("x  +  1") == "x + 1"
    assert answer_id("1,000") == answer_id("1000") != answer_id("1001")


def test_numeric_exact_and_math_verify_verifiers():
    numeric = NumericVerifier(tolerance=0.01)
    assert numeric("q", "", "3.005", "3") == 1.0 and numeric("q", "", "3.02", "3") == 0.0
    assert numeric("q", "", "-1234", "-1234") == 1.0 and numeric("q", "", None, "3") == 0.0
    relative = NumericVerifier(tolerance=0.0, relative_tolerance=0.01)
    assert relative("q", "", "1005", "1000") == 1.0 and relative("q", "", "1020", "1000") == 0.0
    assert NumericVerifier()("q", "", "0.1", "0.1000000001") == 1.0
    assert "is not a number" in NumericVerifier().check_reference("ten")
    exact = ExactVerifier()
    assert exact("q", "", "Paris", " Paris ") == 1.0 and exact("q", "", "paris", "Paris") == 0.0
    assert exact("q", "", "1000", "1,000") == 1.0
    with pytest.raises(ValueError, match="task.tolerance must be a finite number"):
        NumericVerifier(tolerance=-1)
    with pytest.raises(ValueError, match="task.verifier='fuzzy' is not a verifier"):
        make_verifier("fuzzy", 0.0, 0.0)
    pytest.importorskip("math_verify")
    mv = make_verifier("math_verify", 0.0, 0.0)
    assert mv("q", "", r"\frac{1}{2}", "0.5") == 1.0 and mv("q", "", "0.5", r"\frac{1}{2}") == 1.0
    assert mv("q", "", r"\sqrt{4}", "2") == 1.0 and mv("q", "", "3", "2") == 0.0 and mv("q", "", None, "2") == 0.0
    assert mv.check_reference("??") is not None and mv.check_reference("hello") is not None
    assert mv.check_reference("1,234") is None and mv.check_reference(r"\sqrt{2}") is None


def numpy_half(question, reply, reference):
    import numpy

    return numpy.float32(0.5)


@pytest.mark.parametrize(
    "returned, error, message",
    [
        ("1", TypeError, "returned '1' (str)"),
        (None, TypeError, "returned None (NoneType)"),
        (torch.tensor(1.0), TypeError, "(Tensor)"),
        (1.5, ValueError, "returned 1.5 for the reply 'r', outside [0, 1]"),
        (-0.1, ValueError, "outside [0, 1]"),
        (math.nan, ValueError, "returned nan"),
    ],
)
def test_a_user_verifier_must_return_a_number_in_0_1(returned, error, message):
    verifier = CallableVerifier(lambda q, r, ref: returned)
    with pytest.raises(error, match=r"task\.verifier .*" + re.escape(message)):
        verifier("q", "r", None, "ref")


def test_a_user_verifier_sees_question_whole_reply_and_reference():
    seen = []
    verifier = CallableVerifier(lambda q, r, ref: seen.append((q, r, ref)) or True)
    assert verifier("What?", "It is \\boxed{2}", "2", "2") == 1.0 and seen == [("What?", "It is \\boxed{2}", "2")]
    assert CallableVerifier(numpy_half)("q", "r", None, "x") == 0.5


# -- the task: split, records, scores --------------------------------------------------------------------
def test_the_split_is_seeded_disjoint_and_does_not_move_with_the_pool_size(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    task = make_task(path, test_size=0.3, few_shot=1)
    test = [task.entries[int(i)]["question"] for i in task.pool("test")]
    train = [task.entries[int(i)]["question"] for i in task.pool("sft")]
    shots = [e["question"] for e in task.examples]
    assert (len(test), len(train), len(shots)) == (3, 6, 1)
    assert len(set(test) | set(train) | set(shots)) == 10  # every row in exactly one place
    again = make_task(path, test_size=0.3, few_shot=1)
    assert [e["question"] for e in again.entries] == [e["question"] for e in task.entries]
    smaller = make_task(path, test_size=0.3, few_shot=1, num_sft=2)
    assert [smaller.entries[int(i)]["question"] for i in smaller.pool("test")] == test
    assert [smaller.entries[int(i)]["question"] for i in smaller.pool("sft")] == train[:2]
    assert [e["question"] for e in smaller.examples] == shots
    other = make_task(path, test_size=0.3, few_shot=1, seed=1)
    assert {other.entries[int(i)]["question"] for i in other.pool("test")} != set(test)  # another split
    assert len(make_task(path, test_size=4).pool("test")) == 4
    assert len(make_task(path, test_size=4, num_eval=2).pool("test")) == 2


def test_duplicates_within_a_file_and_between_train_and_test_are_refused_or_dropped(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [*ROWS, ROWS[0], {**ROWS[1], "problem": "  " + ROWS[1]["problem"]}])
    with pytest.raises(ValueError, match=r"asks 2 question\(s\) more than once \(e\.g\. line 11 repeats line 1\)"):
        make_task(train)
    task = make_task(train, dedup=True)
    record = task.records()["prompts.json"]
    assert record["train"]["duplicate_questions_dropped"] == 2 and record["train"]["rows_read"] == 12
    test = write_jsonl(tmp_path / "test.jsonl", ROWS[:2] + [{"problem": "New question?", "solution": "#### 1"}])
    clean = write_jsonl(tmp_path / "clean.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"2 question\(s\) of task.path are also in task.test_path .*task.dedup=true"):
        make_task(clean, test_size=None, test_path=str(test))
    task = make_task(clean, test_size=None, test_path=str(test), dedup=True)
    held_out = {task.entries[int(i)]["question"] for i in task.pool("test")}
    assert not held_out & {task.entries[int(i)]["question"] for i in task.pool("sft")}
    record = task.records()["prompts.json"]
    assert record["train"]["in_test_dropped"] == 2 and record["train"]["pool"] == 8
    with pytest.raises(ValueError, match="task.path has no training rows left: every question in it is also held"):
        make_task(clean, test_size=None, test_path=str(clean), dedup=True)
    assert record["test"]["rows_read"] == 3 and record["test"]["evaluated"] == 3


@pytest.mark.parametrize(
    "rows, settings, error, message",
    [
        (ROWS, {"question": "q"}, ValueError, r"has no column task.question='q': the columns found are \['problem', "),
        (ROWS, {"question": "q", "answer": "a"}, ValueError, "task.question='q' or task.answer='a'"),
        ([*ROWS[:4], {"problem": "  ", "solution": "#### 1"}], {}, ValueError, r"line 5: the question .* is empty \(1"),
        ([*ROWS[:4], {"problem": "Q?", "solution": None}], {}, ValueError, r"line 5: the answer .* is empty"),
        ([*ROWS[:4], {"problem": "Q?", "solution": "7"}], {}, ValueError, "cannot read a reference in .*line 5: '7'"),
        ([*ROWS[:4], {"problem": "Q?", "solution": "#### x"}], {}, ValueError, "'x' of .*line 5 is not a number"),
        ([*ROWS[:4], {"problem": ["Q"], "solution": "#### 1"}], {}, ValueError, "is list, not text"),
        (ROWS, {"test_size": None}, ValueError, "needs a held-out split"),
        (ROWS, {"test_size": 10}, ValueError, "holds out 10 of the 10 rows"),
        (ROWS, {"test_size": 1.5}, ValueError, "task.test_size=1.5 as a fraction must be in"),
        (ROWS, {"test_size": "1"}, ValueError, "task.test_size must be a number of rows"),
        (ROWS, {"few_shot": 7}, ValueError, "task.few_shot=7 takes every one of the 7"),
        (ROWS, {"num_sft": 8}, ValueError, "task.num_sft=8 but task.path has only 7"),
        (ROWS, {"num_eval": 4}, ValueError, "task.num_eval=4 but the held-out split has only 3"),
        (ROWS, {"reference_format": "last"}, ValueError, "task.reference_format must be one of"),
        (ROWS, {"answer": "problem"}, ValueError, "name the same column"),
        (ROWS, {"reward_model": {"paht": "x"}}, ValueError, r"unknown task.reward_model keys \['paht'\]"),
        (ROWS, {"gold_template": "{answer} {x}"}, ValueError, "task.gold_template='{answer} {x}' has braces"),
    ],
)
def test_bad_input_is_one_error_naming_the_key_and_the_row(tmp_path, rows, settings, error, message):
    with pytest.raises(error, match=message):
        make_task(write_jsonl(tmp_path / "p.jsonl", rows), **settings)


def test_a_user_verifier_that_returns_a_bad_score_fails_when_the_task_is_built(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"task\.verifier \(.*\) returned 2.0 .* \(the problem at task.path="):
        make_task(path, verifier=lambda q, r, ref: 2.0)
    with pytest.raises(RuntimeError, match="task.verifier .* raised on the problem at task.path=.*ZeroDivisionError"):
        make_task(path, verifier=lambda q, r, ref: 1 / 0)


def test_score_reads_verifies_and_votes_like_reasoning_gym(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    task = make_task(path, test_size=5)
    ids = task.pool("test")[:3]
    refs = [task.entries[int(i)]["reference"] for i in ids]
    replies = [f"so it is {int(refs[0]):,}", f"#### {int(refs[1]) + 1}", "no idea", f"so it is   {int(refs[0]):,}"]
    scored = task.score(ids[[0, 1, 2, 0]], replies)
    assert scored["correct"].tolist() == [True, False, False, True]
    assert scored["reward"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert scored["has_answer"].tolist() == [True, True, False, True]
    assert scored["answer"][0] == task.answers(ids[:1])[0] and scored["answer"][1] != task.answers(ids[1:2])[0]
    assert scored["path_hash"][0] == scored["path_hash"][3] != scored["path_hash"][1]
    gold = task.gold_completions(task.pool("sft")[:2])
    assert gold == [task.entries[int(i)]["answer"] for i in task.pool("sft")[:2]]
    assert task.score(task.pool("sft")[:2], gold)["correct"].all()
    with pytest.raises(ValueError, match="use proposal.pool=sft"):
        task.pool("answer_only")


def test_chat_and_plain_prompts_with_few_shot_examples_and_a_system_prompt(tmp_path):
    task = make_task(write_jsonl(tmp_path / "p.jsonl", ROWS), few_shot=2, system_prompt="Be brief.")
    prompt = task.prompts(task.pool("test")[:1])[0]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[2]["content"] == task.examples[0]["answer"]
    assert prompt[-1]["content"] == task.entries[int(task.pool("test")[0])]["question"]
    plain = make_task(write_jsonl(tmp_path / "p.jsonl", ROWS), chat=False, gold_template="{answer}.")
    text = plain.prompts(plain.pool("sft")[:1])[0]
    assert text == f"Question: {plain.entries[0]['question']}\nAnswer:"
    assert plain.gold_completions(plain.pool("sft")[:1]) == [" " + plain.entries[0]["answer"] + "."]


def test_a_warning_when_no_gold_completion_is_read_as_correct(tmp_path, caplog):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    task = make_task(path, answer_format="boxed")  # the solutions have no \boxed{}
    assert "accepts none of the 7 gold completions" in caplog.text
    record = task.records()["prompts.json"]
    assert record["gold_completions_checked"] == 7 and record["gold_completions_correct"] == 0
    caplog.clear()
    make_task(path)
    assert "accepts none" not in caplog.text


def test_the_shipped_example_files_are_the_generator_output(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / "make_word_problems.py"), "--out", str(tmp_path)], check=True
    )
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_text() == (EXAMPLE / name).read_text(), name
    task = PromptsTask(
        path=str(EXAMPLE / "train.jsonl"), test_path=str(EXAMPLE / "test.jsonl"), reference_format="gsm8k"
    )
    record = task.records()["prompts.json"]
    assert record["train"]["pool"] == 400 and record["test"]["held_out"] == 200
    assert record["gold_completions_correct"] == record["gold_completions_checked"] == 64
    assert any("," in task.reference(e) or "," in e["answer"].splitlines()[-1] for e in task.entries)


# -- through rsft-train ----------------------------------------------------------------------------------
def test_rsft_train_runs_task_prompts_from_a_csv_with_other_column_names(run_config, tmp_path):
    pytest.importorskip("transformers")
    import warnings

    data = write_csv(
        tmp_path / "mine.csv", ROWS * 1 + [{"problem": f"Extra {i}?", "solution": f"#### {i}"} for i in range(6)]
    )
    cfg = run_config(*prompt_run(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model is never right: empty rounds (on_empty=skip) warn
        train(cfg)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "val/test_greedy_accuracy" in metrics and "val/test_maj_at_k" in metrics
    assert metrics["sampling/round_candidates"] == 8
    record = json.loads((run / "prompts.json").read_text())  # what was inferred from the file, beside the run
    assert record["train"]["rows_read"] == 16 and record["test"]["held_out"] == 4 and record["train"]["pool"] == 12
    assert record["train"]["format"] == "csv" and record["columns"] == {"question": "problem", "answer": "solution"}


def test_bad_prompt_files_are_refused_before_the_run_dir_is_touched(run_config, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", ROWS)
    cases = [
        (["task.question=text"], "has no column task.question='text': the columns found are ['problem', 'solution']"),
        (["task.test_path=" + str(data), "task.test_size=null"], "are also in task.test_path"),
        (["task.verifier={_target_:math.sqrt,_partial_:true}"], "task.verifier (sqrt) raised on the problem at"),
    ]
    for overrides, fragment in cases:
        run_dir = tmp_path / "run"
        with pytest.raises(Exception) as caught:
            train(run_config(*prompt_run(data, *overrides), run_dir=run_dir))
        assert fragment in str(caught.value), str(caught.value)
        assert not run_dir.exists()
