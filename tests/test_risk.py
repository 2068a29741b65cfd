"""Risk control of operating thresholds: hand-computed losses and thresholds, scipy's binomial
tail as the oracle of the p-values, simulations where the true risk is known, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binom

from softseg.errors import SoftsegError
from softseg.evaluation.metrics import FINE_THRESHOLDS
from softseg.inference import RunOptions
from softseg.inference.risk import (
    crc_threshold,
    empirical_threshold,
    false_discovery_rates,
    false_negative_rates,
    hoeffding_bentkus_pvalue,
    ltt_threshold,
)

PROB = np.array([0.9, 0.6, 0.3, 0.1])
RATERS = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)  # the third drew nothing
LEVELS = np.array([0.2, 0.5, 0.7, 0.95])


def test_the_losses_by_hand():
    # t = 0.2 finds pixels 0-2, 0.5 pixels 0-1, 0.7 pixel 0, 0.95 nothing
    fnr = false_negative_rates(PROB, RATERS, LEVELS)
    np.testing.assert_allclose(fnr, [0.0, (1 / 3) / 3, (1 / 2 + 2 / 3) / 3, (1 + 1) / 3])
    fdr = false_discovery_rates(PROB, RATERS, LEVELS)
    np.testing.assert_allclose(fdr, [(1 / 3 + 0 + 1) / 3, (0 + 0 + 1) / 3, (0 + 0 + 1) / 3, 0.0])
    assert false_negative_rates(PROB, RATERS[2:], LEVELS).tolist() == [0, 0, 0, 0]  # nothing drawn: 0
    with pytest.raises(SoftsegError, match=r"expected rater masks \(R, \*\(4,\)\)"):
        false_negative_rates(PROB, RATERS[:, :3], LEVELS)


def test_conformal_risk_control_by_hand():
    thresholds = np.array([0.1, 0.2, 0.3, 0.4])
    losses = np.tile([0.0, 0.05, 0.1, 0.2], (9, 1))  # n = 9: 9/10 R + 1/10 <= 0.2 <=> R <= 1/9
    chosen = crc_threshold(losses, thresholds, alpha=0.2)
    assert chosen.threshold == 0.3 and chosen.n == 9
    assert chosen.calibration_risk == pytest.approx(0.1) and chosen.bound == pytest.approx(0.19)
    assert empirical_threshold(losses, thresholds, 0.2) == 0.4  # the mean alone goes one step further
    # the feasible set is a prefix: a dip after a violation does not count
    dip = np.tile([0.0, 0.2, 0.05, 0.05], (9, 1))
    assert crc_threshold(dip, thresholds, alpha=0.2).threshold == 0.1
    with pytest.raises(SoftsegError, match=r"3 calibration image\(s\) are too few for alpha 0\.2: .* n >= 4"):
        crc_threshold(losses[:3], thresholds, alpha=0.2)
    with pytest.raises(SoftsegError, match=r"no threshold in 0\.1\.\.0\.4 keeps the corrected"):
        crc_threshold(np.full((9, 4), 0.5), thresholds, alpha=0.2)
    with pytest.raises(SoftsegError, match=r"--alpha must be in \(0, 1\)"):
        crc_threshold(losses, thresholds, alpha=1.5)


def _crc_test_risks(rng, trials, n, alpha, scale):
    """Mean test loss at CRC's threshold over ``trials`` calibration sets of ``n`` images and
    one new image each; loss L(t) = min(1, t X), X ~ Uniform(0, scale): monotone, risk known."""
    risks = []
    for _ in range(trials):
        x = rng.uniform(0, scale, n + 1)
        losses = np.minimum(1.0, FINE_THRESHOLDS[None, :] * x[:, None])
        t = crc_threshold(losses[:n], FINE_THRESHOLDS, alpha).threshold
        risks.append(min(1.0, t * x[n]))
    return np.array(risks)


def test_conformal_risk_control_keeps_its_promise_and_is_not_vacuous():
    rng = np.random.default_rng(0)
    n, alpha, trials = 40, 0.2, 4000
    risks = _crc_test_risks(rng, trials, n, alpha, scale=1.0)
    error = 3 * risks.std() / math.sqrt(trials)
    assert risks.mean() <= alpha + error  # E[L_new(t̂)] <= alpha
    # not vacuous: within 2B/(n+1) (the paper's lower bound) plus one grid step of the risk
    assert risks.mean() >= alpha - 2 / (n + 1) - 0.01 - error


def test_hoeffding_bentkus_pvalues_against_scipys_binomial_tail():
    n, alpha = 50, 0.1
    for k in (0, 1, 2, 5, 9):
        r = k / n
        a = min(r, alpha)
        h = (a * math.log(a / alpha) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - alpha))
        expected = min(math.exp(-n * h), math.e * binom.cdf(k, n, alpha), 1.0)
        assert hoeffding_bentkus_pvalue(r, n, alpha) == pytest.approx(expected, rel=1e-9)
        # a valid p-value for 0/1 losses is never below the exact binomial tail
        assert hoeffding_bentkus_pvalue(r, n, alpha) >= binom.cdf(k, n, alpha) - 1e-12
    assert hoeffding_bentkus_pvalue(0.5, n, alpha) == 1.0  # mean above alpha: no evidence
    # valid: under H0 (risk exactly alpha) it is <= 0.1 at most 10 % of the time
    k = np.random.default_rng(1).binomial(n, alpha, 20000)
    assert (hoeffding_bentkus_pvalue(k / n, n, alpha) <= 0.1).mean() <= 0.1


def test_learn_then_test_tests_from_the_top_and_stops_at_the_first_failure():
    thresholds = np.array([0.2, 0.4, 0.6, 0.8])
    n = 200
    # mean FDR 0.3 at 0.2 (fails), 0.02 at 0.4, 0.3 at 0.6 (fails), 0.0 at 0.8
    losses = np.tile([0.3, 0.02, 0.3, 0.0], (n, 1))
    chosen = ltt_threshold(losses, thresholds, alpha=0.1, delta=0.1)
    assert chosen.threshold == 0.8  # 0.6 fails, so 0.4 is never tested
    losses[:, 2] = 0.02
    assert ltt_threshold(losses, thresholds, alpha=0.1, delta=0.1).threshold == 0.4
    assert ltt_threshold(losses, thresholds, alpha=0.1, delta=0.1).bound == pytest.approx(
        float(hoeffding_bentkus_pvalue(0.02, n, 0.1)))
    with pytest.raises(SoftsegError, match=r"no threshold can be shown .* at 0\.8 the mean calibration FDR"):
        ltt_threshold(np.full((n, 4), 0.3), thresholds, alpha=0.1, delta=0.1)


def test_learn_then_test_holds_with_probability_one_minus_delta():
    """FDR-like loss, not monotone: L(t) = Bernoulli(q(t)) with q known; the chosen t has
    risk q(t) > alpha in at most delta of the calibration draws."""
    rng = np.random.default_rng(2)
    thresholds = np.linspace(0.05, 0.95, 19)
    q = 0.05 + 0.3 * np.abs(np.sin(7 * thresholds)) * (1 - thresholds)  # wiggles, falls to 0.05
    alpha, delta, n, trials = 0.15, 0.1, 100, 1500
    misses = 0
    for _ in range(trials):
        losses = (rng.random((n, len(thresholds))) < q).astype(float)
        try:
            t = ltt_threshold(losses, thresholds, alpha, delta).threshold
        except SoftsegError:
            continue  # abstaining never breaks the promise
        misses += q[np.isclose(thresholds, t)][0] > alpha
    assert misses / trials <= delta


# ------------------------------------------------------------------------ softseg threshold


def test_threshold_with_risk_control_on_a_run(tmp_path, capsys, monkeypatch):
    from softseg.cli import main
    from softseg.data.datasets import load_dataset
    from softseg.inference.arrays import predict_images
    from softseg.inference.runs import load_run
    from softseg.inference.thresholds import choose_threshold
    from test_thresholds import make_run, rater_dataset

    data = rater_dataset(tmp_path / "data", n_cases=12, seed=5)
    val = tuple(f"c{i}" for i in range(1, 13) if i != 3)  # make_run trains on c3
    run = make_run(tmp_path / "run", seed=3, val=val)
    payload, _ = choose_threshold(run, data, criterion="risk_fnr", target=0.3, options=RunOptions(progress=False))
    cases = load_dataset(data).select(case_ids=list(val)).cases
    maps = [p[0] for p in predict_images([load_run(run)], [c.image for c in cases])]
    losses = np.stack([false_negative_rates(m, c.masks["task01"], FINE_THRESHOLDS) for m, c in zip(maps, cases)])
    expected = crc_threshold(losses, FINE_THRESHOLDS, 0.3)
    point = payload["tasks"]["task01"]
    assert point["threshold"] == expected.threshold
    assert point["risk"]["n"] == 11 and point["risk"]["calibration_risk"] == pytest.approx(expected.calibration_risk, abs=1e-6)
    assert payload["criterion"] == "risk_fnr" and payload["alpha"] == 0.3 and payload["risk"] == "fnr"
    assert payload["n"] == 11 and payload["loss_bound"] == 1.0 and payload["delta"] is None
    assert "exchangeable" in point["risk"]["guarantee"]

    monkeypatch.setattr("softseg.cli._COMMAND_MODULES", ("_predict",))
    assert main(["threshold", str(run), str(data), "--risk", "fnr", "--alpha", "0.3", "--no-progress"]) == 0
    assert "guarantee: E[false-negative rate of the next image] <= 0.3" in capsys.readouterr().out
    stored = json.loads((run / "threshold.json").read_text())
    assert stored["tasks"]["task01"]["threshold"] == expected.threshold
    # predict applies it as it applies any stored threshold
    assert main(["predict", str(run), str(data), "--out", str(tmp_path / "pred"), "--no-progress"]) == 0
    label = f"{expected.threshold:.2f}"
    assert (tmp_path / "pred" / "c1" / f"task01_mask-{label}.png").is_file()
    assert main(["threshold", str(run), str(data), "--max-f1", "--alpha", "0.3", "--overwrite"]) == 2


def test_risk_control_refuses_training_cases_and_too_few_cases(tmp_path, caplog):
    from softseg.inference.thresholds import choose_threshold
    from test_thresholds import make_run, rater_dataset

    data = rater_dataset(tmp_path / "data", n_cases=3)
    run = make_run(tmp_path / "run", val=("c1", "c2"))  # its split.json trains on c3
    overlapping = make_run(tmp_path / "overlap", val=("c1", "c2", "c3"))  # ... and validates on it too
    quiet = RunOptions(progress=False)
    with pytest.raises(SoftsegError, match=r"1 of the 3 cases were training cases of the run\(s\) \(c3\); "
                       r"risk control needs cases the model never trained on"):
        choose_threshold(overlapping, data, criterion="risk_fnr", target=0.2, options=quiet)
    with pytest.raises(SoftsegError, match=r"2 calibration image\(s\) are too few for alpha 0\.2"):
        choose_threshold(run, data, criterion="risk_fnr", target=0.2, options=quiet)
    with pytest.raises(SoftsegError, match=r"--risk fdr needs --delta"):
        choose_threshold(run, data, criterion="risk_fdr", target=0.2, options=quiet)
    # the empirical criteria only warn: their measures are optimistic on training cases
    choose_threshold(overlapping, data, criterion="max_f1", options=quiet)
    assert "were training cases of the run(s) (c3); the measures on them are optimistic" in caplog.text

