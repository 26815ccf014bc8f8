"""Disentanglement metrics on arrays: MIG, SAP, DCI, the β-VAE score and the FactorVAE score.

They follow Locatello et al. 2019 ("Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations") as google-research/disentanglement_lib (dlib) computes them, with the defaults of its
``unsupervised_study_v1`` gin configs. Every score lies in [0, 1]; 1 is best.

Conventions: ``codes`` are (N, D) floats (a model's encoder means), ``factors`` are (N, F) ints, the class index
of each ground-truth factor (0..size_k − 1), ``sizes`` the number of classes of each factor (factors with one value
are the caller's to drop). ``represent`` is an oracle mapping (n, F) factor classes to the (n, D) codes of the
images with those factors: the β-VAE and FactorVAE scores need it to hold one factor fixed. Each function takes a
``seed`` (``numpy.random.default_rng(seed)`` for sampling, ``random_state=seed`` for sklearn estimators).

- **MIG** (mutual information gap, Chen et al. 2018): each code dimension is cut into ``bins`` = 20 equal-width bins
  over its range; m_ik = I(factor_k; code_i) in nats (``sklearn.metrics.mutual_info_score``), H_k = H(factor_k).
  MIG = mean_k (m_(1)k − m_(2)k) / H_k, the gap between the two codes most informative about factor k. 1: each
  factor is captured by one code alone. dlib: 10,000 points. MIG does not penalise one code carrying two factors
  (both gaps stay whole); a second code for a factor is what lowers it. DCI disentanglement and FactorVAE do.
- **SAP** (separated attribute predictability, Kumar et al. 2018), discrete factors: S_ik = test accuracy of
  ``LinearSVC(C=0.01, class_weight="balanced")`` predicting factor k from code i alone; SAP = mean_k
  (S_(1)k − S_(2)k). A code of variance ≤ 1e-12 scores 0 (dlib's continuous branch; its discrete branch fits the
  SVM on the constant anyway). dlib: 10,000 train and 5,000 test points. Two dlib properties to know: a linear
  SVM on one scalar separates few ordered classes, and an unrelated code still scores about chance, so SAP stays
  well below 1 even for codes = factors (0.37 for factors of 3, 6, 10, 8 classes); and it is not invariant to
  rescaling or shifting a code (C = 0.01 is strong and liblinear regularises the intercept: halving those codes
  gives 0.18).
- **DCI** (Eastwood & Williams 2018): a ``GradientBoostingClassifier`` (sklearn defaults) per factor on all codes;
  R_ik = |feature importance| of code i for factor k (D × F). Disentanglement D = Σ_i ρ_i (1 − H_F(P_i·)) with
  P_ik = R_ik / Σ_k R_ik, ρ_i = Σ_k R_ik / ΣR; completeness C = Σ_k ρ̃_k (1 − H_D(P̃_·k)) with P̃_ik = R_ik / Σ_i R_ik,
  ρ̃_k = Σ_i R_ik / ΣR; H_b is the entropy in base b of p + 1e-11 (as dlib); uniform weights when ΣR = 0. With one
  factor (F = 1) or one code (D = 1) the base is 1 and that entropy is taken as 0 (dlib divides by log 1 = 0).
  Informativeness: the classifiers' mean test accuracy (dlib reports it as ``informativeness_test``).
  dlib: 10,000 train and 5,000 test points.
- **β-VAE score** (Higgins et al. 2017): a point picks a factor k uniformly, two batches of ``batch_size`` = 64
  uniform factor rows that share factor k, and its feature is mean_batch |code(batch1) − code(batch2)|; a
  ``LogisticRegression`` predicts k from it. The score is its accuracy on fresh points. dlib: 10,000 train and
  5,000 eval points.
- **FactorVAE score** (Kim & Mnih 2018): codes are scaled by their global standard deviation (10,000 points);
  dimensions with std < 0.05 are pruned (dlib's configs; disent and dlib's function default use 0). A point
  picks k, 64 factor rows sharing factor k, and votes for the active dimension of least variance / global
  variance; each dimension's majority factor is its class, and the score is the fraction of fresh votes that
  class gets right (a majority-vote classifier). dlib: 10,000 train and 5,000 eval points.

Codes independent of the factors score about 0 on MIG, SAP and DCI disentanglement / completeness, but chance on
the accuracies: about 1/F for the β-VAE and FactorVAE scores, the mean of 1/size_k for DCI informativeness.

``disentanglement_scores`` runs all of them from an oracle; its ``num_train`` / ``num_test`` default to dlib's
10,000 / 5,000, and smaller values make it quick on a CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from vae.core.errors import ConfigError

Represent = Callable[[np.ndarray], np.ndarray]

MIG_BINS = 20  # dlib's discretizer.num_bins
SAP_C = 0.01  # dlib's LinearSVC(C=0.01, class_weight="balanced")
SAP_MIN_VARIANCE = 1e-12
DCI_EPSILON = 1e-11  # added to the importances before the entropies, as dlib
BATCH_SIZE = 64  # β-VAE and FactorVAE batches
PRUNE_THRESHOLD = 0.05  # FactorVAE: prune_dims.threshold in dlib's configs
NUM_TRAIN = 10_000
NUM_TEST = 5_000
ORACLE_ROWS = 16_384  # factor rows per ``represent`` call


@dataclass(frozen=True)
class DCI:
    """DCI scores: disentanglement and completeness from the importances, informativeness = mean test accuracy
    over factors (informativeness_train: on the training codes)."""

    disentanglement: float
    completeness: float
    informativeness: float
    informativeness_train: float


@dataclass(frozen=True)
class BetaVAEScore:
    """The logistic regression's accuracy on its training points and on fresh ones (the score)."""

    train_accuracy: float
    eval_accuracy: float


