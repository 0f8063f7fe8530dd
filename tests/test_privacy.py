"""Tests of jaxbp.privacy: ε and the calibrated noise against published figures, the record,
and the refusals.

Published figures (δ = 1e-5, the figures of Opacus's accountant tests): σ = 1.5, q = 0.04,
2250 steps spend ε = 7.3293 under RDP and 6.7688 under PLD (a PRV accountant's bounds
[6.7588, 6.7788]); ε = 8 at q = 0.04 and 2250 steps needs σ = 1.4159 (RDP) and 1.3460 (PLD).
Tolerances: RDP figures to 1e-3 relative (the RDP conversion and the Rényi orders shift the
fourth digit between implementations); PLD's ε within the PRV bounds, its σ to 1e-3 relative
(the grid of `PLD_DISCRETIZATION` = 1e-3 moves ε by about 1e-3, σ by about 1e-4).
"""

import json
import subprocess
import sys

import pytest

from jaxbp import dp_sgd, privacy

DELTA = 1e-5


def test_epsilon_matches_the_published_figures():
    assert privacy.epsilon(1.5, 0.04, 2250, DELTA, "rdp") == pytest.approx(7.3293, rel=1e-3)
    assert 6.7588 <= privacy.epsilon(1.5, 0.04, 2250, DELTA, "pld") <= 6.7788


@pytest.mark.parametrize(("accountant", "published"), [("rdp", 1.4159), ("pld", 1.3460)])
def test_calibrated_noise_matches_the_published_figures(accountant, published):
    sigma = privacy.calibrate_noise(8.0, 0.04, 2250, DELTA, accountant)
    assert sigma == pytest.approx(published, rel=1e-3)
    # It meets the target, and is the smallest that does (to its tolerance).
    assert privacy.epsilon(sigma, 0.04, 2250, DELTA, accountant) <= 8.0
    assert privacy.epsilon(sigma - 1e-4, 0.04, 2250, DELTA, accountant) > 8.0


def test_epsilon_falls_with_noise_and_grows_with_steps():
    base = privacy.epsilon(1.0, 0.01, 1000, DELTA)
    assert privacy.epsilon(2.0, 0.01, 1000, DELTA) < base < privacy.epsilon(1.0, 0.01, 4000, DELTA)


def test_account_is_a_json_record_of_what_epsilon_came_from():
    account = privacy.account(1.5, 0.04, 2250, DELTA, "pld")
    record = json.loads(json.dumps(account.to_dict()))
    assert record == {
        "noise_multiplier": 1.5,
        "sampling_rate": 0.04,
        "steps": 2250,
        "delta": DELTA,
        "accountant": "pld",
        "epsilon": privacy.epsilon(1.5, 0.04, 2250, DELTA, "pld"),
    }
    assert privacy.PrivacyAccount.from_dict(record) == account


def test_truncation_to_batch_max_leaves_epsilon_unchanged():
    # `dp_sgd.poisson_batch` keeps a random B_max of an overflowing sample: dp-accounting's
    # truncated Poisson event accounts for that exactly (PLD). At the digits settings its ε
    # equals the Poisson one's to 1e-5 relative.
    dpa = privacy._dp_accounting()
    n, q, sigma, steps = 1437, 64 / 1437, 1.5, 1320
    event = dpa.TruncatedSubsampledGaussianDpEvent(n, q, dp_sgd.batch_max(n, q), sigma)
    truncated = privacy._epsilon_of_event(dpa.SelfComposedDpEvent(event, steps), DELTA, "pld")
    assert truncated == pytest.approx(privacy.epsilon(sigma, q, steps, DELTA, "pld"), rel=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 0.04, 10, DELTA), "noise_multiplier must be positive"),
        ((-1.0, 0.04, 10, DELTA), "noise_multiplier must be positive"),
        ((1.0, 0.0, 10, DELTA), "sampling_rate must be in"),
        ((1.0, 1.5, 10, DELTA), "sampling_rate must be in"),
        ((1.0, 0.04, 0, DELTA), "steps must be an int >= 1"),
        ((1.0, 0.04, 2.5, DELTA), "steps must be an int >= 1"),
        ((1.0, 0.04, 10, 0.0), "delta must be in"),
        ((1.0, 0.04, 10, 1.0), "delta must be in"),
    ],
)
def test_bad_input_is_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        privacy.epsilon(*args)
    if not message.startswith("noise"):
        with pytest.raises(ValueError, match=message):
            privacy.calibrate_noise(8.0, *args[1:])
    with pytest.raises(ValueError, match="unknown accountant 'prv'"):
        privacy.epsilon(1.0, 0.04, 10, DELTA, "prv")


def test_a_target_no_noise_multiplier_reaches_is_refused():
    with pytest.raises(ValueError, match="target_epsilon must be positive"):
        privacy.calibrate_noise(0.0, 0.04, 100, DELTA)
    # PLD's pessimistic grid keeps ε above about 0.006 here however large σ grows.
    with pytest.raises(ValueError, match="no noise multiplier up to 65536 reaches"):
        privacy.calibrate_noise(1e-4, 0.04, 2250, DELTA, "pld")
    with pytest.raises(ValueError, match="already met by a noise multiplier of 0.125"):
        privacy.calibrate_noise(1e4, 0.04, 10, DELTA)


def test_missing_dp_accounting_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # import then raises ImportError
    with pytest.raises(ImportError, match=r'pip install "jaxbp\[privacy\]"'):
        privacy.epsilon(1.0, 0.04, 10, DELTA)


def test_import_jaxbp_does_not_import_dp_accounting():
    code = (
        "import sys, jaxbp, jaxbp.privacy, jaxbp.dp_sgd; "
        "assert 'dp_accounting' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
