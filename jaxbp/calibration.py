"""How well predicted class probabilities match the frequencies they claim.

Contract: ``probabilities: (n, C)`` rows of class probabilities (two columns ``[1 − p, p]``
for one sigmoid unit, as `jaxbp.run.inference.predict_rows` writes them) and ``labels: (n,)``
true class indices. Host numpy in, floats out.

* `negative_log_likelihood`: the mean ``−log p(y_i)`` (clipped at the smallest normal float).
* `reliability`: confidence (the top probability) binned into equal-width bins, each bin's
  mean confidence, accuracy and count: the reliability diagram.
* `expected_calibration_error`: ``ECE = Σ_b (n_b / n) |acc_b − conf_b|`` over those bins
  (Guo et al., ICML 2017; 15 bins as there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NUM_BINS = 15  # Guo et al.'s choice, which the calibration literature reports against


class Reliability(NamedTuple):
    """Per-bin statistics of a reliability diagram; bins ``[b/B, (b+1)/B)``, the last closed.

    Attributes:
      confidence: ``(B,)`` mean top probability of the examples in each bin (0 if empty).
      accuracy: ``(B,)`` fraction of them predicted right (0 if empty).
      counts: ``(B,)`` examples per bin.
    """

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def _check(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != (len(probabilities),) or not len(labels):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} and labels of shape {labels.shape}: "
            "expected (n, num_classes) and (n,) class indices with n > 0."
        )
    return probabilities, labels.astype(np.int64)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean ``−log p(y_i)`` of the true classes."""
    probabilities, labels = _check(probabilities, labels)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, np.finfo(np.float64).tiny))))


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of examples whose most probable class is the true one."""
    probabilities, labels = _check(probabilities, labels)
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS
) -> Reliability:
    """Confidence against accuracy in ``num_bins`` equal-width bins of the top probability."""
    probabilities, labels = _check(probabilities, labels)
    confidence = np.max(probabilities, axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    index = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    safe = np.maximum(count, 1)
    return Reliability(
        np.bincount(index, confidence, num_bins) / safe,
        np.bincount(index, correct.astype(np.float64), num_bins) / safe,
        count,
    )


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS
) -> float:
    """``Σ_b (n_b / n) |acc_b − conf_b|`` over `reliability`'s bins."""
    bins = reliability(probabilities, labels, num_bins)
    weights = bins.counts / np.sum(bins.counts)
    return float(np.sum(weights * np.abs(bins.accuracy - bins.confidence)))
