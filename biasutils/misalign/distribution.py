"""Distribution misalignment: whether original and augmented texts are told apart in embedding space.

Holds a kernel two-sample test (:func:`mmd_test`), a classifier two-sample test
(:func:`classifier_two_sample_test`) and a 2-D projection to look at (:func:`projection_2d`). They take
embeddings, not texts: the stage embeds with the profile's embedder
(:func:`biasutils.misalign.stage.embed`), the audit with its own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from scipy.spatial.distance import pdist, squareform

from ..stats import percentile_interval
from ._common import AUGMENTED, CI_LEVEL, ORIGINAL, _check_n_boot

# ---------------------------------------------------------------------------------------------- distribution


def _embedding_pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for name, array in (("x", x), ("y", y)):
        if array.ndim != 2 or array.shape[0] < 2:
            raise ValueError(f"{name}: expected a 2-D array with at least 2 rows (one embedding per text), "
                             f"got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: holds NaN or infinite values; give finite embeddings")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y: embedding dimensions differ ({x.shape[1]} vs {y.shape[1]}); "
                         "embed both with the same model")
    return x, y


def _subsample(array: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(array) <= limit:
        return array
    return array[np.sort(rng.choice(len(array), limit, replace=False))]


def mmd_test(x: Any, y: Any, n_permutations: int = 500, seed: int = 0, max_per_side: int = 1000) -> dict[str, Any]:
    """Kernel two-sample test: unbiased MMD² (Gretton et al. 2012) with an RBF kernel and a permutation p-value.

    Why MMD: it compares whole distributions of embeddings, not just their means, and is 0 in
    expectation when both sides come from one distribution. The kernel is ``exp(-|a-b|² / (2 σ²))``
    with σ the median distance between distinct pooled points (median heuristic; 1 if all coincide).
    Each side is first subsampled (seeded) to ``max_per_side`` rows, since the kernel matrix grows
    with the square of the sample. The pooled kernel matrix is computed once; the statistic of a split
    depends only on ``aᵀK₀a`` and ``aᵀK₀1`` (``a`` the 0/1 indicator of the first side, ``K₀`` the kernel
    matrix with a zero diagonal), so all permutations cost one matrix product. p-value:
    ``(1 + #{permuted ≥ observed}) / (1 + n_permutations)``. A row on both sides (a copied text) adds
    k = 1 to the cross term only and pulls the statistic down (the same texts on both sides: below every
    permutation's, p = 1). Drop such rows first, as the audit does (:func:`biasutils.audit.find_duplicates`).

    Returns statistic, p_value, n_x, n_y (rows used), n_x_input, n_y_input, bandwidth, n_permutations.
    """
    x_input, y_input = _embedding_pair(x, y)
    if n_permutations < 1:
        raise ValueError(f"n_permutations: {n_permutations!r}; allowed: a positive number of permutations")
    if max_per_side < 2:
        raise ValueError(f"max_per_side: {max_per_side!r}; allowed: 2 or more rows per side")
    rng = np.random.default_rng(seed)
    x, y = _subsample(x_input, max_per_side, rng), _subsample(y_input, max_per_side, rng)
    m, total = len(x), len(x) + len(y)
    distances = pdist(np.vstack([x, y]), "sqeuclidean")
    positive = distances[distances > 0]
    bandwidth = float(np.sqrt(np.median(positive))) if len(positive) else 1.0
    kernel = squareform(np.exp(-distances / (2 * bandwidth**2)))  # zero diagonal: K₀
    splits = np.zeros((n_permutations + 1, total))
    splits[0, :m] = 1
    chosen = np.argsort(rng.random((n_permutations, total)), axis=1)[:, :m]
    np.put_along_axis(splits[1:], chosen, 1.0, axis=1)
    statistics = _mmd2_unbiased(splits, kernel, m, total - m)
    observed = statistics[0]
    p_value = (1 + int((statistics[1:] >= observed).sum())) / (1 + n_permutations)
    return {"statistic": float(observed), "p_value": float(p_value), "n_x": m, "n_y": total - m,
            "n_x_input": len(x_input), "n_y_input": len(y_input), "bandwidth": bandwidth,
            "n_permutations": n_permutations}


def _mmd2_unbiased(splits: np.ndarray, kernel: np.ndarray, m: int, n: int) -> np.ndarray:
    """MMD²_u of each split (rows of 0/1 indicators of the first side) from the zero-diagonal kernel."""
    within_first = np.einsum("pi,pi->p", splits @ kernel, splits)  # sum over i != j in the first side
    first_to_all = splits @ kernel.sum(1)
    cross = first_to_all - within_first
    within_second = kernel.sum() - 2 * first_to_all + within_first
    return within_first / (m * (m - 1)) + within_second / (n * (n - 1)) - 2 * cross / (m * n)


def classifier_two_sample_test(x: Any, y: Any, seed: int = 0, folds: int = 5, n_boot: int = 1000) -> dict[str, Any]:
    """Classifier two-sample test: can a linear model tell augmented (``y``) from original (``x``) embeddings?

    Why a classifier too: its AUC reads directly (0.5 = indistinguishable, 1 = fully separable). Out-of-
    fold probabilities come from a standardised logistic regression under stratified ``folds``-fold
    cross-validation (``cross_val_predict``, seeded shuffle). The p-value is the one-sided Mann-Whitney
    U test of the ``y`` scores over the ``x`` scores, the exact test of AUC > 0.5 (AUC = U / (n_x n_y));
    it treats out-of-fold scores as independent. The interval is a percentile bootstrap of the
    out-of-fold scores, resampled within each side. The sides must share no row: a row on both sides
    has its twin in the training folds under the other label, so its out-of-fold score turns against
    it and the AUC falls far below 0.5 (the same texts on both sides: 0.06; near-identical rows do the same,
    less strongly). Drop shared rows first, as the audit does (:func:`biasutils.audit.find_duplicates`).

    Returns auc, ci_low, ci_high, p_value, n_x, n_y.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _embedding_pair(x, y)
    if not 2 <= folds <= min(len(x), len(y)):
        raise ValueError(f"folds: {folds!r}; allowed: 2 to {min(len(x), len(y))} (the smaller side's size)")
    _check_n_boot(n_boot)
    labels = np.r_[np.zeros(len(x), dtype=int), np.ones(len(y), dtype=int)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, np.vstack([x, y]), labels, cv=splitter, method="predict_proba")[:, 1]
    positive, negative = scores[labels == 1], scores[labels == 0]
    p_value = scipy_stats.mannwhitneyu(positive, negative, alternative="greater").pvalue
    low, high = _auc_interval(positive, negative, n_boot, seed)
    return {"auc": float(roc_auc_score(labels, scores)), "ci_low": low, "ci_high": high, "p_value": float(p_value),
            "n_x": len(x), "n_y": len(y)}


def _auc_interval(positive: np.ndarray, negative: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Bootstrap AUCs as U / (n₊ n₋) of resampled scores, all resamples in one vectorised U test."""
    if not n_boot:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot_positive = positive[rng.integers(0, len(positive), size=(n_boot, len(positive)))]
    boot_negative = negative[rng.integers(0, len(negative), size=(n_boot, len(negative)))]
    u = scipy_stats.mannwhitneyu(boot_positive, boot_negative, axis=1, method="asymptotic").statistic
    return percentile_interval(u / (len(positive) * len(negative)), CI_LEVEL)


def projection_2d(x: Any, y: Any, seed: int = 0, labels: tuple[str, str] = (ORIGINAL, AUGMENTED)) -> pd.DataFrame:
    """Both sets on the first two principal components of the pooled embeddings (columns x1, x2, source)."""
    from sklearn.decomposition import PCA

    x, y = _embedding_pair(x, y)
    points = PCA(n_components=2, random_state=seed).fit_transform(np.vstack([x, y]))
    return pd.DataFrame({"x1": points[:, 0], "x2": points[:, 1],
                         "source": [labels[0]] * len(x) + [labels[1]] * len(y)})