@dataclass(frozen=True)
class FactorVAEScore:
    """The majority-vote classifier's accuracy on its training votes and on fresh ones (the score); active_dims:
    code dimensions whose global standard deviation reached the threshold."""

    train_accuracy: float
    eval_accuracy: float
    active_dims: int


@dataclass(frozen=True)
class Scores:
    """All the scores, flat: β-VAE and FactorVAE are the eval accuracies, DCI informativeness the test accuracy."""

    beta_vae: float
    factor_vae: float
    mig: float
    sap: float
    dci_disentanglement: float
    dci_completeness: float
    dci_informativeness: float

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in asdict(self).items()}


# ---------------------------------------------------------------------------------------------------------- checks


def _codes(codes: np.ndarray, name: str = "codes") -> np.ndarray:
    array = np.asarray(codes)
    if array.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D (samples, dims) array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"{name} must be numbers, got dtype {array.dtype}")
    if array.shape[1] < 1:
        raise ConfigError(f"{name} has no dimensions")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ConfigError(f"{name} has NaN or infinite values")
    return array


def _factors(factors: np.ndarray, name: str = "factors") -> np.ndarray:
    array = np.asarray(factors)
    if array.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D (samples, factors) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"{name} must be integer class indices, got dtype {array.dtype}")
    if array.shape[1] < 1:
        raise ConfigError(f"{name} has no factors")
    return array


def _varied(factors: np.ndarray, name: str) -> None:
    for k in range(factors.shape[1]):
        if np.unique(factors[:, k]).size < 2:
            raise ConfigError(f"{name}: factor {k} has a single class; drop constant factors")


