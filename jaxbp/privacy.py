"""Privacy accounting of DP-SGD: the ε that a noise multiplier, sampling rate and step count spend.

Contract: `jaxbp.dp_sgd` runs ``steps`` times the sampled Gaussian mechanism, each example in
a step's batch independently with probability q (Poisson sampling), the sum of the clipped
per-example gradients plus ``N(0, σ²C²)`` noise (eq. (6.3) of docs/derivations.md). Its
privacy is the composition of ``steps`` Poisson-subsampled Gaussian mechanisms of noise
multiplier σ, and this module asks the ``dp-accounting`` package (Google's) for the ε of that
composition at a given δ (eq. (6.5)): ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` composed
``steps`` times, under one of two accountants:

* ``"rdp"``: Rényi DP (Mironov 2017; the subsampled Gaussian of Mironov, Talwar and Zhang
  2019), converted to (ε, δ) by ``dp-accounting``'s conversion: a valid upper bound, looser
  than PLD;
* ``"pld"``: privacy loss distributions (Koskela et al. 2020, Doroshenko et al. 2022), nearly
  exact, discretised with step `PLD_DISCRETIZATION` (pessimistically, so ε stays an upper
  bound).

The same run has a different ε under each, so an ε is reported with its accountant
(`PrivacyAccount`). ``dp-accounting`` is imported on first use, so ``import jaxbp`` works
without it.

References:
  Abadi et al., "Deep learning with differential privacy", CCS 2016.
  Mironov, Talwar, Zhang, "Rényi differential privacy of the sampled Gaussian mechanism",
  arXiv:1908.10530 (2019).
  Doroshenko, Ghazi, Kamath, Kumar, Manurangsi, "Connect the dots: tighter discrete
  approximations of privacy loss distributions", PETS 2022.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

ACCOUNTANTS = ("rdp", "pld")

# The PLD's value grid: 1e-3 puts ε within about 1e-3 above the finer grid's (6.7695 against
# 6.7688 at 1e-4 for σ = 1.5, q = 0.04, 2250 steps) in about 0.05 s instead of 0.4 s.
PLD_DISCRETIZATION = 1e-3

# The noise multipliers `calibrate_noise` searches: below 1/8 the PLD grows slow (seconds
# per evaluation) and ε is past any meaningful privacy (tens or more); above 2^16 no target
# worth asking is still unmet.
NOISE_RANGE = (0.125, 65536.0)


class PrivacyAccount(NamedTuple):
    """What a DP-SGD run spent: its ε at δ, with everything the ε was computed from.

    Attributes:
      noise_multiplier: σ, the noise's standard deviation over the clip norm.
      sampling_rate: q, each example's probability of being in a step's batch.
      steps: T, the noisy steps taken.
      delta: δ of the (ε, δ) guarantee.
      accountant: ``"rdp"`` or ``"pld"`` (`ACCOUNTANTS`).
      epsilon: ε of the composition, from `epsilon`.
    """

    noise_multiplier: float
    sampling_rate: float
    steps: int
    delta: float
    accountant: str
    epsilon: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (plain floats, int and str); `from_dict` reads it back."""
        return {
            "noise_multiplier": float(self.noise_multiplier),
            "sampling_rate": float(self.sampling_rate),
            "steps": int(self.steps),
            "delta": float(self.delta),
            "accountant": str(self.accountant),
            "epsilon": float(self.epsilon),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PrivacyAccount:
        """The account `to_dict` wrote."""
        return cls(**{field: record[field] for field in cls._fields})


def _dp_accounting() -> Any:
    """The ``dp_accounting`` module, or an ImportError naming the install command."""
    try:
        import dp_accounting
    except ImportError as err:
        raise ImportError(
            'jaxbp.privacy needs the dp-accounting package: pip install "jaxbp[privacy]"'
        ) from err
    return dp_accounting


def _check(sampling_rate: float, steps: int, delta: float, accountant: str) -> None:
    """Refuses a sampling rate, step count, δ or accountant that has no accounting."""
    if not 0 < sampling_rate <= 1:
        raise ValueError(
            f"sampling_rate must be in (0, 1], got {sampling_rate}: it is the probability of "
            "each example being in a batch, batch_size / num_examples."
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}: the noisy steps taken.")
    if not 0 < delta < 1:
        raise ValueError(
            f"delta must be in (0, 1), got {delta}: use one well below 1/num_examples, "
            "e.g. 1e-5 for tens of thousands of examples."
        )
    if accountant not in ACCOUNTANTS:
        raise ValueError(
            f"unknown accountant {accountant!r}: expected one of {', '.join(ACCOUNTANTS)}."
        )


def _check_noise(noise_multiplier: float) -> None:
    if not 0 < noise_multiplier < math.inf:
        raise ValueError(
            f"noise_multiplier must be positive and finite, got {noise_multiplier}: with no "
            "noise a step has no privacy (ε = ∞)."
        )


def dp_event(noise_multiplier: float, sampling_rate: float, steps: int) -> Any:
    """The ``dp_accounting`` event of a DP-SGD run: ``steps`` Poisson-sampled Gaussians (6.5)."""
    dpa = _dp_accounting()
    step = dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(noise_multiplier))
    return dpa.SelfComposedDpEvent(step, steps)


