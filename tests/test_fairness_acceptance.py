"""Fair resampling rules: weights by hand, the accepted set's parity, quotas, preferential copies, bad input."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2_contingency

from rsft.acceptance.base import AcceptAll
from rsft.acceptance.fairness import (
    EmptyCellError,
    PreferentialSampling,
    Reweighing,
    UniformSampling,
    cell_counts,
    preferential_copies,
    reweighing_weights,
)
from rsft.proposals.dataset import DatasetProposal
from rsft.sampling import rejection_sample
from rsft.tasks.decision_data import load_decision_split


def toy_rows(s, y, x=None):
    s, y = torch.tensor(s), torch.tensor(y)
    x = torch.zeros(len(s), 2) if x is None else x
    return {"x": x, "y": y, "s": s}


def test_reweighing_weights_by_hand():
    # cells [s, y]: (0,0) 3 rows, (0,1) 1, (1,0) 2, (1,1) 4; n = 10; |s=0| = 4, |s=1| = 6, |y=0| = 5, |y=1| = 5
    s = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    y = [0, 0, 0, 1, 0, 0, 1, 1, 1, 1]
    w = reweighing_weights(torch.tensor(s), torch.tensor(y))
    expected = torch.tensor([[4 * 5 / 10 / 3, 4 * 5 / 10 / 1], [6 * 5 / 10 / 2, 6 * 5 / 10 / 4]], dtype=torch.float64)
    assert torch.allclose(w, expected)
    rule = Reweighing(toy_rows(s, y))
    log_a = rule.log_accept_prob(toy_rows([0, 0, 1, 1], [0, 1, 0, 1]))
    assert torch.allclose(log_a.exp().double(), (expected / expected.max()).flatten().float().double(), atol=1e-6)


def accepted_cells(acceptance, n=20_000, seed=0):
    split = load_decision_split("german", "age", seed=0)
    result = rejection_sample(DatasetProposal(split), acceptance, num_accepted=n, chunk_size=8192, seed=seed)
    return cell_counts(result.batch["s"], result.batch["y"]), split


def test_reweighing_accepted_set_has_zero_parity_difference():
    """The accepted rows are i.i.d. from a law where s and y are independent, so a χ² test of independence
    on their 2×2 table has a uniform p-value: failing when p < 1e-4 is a false failure with probability 1e-4
    (any seed). The same test on rows accepted by `all` (SPD −0.15) must reject: it shows the test has power."""
    split = load_decision_split("german", "age", seed=0)
    cells, _ = accepted_cells(Reweighing(split))
    p_value = chi2_contingency(cells.numpy(), correction=False).pvalue
    assert p_value > 1e-4, (cells, p_value)
    rates = cells[:, 1].double() / cells.sum(1).double()
    assert abs(float(rates[0] - rates[1])) < 0.05  # ≈ 0 (the 5-sigma sampling noise at n = 20,000 is ≈ 0.04)
    raw, _ = accepted_cells(AcceptAll())
    assert chi2_contingency(raw.numpy(), correction=False).pvalue < 1e-10
    raw_rates = raw[:, 1].double() / raw.sum(1).double()
    assert float(raw_rates[0] - raw_rates[1]) < -0.1


def test_uniform_sampling_keeps_exact_cell_quotas_per_chunk():
    split = load_decision_split("german", "sex", seed=1)
    rule = UniformSampling(split)
    batch = DatasetProposal(split).sample(10_000, torch.Generator().manual_seed(0))
    kept = rule.accept(batch, torch.Generator().manual_seed(0))
    cells = cell_counts(batch["s"][kept], batch["y"][kept]).double()
    target = rule.fractions.reshape(2, 2)
    # floors lose at most one row per cell
    assert torch.all((cells - target * cells.sum()).abs() <= 1.0 + 1e-9)
    # s and y independent in the kept set up to that rounding
    rates = cells[:, 1] / cells.sum(1)
    assert abs(float(rates[0] - rates[1])) < 0.01
    # the kept rows of a cell are a random subset of it, not its first rows in draw order
    first_cell = (2 * batch["s"] + batch["y"]) == 0
    assert not torch.equal(kept[first_cell], torch.arange(int(first_cell.sum())) < int(cells[0, 0]))


def test_uniform_sampling_with_fewer_accepted_than_a_chunk_still_balances_the_cells():
    """The engine keeps the first num_accepted accepted rows of the last chunk. With 8,000 of a 32,768-row
    chunk the accepted label SPD has sampling sd ≈ 0.013 (German/age, P(y=1) ≈ 0.7, 19 % young), so
    |SPD| < 0.065 (5 sd) fails falsely with probability < 1e-6. Power: a rule that kept each cell's first
    rows gave the data's SPD (≈ −0.15) here, 6 sd outside."""
    split = load_decision_split("german", "age", seed=0)
    result = rejection_sample(
        DatasetProposal(split), UniformSampling(split), num_accepted=8000, chunk_size=32768, seed=0
    )
    s, y = result.batch["s"], result.batch["y"].double()
    spd = float(y[s == 0].mean() - y[s == 1].mean())
    assert abs(spd) < 0.065, spd