def _pair(
    codes: np.ndarray, factors: np.ndarray, prefix: str = "", *, varied: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    c = _codes(codes, f"{prefix}codes")
    f = _factors(factors, f"{prefix}factors")
    if c.shape[0] != f.shape[0]:
        raise ConfigError(f"{prefix}codes has {c.shape[0]} rows but {prefix}factors has {f.shape[0]}")
    if c.shape[0] < 2:
        raise ConfigError(f"{prefix}codes needs at least 2 samples, got {c.shape[0]}")
    if varied:
        _varied(f, f"{prefix}factors")
    return c, f


def _train_test(
    train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c_train, f_train = _pair(train_codes, train_factors, "train_")
    c_test, f_test = _pair(test_codes, test_factors, "test_", varied=False)
    if c_test.shape[1] != c_train.shape[1]:
        raise ConfigError(f"test_codes has {c_test.shape[1]} dims but train_codes has {c_train.shape[1]}")
    if f_test.shape[1] != f_train.shape[1]:
        raise ConfigError(f"test_factors has {f_test.shape[1]} factors but train_factors has {f_train.shape[1]}")
    return c_train, f_train, c_test, f_test


def _sizes(sizes: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(sizes)
    if array.ndim != 1 or array.size < 1 or not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"sizes must be a non-empty tuple of ints, got {sizes!r}")
    if (array < 2).any():
        raise ConfigError(f"sizes: every factor needs at least 2 classes, got {tuple(sizes)}; drop constant factors")
    return array.astype(np.int64)


def _at_least(value: int, minimum: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------------------ MIG


def discretize(codes: np.ndarray, *, bins: int = MIG_BINS) -> np.ndarray:
    """Each column cut into ``bins`` equal-width bins over its range: (N, D) ints in 1..bins (dlib's
    histogram_discretize: ``np.digitize`` on ``np.histogram``'s edges less the last)."""
    c = _codes(codes)
    bins = _at_least(bins, 1, "bins")
    out = np.empty(c.shape, dtype=np.int64)
    for i in range(c.shape[1]):
        edges = np.histogram(c[:, i], bins)[1]
        out[:, i] = np.digitize(c[:, i], edges[:-1])
    return out


def mutual_information(codes: np.ndarray, factors: np.ndarray, *, bins: int = MIG_BINS) -> np.ndarray:
    """(D, F) mutual information in nats between each discretized code and each factor."""
    c, f = _pair(codes, factors, varied=False)
    disc = discretize(c, bins=bins)
    return np.array([[mutual_info_score(f[:, k], disc[:, i]) for k in range(f.shape[1])] for i in range(c.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray, *, bins: int = MIG_BINS) -> float:
    """Mutual information gap: mean over factors of (largest − second largest I(code_i; factor_k)) / H(factor_k).
    With a single code dimension the gap is the largest alone."""
    c, f = _pair(codes, factors)
    m = mutual_information(c, f, bins=bins)
    entropy = np.array([mutual_info_score(f[:, k], f[:, k]) for k in range(f.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(top.shape[1])
    return float(np.mean((top[0] - second) / entropy))


# ------------------------------------------------------------------------------------------------------------ SAP


def sap_matrix(
    train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray, *, seed: int
) -> np.ndarray:
    """(D, F) test accuracies of a linear SVM predicting each factor from each code alone (0 for a code of variance
    ≤ 1e-12)."""
    c_train, f_train, c_test, f_test = _train_test(train_codes, train_factors, test_codes, test_factors)
    scores = np.zeros((c_train.shape[1], f_train.shape[1]))
    with warnings.catch_warnings():  # sklearn's notes on many classes and on convergence: dlib's setup, as is
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        for i in range(c_train.shape[1]):
            if np.var(c_train[:, i]) <= SAP_MIN_VARIANCE:
                continue
            for k in range(f_train.shape[1]):
                svm = LinearSVC(C=SAP_C, class_weight="balanced", random_state=seed)
                svm.fit(c_train[:, i : i + 1], f_train[:, k])
                scores[i, k] = np.mean(svm.predict(c_test[:, i : i + 1]) == f_test[:, k])
    return scores


def sap(
    train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray, *, seed: int
) -> float:
    """SAP: mean over factors of the gap between the two best single-code SVM test accuracies (top 1 − top 2; with
    one code dimension, top 1)."""
    scores = sap_matrix(train_codes, train_factors, test_codes, test_factors, seed=seed)
    top = np.sort(scores, axis=0)[::-1]
    second = top[1] if top.shape[0] > 1 else np.zeros(top.shape[1])
    return float(np.mean(top[0] - second))


# ------------------------------------------------------------------------------------------------------------ DCI


def _one_minus_entropy(p: np.ndarray, *, axis: int) -> np.ndarray:
    """1 − entropy of each slice along ``axis`` of p + 1e-11 in base (its length); base 1 (a single entry): 1."""
    base = p.shape[axis]
    if base == 1:
        return np.ones(p.shape[1 - axis])
    return 1.0 - scipy.stats.entropy(p + DCI_EPSILON, base=base, axis=axis)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) from a (D codes, F factors) importance matrix R ≥ 0."""
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise ConfigError(f"importance must be a non-empty 2-D (codes, factors) array, got shape {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ConfigError("importance must be finite and non-negative")
    per_code = _one_minus_entropy(r, axis=1)
    per_factor = _one_minus_entropy(r, axis=0)
    weights = r if r.sum() > 0 else np.ones_like(r)
    code_weight = weights.sum(axis=1) / weights.sum()
    factor_weight = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_code * code_weight)), float(np.sum(per_factor * factor_weight))


def dci_importance(
    train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray, *, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient-boosted trees per factor: the (D, F) importance matrix and the (F,) train and test accuracies."""
    c_train, f_train, c_test, f_test = _train_test(train_codes, train_factors, test_codes, test_factors)
    importance = np.zeros((c_train.shape[1], f_train.shape[1]))
    train_accuracy = np.zeros(f_train.shape[1])
    test_accuracy = np.zeros(f_train.shape[1])
    for k in range(f_train.shape[1]):
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(c_train, f_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_accuracy[k] = np.mean(model.predict(c_train) == f_train[:, k])
        test_accuracy[k] = np.mean(model.predict(c_test) == f_test[:, k])
    return importance, train_accuracy, test_accuracy


def dci(
    train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray, *, seed: int
) -> DCI:
    """DCI disentanglement, completeness and informativeness (mean test accuracy) from gradient-boosted trees."""
    importance, train_accuracy, test_accuracy = dci_importance(
        train_codes, train_factors, test_codes, test_factors, seed=seed
    )
    disentanglement, completeness = dci_from_importance(importance)
    return DCI(
        disentanglement=disentanglement,
        completeness=completeness,
        informativeness=float(np.mean(test_accuracy)),
        informativeness_train=float(np.mean(train_accuracy)),
    )


# --------------------------------------------------------------------------------------------------- the oracle


def sample_factors(sizes: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, F) factor classes, each factor uniform over its classes and independent of the others."""
    return rng.integers(0, _sizes(sizes), size=(n, len(sizes)))


def encode(represent: Represent, factors: np.ndarray, *, rows: int = ORACLE_ROWS) -> np.ndarray:
    """``represent`` over (n, F) factor rows, ``rows`` at a time: (n, D) float64 codes."""
    parts = []
    for start in range(0, factors.shape[0], rows):
        chunk = factors[start : start + rows]
        codes = np.asarray(represent(chunk))
        if codes.ndim != 2 or codes.shape[0] != chunk.shape[0]:
            raise ConfigError(f"represent returned shape {codes.shape} for {chunk.shape[0]} factor rows")
        if parts and codes.shape[1] != parts[0].shape[1]:
            raise ConfigError(f"represent returned {codes.shape[1]} dims after {parts[0].shape[1]}")
        parts.append(_codes(codes, "represent's codes"))
    return np.concatenate(parts)


def _points_per_call(batch_size: int, per_point: int) -> int:
    return max(1, ORACLE_ROWS // (batch_size * per_point))


def _beta_vae_points(
    represent: Represent, sizes: np.ndarray, n: int, batch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    num_factors = sizes.size
    features, labels = [], []
    step = _points_per_call(batch_size, 2)
    for start in range(0, n, step):
        p = min(step, n - start)
        k = rng.integers(0, num_factors, size=p)
        first = rng.integers(0, sizes, size=(p, batch_size, num_factors))
        second = rng.integers(0, sizes, size=(p, batch_size, num_factors))
        second[np.arange(p), :, k] = first[np.arange(p), :, k]
        rows = np.concatenate([first, second]).reshape(2 * p * batch_size, num_factors)
        codes = encode(represent, rows).reshape(2, p, batch_size, -1)
        features.append(np.mean(np.abs(codes[0] - codes[1]), axis=1))
        labels.append(k)
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(
    represent: Represent,
    sizes: tuple[int, ...],
    *,
    seed: int,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_TEST,
) -> BetaVAEScore:
    """β-VAE score: accuracy of a logistic regression that tells, from mean |code(b1) − code(b2)| over a batch pair
    sharing one factor, which factor they share. Defaults: dlib's (64, 10,000, 5,000)."""
    sizes_ = _sizes(sizes)
    batch_size = _at_least(batch_size, 1, "batch_size")
    num_train = _at_least(num_train, 2, "num_train")
    num_eval = _at_least(num_eval, 1, "num_eval")
    rng = np.random.default_rng(seed)
    x_train, y_train = _beta_vae_points(represent, sizes_, num_train, batch_size, rng)
    x_eval, y_eval = _beta_vae_points(represent, sizes_, num_eval, batch_size, rng)
    if np.unique(y_train).size < 2:
        raise ConfigError(f"num_train={num_train} points drew a single factor; use more points")
    model = LogisticRegression(random_state=seed)  # dlib's default settings, 100 iterations included
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model.fit(x_train, y_train)
    return BetaVAEScore(
        train_accuracy=float(np.mean(model.predict(x_train) == y_train)),
        eval_accuracy=float(np.mean(model.predict(x_eval) == y_eval)),
    )


def _factor_vae_votes(
    represent: Represent,
    sizes: np.ndarray,
    n: int,
    batch_size: int,
    rng: np.random.Generator,
    global_variance: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    num_factors = sizes.size
    active_index = np.flatnonzero(active)
    votes = np.zeros((num_factors, global_variance.size), dtype=np.int64)
    step = _points_per_call(batch_size, 1)
    for start in range(0, n, step):
        p = min(step, n - start)
        k = rng.integers(0, num_factors, size=p)
        rows = rng.integers(0, sizes, size=(p, batch_size, num_factors))
        rows[np.arange(p), :, k] = rows[np.arange(p), 0, k][:, None]
        codes = encode(represent, rows.reshape(p * batch_size, num_factors)).reshape(p, batch_size, -1)
        local_variance = np.var(codes, axis=1, ddof=1)
        ratio = local_variance[:, active_index] / global_variance[active_index]
        np.add.at(votes, (k, active_index[np.argmin(ratio, axis=1)]), 1)
    return votes


def factor_vae_score(
    represent: Represent,
    sizes: tuple[int, ...],
    *,
    seed: int,
    batch_size: int = BATCH_SIZE,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_TEST,
    num_variance_estimate: int = NUM_TRAIN,
    prune_threshold: float = PRUNE_THRESHOLD,
) -> FactorVAEScore:
    """FactorVAE score: majority-vote accuracy of "which factor was held fixed" from the active code dimension of
    least variance / global variance in a batch sharing that factor.

    Defaults: dlib's configs (batch 64, 10,000 train, 5,000 eval, 10,000 points for the global variances, pruning
    dimensions of std < 0.05); dlib's function default and disent use a threshold of 0. Dimensions of zero global
    variance are never active (0/0 would vote). A vote is counted at its dimension's index among all D; dlib counts
    it at the index among the active dimensions, so its vote matrix's columns name the wrong dimensions once one
    before them is pruned (the accuracies are the same either way).
    """
    sizes_ = _sizes(sizes)
    batch_size = _at_least(batch_size, 2, "batch_size")
    num_train = _at_least(num_train, 1, "num_train")
    num_eval = _at_least(num_eval, 1, "num_eval")
    num_variance_estimate = _at_least(num_variance_estimate, 2, "num_variance_estimate")
    if not np.isfinite(prune_threshold) or prune_threshold < 0:
        raise ConfigError(f"prune_threshold must be finite and ≥ 0, got {prune_threshold!r}")
    rng = np.random.default_rng(seed)
    codes = encode(represent, sample_factors(tuple(sizes_), num_variance_estimate, rng))
    global_variance = np.var(codes, axis=0, ddof=1)
    active = (np.sqrt(global_variance) >= prune_threshold) & (global_variance > 0)
    if not active.any():
        return FactorVAEScore(train_accuracy=0.0, eval_accuracy=0.0, active_dims=0)
    train_votes = _factor_vae_votes(represent, sizes_, num_train, batch_size, rng, global_variance, active)
    classifier = np.argmax(train_votes, axis=0)
    dims = np.arange(train_votes.shape[1])
    eval_votes = _factor_vae_votes(represent, sizes_, num_eval, batch_size, rng, global_variance, active)
    return FactorVAEScore(
        train_accuracy=float(train_votes[classifier, dims].sum() / train_votes.sum()),
        eval_accuracy=float(eval_votes[classifier, dims].sum() / eval_votes.sum()),
        active_dims=int(active.sum()),
    )


# ------------------------------------------------------------------------------------------------------------ all


def disentanglement_scores(
    represent: Represent,
    sizes: tuple[int, ...],
    *,
    seed: int = 0,
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    progress: Callable[[str], None] | None = None,
) -> Scores:
    """Every score from an oracle ``represent`` (factor classes → codes) over factors of ``sizes`` classes.

    ``num_train`` uniform factor rows (encoded once) feed MIG and the SAP and DCI classifiers, ``num_test`` more
    their test accuracies; the β-VAE and FactorVAE scores draw ``num_train`` training and ``num_test`` eval points
    (FactorVAE's global variances from ``num_train`` rows). dlib uses 10,000 / 5,000, the defaults; smaller values
    (say 1,000 / 500) make it quick on a CPU, with noisier scores. ``progress(name)`` is called before each metric
    ("mig", "sap", "dci", "beta_vae", "factor_vae").
    """
    sizes_ = tuple(int(s) for s in _sizes(sizes))
    num_train = _at_least(num_train, 2, "num_train")
    num_test = _at_least(num_test, 1, "num_test")
    report = progress if progress is not None else (lambda name: None)
    rng = np.random.default_rng(seed)
    train_factors = sample_factors(sizes_, num_train, rng)
    test_factors = sample_factors(sizes_, num_test, rng)
    train_codes = encode(represent, train_factors)
    test_codes = encode(represent, test_factors)
    report("mig")
    mig_score = mig(train_codes, train_factors)
    report("sap")
    sap_score = sap(train_codes, train_factors, test_codes, test_factors, seed=seed)
    report("dci")
    dci_scores = dci(train_codes, train_factors, test_codes, test_factors, seed=seed)
    report("beta_vae")
    beta = beta_vae_score(represent, sizes_, seed=seed, num_train=num_train, num_eval=num_test)
    report("factor_vae")
    factor = factor_vae_score(
        represent, sizes_, seed=seed, num_train=num_train, num_eval=num_test, num_variance_estimate=num_train
    )
    return Scores(
        beta_vae=beta.eval_accuracy,
        factor_vae=factor.eval_accuracy,
        mig=mig_score,
        sap=sap_score,
        dci_disentanglement=dci_scores.disentanglement,
        dci_completeness=dci_scores.completeness,
        dci_informativeness=dci_scores.informativeness,
    )
