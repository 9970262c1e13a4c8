"""The grid's cost model (protocols/cell_cost.py): the training share, the fit on known coefficients, estimates."""

from __future__ import annotations

import math

import pytest

from ncprompt.data.sampling import imbalanced_shots
from ncprompt.protocols import cell_cost


@pytest.mark.parametrize("k", [5, 50, 250])
def test_train_share_is_the_imbalance_profile_s_share_of_the_balanced_images(k):
    assert cell_cost.train_share(k, None) == cell_cost.train_share(k, 1.0) == 1.0
    shares = [cell_cost.train_share(k, t) for t in (1.0, 0.25, 0.06)]
    assert shares == sorted(shares, reverse=True)
    assert shares[1] == pytest.approx(imbalanced_shots(k, 16, 0.25, 7).sum() / (16 * k))  # any seed: a permutation


def test_the_fit_recovers_known_coefficients_from_exact_cells():
    a, b, c = 2.0, 0.5, 0.02
    cells = []
    for k in (10, 37, 85, 500):
        for tau in (1.0, 0.25, 0.06):
            kb = math.ceil(k / 2)
            s = cell_cost.train_share(kb, tau)
            cells.append((k, tau, "base2new", a + (b * kb + c * kb * kb) * s))
    assert cell_cost.fit(cells) == pytest.approx((a, b, c), rel=1e-6)
    with pytest.raises(ValueError):
        cell_cost.fit([])


def test_estimates_grow_with_classes_and_shrink_with_tau_and_npt_costs_as_its_method():
    est = cell_cost.estimate
    assert est("coop", 100) < est("coop", 200) < est("coop", 200, protocol="all")
    assert est("coop", 100, 0.06) < est("coop", 100, 0.25) < est("coop", 100)
    assert est("coop+npt", 100) == est("coop", 100)
    assert est("ivlp", 100) == est("maple", 100) and est("prograd", 100) == est("coop", 100)
    assert est("zeroshot", 100) < est("linear_probe", 100) < est("tcp", 100)
    a, b, c = cell_cost.COEFFICIENTS["coop"]
    assert est("coop", 11) == pytest.approx(a + 6 * b + 36 * c)  # base half: ceil(11 / 2) = 6 classes
    # the K^2 term: doubling the classes more than doubles the training part
    assert (est("cocoop", 1000) - a) > 2.5 * (est("cocoop", 500) - a)