def test_preferential_copies_by_hand():
    # n = 10. Cells [s, y]: (0,0) 3 rows → expected round(4·5/10) = 2: drop the 1 most borderline (highest score);
    # (0,1) 1 row → expected 2: every row gets 2 copies; (1,0) 2 rows → expected 3: 1 copy each, +1 for the
    # most borderline (highest score); (1,1) 4 rows → expected 3: drop the 1 most borderline (lowest score).
    s = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    y = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    scores = torch.tensor([0.1, 0.6, 0.3, 0.5, 0.2, 0.45, 0.9, 0.55, 0.7, 0.8])
    copies = preferential_copies(scores, s, y)
    assert copies.tolist() == [1, 0, 1, 2, 1, 2, 1, 0, 1, 1]
    assert int(copies.sum()) == 10


class FixedScorer(torch.nn.Module):
    """A 'model' whose probability of the favourable label is the first feature."""

    device = torch.device("cpu")

    def predict_proba(self, x):
        return x[:, 0]


def test_preferential_sampling_uses_the_bound_models_scores():
    scores = torch.tensor([0.1, 0.6, 0.3, 0.5, 0.2, 0.45, 0.9, 0.55, 0.7, 0.8])
    rows = toy_rows([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 1, 1, 1, 1], x=scores[:, None].repeat(1, 2))
    rule = PreferentialSampling(rows)
    with pytest.raises(RuntimeError, match="before bind"):
        rule.start()
        rule.log_accept_prob({**rows, "index": torch.arange(10)})
    rule.bind(FixedScorer())
    rule.start()
    accept = rule.log_accept_prob({**rows, "index": torch.arange(10)}).exp()
    assert torch.allclose(accept, torch.tensor([1, 0, 1, 2, 1, 2, 1, 0, 1, 1]) / 2.0)
    assert rule.stats()["rule_rows_dropped"] == 2
    with pytest.raises(TypeError, match="predict_proba"):
        rule.bind(object())


def test_empty_cell_missing_field_and_bad_group_ids():
    with pytest.raises(EmptyCellError, match=r"\(s=1, y=0\)"):
        Reweighing(toy_rows([0, 0, 1, 1], [0, 1, 1, 1]))
    with pytest.raises(EmptyCellError):
        UniformSampling(toy_rows([0, 0, 1, 1], [0, 1, 1, 1]))
    with pytest.raises(EmptyCellError):
        PreferentialSampling(toy_rows([0, 0, 1, 1], [0, 1, 1, 1]))
    with pytest.raises(KeyError, match="acceptance=reweighing needs the batch field 's'"):
        Reweighing({"x": torch.zeros(4, 1), "y": torch.tensor([0, 1, 0, 1])})
    rule = Reweighing(toy_rows([0, 0, 1, 1], [0, 1, 0, 1]))
    with pytest.raises(KeyError, match="'s'"):
        rule.log_accept_prob({"x": torch.zeros(2, 1), "y": torch.tensor([0, 1])})
    with pytest.raises(EmptyCellError, match=r"cell\(s\) \(s=0, y=1\), \(s=2, y=0\)"):  # three groups, two empty cells
        Reweighing(toy_rows([0, 2, 1, 1], [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="label y must be binary"):
        Reweighing(toy_rows([0, 0, 1, 1], [0, 2, 0, 1]))
    with pytest.raises(ValueError, match="sensitive attribute s must hold group ids 0, 1, ..."):
        Reweighing(toy_rows([0, -1, 1, 1], [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="group ids 0, 1, ... below 2"):  # a batch with a group the rule never saw
        rule.log_accept_prob(toy_rows([0, 2], [0, 1]))


def test_dataset_proposal_draws_rows_with_replacement_reproducibly():
    rows = toy_rows([0, 1, 0], [1, 1, 0], x=torch.arange(6.0).reshape(3, 2))
    proposal = DatasetProposal(rows)
    a = proposal.sample(1000, torch.Generator().manual_seed(5))
    b = proposal.sample(1000, torch.Generator().manual_seed(5))
    assert set(a) == {"x", "y", "s", "index"}
    assert torch.equal(a["index"], b["index"])
    assert torch.equal(a["x"], rows["x"][a["index"]]) and torch.equal(a["s"], rows["s"][a["index"]])
    assert set(a["index"].tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="one length"):
        DatasetProposal({"x": torch.zeros(3, 1), "y": torch.zeros(2)})