def _new_accountant(accountant: str) -> Any:
    """A fresh ``dp_accounting`` accountant of the name (`ACCOUNTANTS`)."""
    dpa = _dp_accounting()
    if accountant == "rdp":
        return dpa.rdp.RdpAccountant()
    return dpa.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)


@contextlib.contextmanager
def _quiet_rdp() -> Iterator[None]:
    """Silences the RDP accountant's warnings while it runs.

    For large q it warns, once per order α and call, that a series did not converge and
    that it leaves that α out of the minimum over orders; ε stays an upper bound (over the
    other orders), and the warnings would bury a run's console and its one-line errors.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _epsilon_of_event(event: Any, delta: float, accountant: str) -> float:
    with _quiet_rdp():
        return float(_new_accountant(accountant).compose(event).get_epsilon(delta))


def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε of ``steps`` DP-SGD steps at δ (eq. (6.5)), by ``dp-accounting``.

    Args:
      noise_multiplier: σ > 0: the noise on the clipped sum is ``N(0, σ²C²)`` (eq. (6.3)).
      sampling_rate: q in (0, 1]: each example's probability of being in a step's batch.
      steps: T ≥ 1, the steps taken.
      delta: δ in (0, 1).
      accountant: ``"rdp"`` or ``"pld"`` (module docstring): ε depends on it.

    Returns:
      ε such that the T steps are (ε, δ)-differentially private (add/remove one example).

    Examples:
      >>> from jaxbp import privacy
      >>> round(privacy.epsilon(1.5, 0.04, 2250, 1e-5), 3)
      7.329
    """
    _check_noise(noise_multiplier)
    _check(sampling_rate, steps, delta, accountant)
    return _epsilon_of_event(dp_event(noise_multiplier, sampling_rate, steps), delta, accountant)


def account(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> PrivacyAccount:
    """The `PrivacyAccount` of a run: its settings and `epsilon` of them (same arguments)."""
    value = epsilon(noise_multiplier, sampling_rate, steps, delta, accountant)
    return PrivacyAccount(
        float(noise_multiplier), float(sampling_rate), steps, float(delta), accountant, value
    )


def calibrate_noise(
    target_epsilon: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    *,
    tol: float = 1e-6,
) -> float:
    """The smallest noise multiplier σ whose ``steps`` steps spend at most ``target_epsilon``.

    ``dp-accounting``'s ``calibrate_dp_mechanism`` (Brent's method, then a check that the
    returned σ meets the target) on the bracket this function finds by doubling or halving σ
    from 1 within `NOISE_RANGE`.

    Args:
      target_epsilon: ε > 0 to spend at most.
      sampling_rate, steps, delta, accountant: as `epsilon`.
      tol: the σ returned is within ``tol`` of the smallest one that meets the target.

    Returns:
      σ with ``epsilon(σ, ...) <= target_epsilon``.

    Raises:
      ValueError: for bad arguments, or a target that no σ in `NOISE_RANGE` meets (a tiny
        target ε under PLD's discretisation, or one so large it needs σ < 1/8).
    """
    if not 0 < target_epsilon < math.inf:
        raise ValueError(f"target_epsilon must be positive and finite, got {target_epsilon}.")
    _check(sampling_rate, steps, delta, accountant)
    dpa = _dp_accounting()
    lowest, highest = NOISE_RANGE

    def gap(sigma: float) -> float:
        event = dp_event(sigma, sampling_rate, steps)
        return _epsilon_of_event(event, delta, accountant) - target_epsilon

    # ε falls as σ grows: find hi with ε(hi) <= target and lo = hi / 2^j with ε(lo) > target.
    hi = 1.0
    while gap(hi) > 0:
        if hi >= highest:
            raise ValueError(
                f"no noise multiplier up to {highest:g} reaches ε = {target_epsilon} at "
                f"sampling_rate {sampling_rate}, {steps} steps and δ = {delta} ({accountant}): "
                "ask for a larger target ε, fewer steps or a lower sampling rate."
            )
        hi *= 2
    lo = hi / 2
    while gap(lo) <= 0:
        if lo <= lowest:
            raise ValueError(
                f"ε = {target_epsilon} is already met by a noise multiplier of {lowest:g} "
                f"(sampling_rate {sampling_rate}, {steps} steps, δ = {delta}, {accountant}): "
                "such an ε gives no meaningful privacy; ask for a smaller target ε."
            )
        hi, lo = lo, lo / 2
    with _quiet_rdp():
        sigma = dpa.calibrate_dp_mechanism(
            lambda: _new_accountant(accountant),
            lambda sigma: dp_event(sigma, sampling_rate, steps),
            target_epsilon,
            delta,
            dpa.ExplicitBracketInterval(lo, hi),
            tol=tol,
        )
    return float(sigma)
