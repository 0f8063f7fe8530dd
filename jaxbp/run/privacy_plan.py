"""What a DP-SGD run adds to a training run: its sampling, its noise and its accounting.

A run is DP-SGD when its config gives ``dp_noise_multiplier`` (or sweeps it) or
``dp_target_epsilon`` (`jaxbp.run.config.is_private`). Then `plan_privacy`, once the training
split's size N is known, fixes the `PrivacyPlan`:

* the Poisson sampling of rate ``q = batch_size / N`` (`jaxbp.dp_sgd.poisson_sampler`), each
  step a fixed ``B_max`` rows and a mask, ``N // batch_size`` steps per epoch;
* δ: ``dp_delta``, or by default ``1/N`` rounded down to a power of 10 strictly below it;
* σ: ``dp_noise_multiplier``, or the smallest σ whose ``epochs · N // batch_size`` steps spend
  at most ``dp_target_epsilon`` (`jaxbp.privacy.calibrate_noise`); None when swept (each
  member's σ is then among its swept values).

`member_accounts` gives each member's `jaxbp.privacy.PrivacyAccount` after any number of
steps: the accounting is a function of σ, q, the steps and δ alone, so a resumed run's ε
needs no stored state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxbp import dp_sgd, privacy
from jaxbp.run.config import Config, ConfigError, Member, is_private


class PrivacyPlan(NamedTuple):
    """A DP-SGD run's fixed privacy settings (hashable: part of the compiled program's spec).

    Attributes:
      sampler: the Poisson sampling of every epoch.
      noise_multiplier: σ shared by the members; None when swept (``hparams`` carry it).
      delta: δ of the (ε, δ) guarantee.
      accountant: ``"rdp"`` or ``"pld"``.
    """

    sampler: dp_sgd.PoissonSampler
    noise_multiplier: float | None
    delta: float
    accountant: str


def default_delta(num_examples: int) -> float:
    """``1/N`` rounded down to a power of 10, strictly below ``1/N``: ``10^-(digits of N)``."""
    return 10.0 ** -len(str(int(num_examples)))


def plan_privacy(config: Config, num_examples: int, data_devices: int = 1) -> PrivacyPlan | None:
    """The run's `PrivacyPlan`, or None for a run without DP.

    Args:
      config: the run's settings (already validated).
      num_examples: N, the training rows.
      data_devices: devices a batch is split over: ``B_max`` is rounded up to a multiple
        of it where that stays within N (a larger ``B_max`` only makes overflow rarer).

    Raises:
      ConfigError: for δ ≥ 1/N, or a ``dp_target_epsilon`` that no noise multiplier reaches.
    """
    if not is_private(config):
        return None
    sampler = dp_sgd.poisson_sampler(num_examples, config.batch_size)
    rounded = -(-sampler.batch_max // data_devices) * data_devices
    if rounded <= num_examples:
        sampler = sampler._replace(batch_max=rounded)
    delta = default_delta(num_examples) if config.dp_delta is None else config.dp_delta
    if delta >= 1 / num_examples:
        raise ConfigError(
            "dp_delta",
            delta,
            f"must be below 1/N = {1 / num_examples:.3g} for the {num_examples} training "
            "examples (δ ≥ 1/N allows giving away an example outright); unset, it is "
            f"{default_delta(num_examples):g}.",
        )
    sigma = config.dp_noise_multiplier
    if config.dp_target_epsilon is not None:
        steps = config.epochs * sampler.steps_per_epoch
        try:
            sigma = privacy.calibrate_noise(
                config.dp_target_epsilon,
                sampler.sampling_rate,
                steps,
                delta,
                config.dp_accountant,
            )
        except ValueError as e:
            raise ConfigError("dp_target_epsilon", config.dp_target_epsilon, str(e)) from None
    return PrivacyPlan(sampler, sigma, delta, config.dp_accountant)


def member_noise(plan: PrivacyPlan, members: tuple[Member, ...]) -> np.ndarray:
    """Every member's σ, ``(M,)`` float64: its swept value as given, else the plan's σ.

    The account is of the value given; the step's noise has the standard deviation σC in
    the run's precision (float32: within 6e-8 of it, relatively), which moves ε in about its
    seventh digit.
    """
    if plan.noise_multiplier is None:
        return np.asarray([m.values["dp_noise_multiplier"] for m in members], np.float64)
    return np.full(len(members), plan.noise_multiplier, np.float64)


def member_accounts(
    plan: PrivacyPlan, noise: np.ndarray, steps: int
) -> list[privacy.PrivacyAccount]:
    """Each member's account after ``steps`` private steps (one accounting per distinct σ)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}: no step, nothing spent.")
    q = plan.sampler.sampling_rate
    by_sigma = {
        sigma: privacy.account(sigma, q, steps, plan.delta, plan.accountant)
        for sigma in dict.fromkeys(float(s) for s in noise)
    }
    return [by_sigma[float(s)] for s in noise]


def epsilons(accounts: list[privacy.PrivacyAccount] | None) -> np.ndarray | None:
    """Each member's ε, ``(M,)``, of `member_accounts`' accounts (None: no DP)."""
    return None if accounts is None else np.asarray([a.epsilon for a in accounts])
