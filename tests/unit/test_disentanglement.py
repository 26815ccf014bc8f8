"""The disentanglement metrics on constructed representations (the factors themselves, permuted and rescaled, pure
noise, one code carrying two factors), exact small references, bad input, reproducibility, and agreement with
disent's implementation when it is installed."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from vae.core.errors import ConfigError
from vae.metrics.disentanglement import (
    DCI,
    Scores,
    _factor_vae_votes,
    beta_vae_score,
    dci,
    dci_from_importance,
    discretize,
    disentanglement_scores,
    factor_vae_score,
    mig,
    mutual_information,
    sample_factors,
    sap,
    sap_matrix,
)

SIZES = (3, 6, 10, 8)
SMALL = (2, 3, 4)  # for the gradient-boosted trees (100 stages × classes trees per factor)
PERMUTATION = [3, 5, 0, 2, 4, 1]
SCALE = np.array([2.5, 0.5, 3.0, 1.0, 1.5, 0.75])
SHIFT = np.array([-7.0, 1.0, 2.0, 3.0, -4.0, 0.5])


def grid(sizes: tuple[int, ...]) -> np.ndarray:
    """Every combination of factor classes once: factors exactly independent in the sample."""
    return np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))


def oracle(sizes: tuple[int, ...], kind: str, *, seed: int = 0):
    """An encoder of factor classes: codes = the factors exactly, or + 0.01 noise, or pure noise (independent of
    the factors), or "mixed": code 0 carries factors 0 and 1 (f0·size1 + f1), code 1 is noise, codes 2.. are the
    other factors (+ 0.01 noise). The noise is fresh on every call, from a generator seeded once: a new oracle
    replays the same codes for the same calls."""
    rng = np.random.default_rng(seed)

    def represent(factors: np.ndarray) -> np.ndarray:
        noise = rng.normal(size=factors.shape)
        codes = factors.astype(np.float64)
        if kind == "exact":
            return codes
        if kind == "factors":
            return codes + 0.01 * noise
        if kind == "noise":
            return noise
        assert kind == "mixed"
        mixed = codes + 0.01 * noise
        mixed[:, 0] = factors[:, 0] * sizes[1] + factors[:, 1]
        mixed[:, 1] = noise[:, 1]
        return mixed

    return represent


def with_noise_dims(codes: np.ndarray, seed: int) -> np.ndarray:
    """codes with two pure-noise dimensions appended (so a permutation mixes informative and useless codes)."""
    return np.hstack([codes, np.random.default_rng(seed).normal(size=(codes.shape[0], 2))])


@pytest.fixture(scope="module")
def data():
    """1,000 train and 500 test rows of SIZES, and the codes of each oracle (plus two noise dims)."""
    rng = np.random.default_rng(1)
    train, test = sample_factors(SIZES, 1000, rng), sample_factors(SIZES, 500, rng)
    codes = {
        kind: (with_noise_dims(oracle(SIZES, kind)(train), 2), with_noise_dims(oracle(SIZES, kind)(test), 3))
        for kind in ("factors", "noise", "mixed")
    }
    return train, test, codes


@pytest.fixture(scope="module")
def small_data():
    """600 train and 300 test rows of SMALL for DCI."""
    rng = np.random.default_rng(4)
    train, test = sample_factors(SMALL, 600, rng), sample_factors(SMALL, 300, rng)
    codes = {
        kind: (with_noise_dims(oracle(SMALL, kind)(train), 5), with_noise_dims(oracle(SMALL, kind)(test), 6))
        for kind in ("factors", "noise", "mixed")
    }
    return train, test, codes


@pytest.fixture(scope="module")
def small_dci(small_data):
    train, test, codes = small_data
    return {kind: dci(c_train, train, c_test, test, seed=0) for kind, (c_train, c_test) in codes.items()}


def entropy(*columns: np.ndarray) -> float:
    """Joint entropy in nats of discrete columns, counted directly."""
    _, counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


# ------------------------------------------------------------------------------------------------------------ MIG


def test_mig_of_the_exact_factors_on_a_full_grid_is_one():
    # 20 bins ≥ every factor's class count: each class gets its own bin, and on a full grid the other factors carry
    # exactly 0 information, so every gap is the factor's whole entropy.
    factors = grid(SIZES)
    assert mig(factors.astype(float), factors) == pytest.approx(1.0, abs=1e-12)


def test_mig_small_cases_by_hand():
    f0 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    f1 = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    factors = np.stack([f0, f1], axis=1)
    # Codes = the factors: I(code_k; f_k) = ln 2, I(code_j; f_k) = 0 → gaps ln 2 / ln 2 = 1.
    assert mig(factors.astype(float), factors, bins=2) == pytest.approx(1.0, abs=1e-12)
    # Both codes copy f0: f0's gap is 0, f1's is 0 → 0.
    assert mig(np.stack([f0, f0], axis=1).astype(float), factors, bins=2) == pytest.approx(0.0, abs=1e-12)
    # One code dimension (D = 1): the gap is the largest information, 1 for f0 and 0 for f1 → 0.5.
    assert mig(f0[:, None].astype(float), factors, bins=2) == pytest.approx(0.5, abs=1e-12)


def test_mig_matches_an_explicit_entropy_computation():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, [3, 4], size=(200, 2))
    codes = np.stack([factors[:, 0] + rng.normal(0, 0.6, 200), factors[:, 1] * 0.3 + rng.normal(0, 0.4, 200)], 1)
    codes = np.hstack([codes, rng.normal(size=(200, 1))])
    bins = 5
    # The discretization written out: equal-width bins over each code's range, the maximum in the last bin.
    low, high = codes.min(0), codes.max(0)
    disc = np.minimum(np.floor((codes - low) / (high - low) * bins), bins - 1).astype(int) + 1
    np.testing.assert_array_equal(discretize(codes, bins=bins), disc)
    m = np.array([[entropy(disc[:, i]) + entropy(factors[:, k]) - entropy(disc[:, i], factors[:, k]) for k in (0, 1)]
                  for i in range(3)])  # fmt: skip
    np.testing.assert_allclose(mutual_information(codes, factors, bins=bins), m, rtol=0, atol=1e-12)
    top = np.sort(m, axis=0)[::-1]
    expected = np.mean((top[0] - top[1]) / [entropy(factors[:, 0]), entropy(factors[:, 1])])
    assert mig(codes, factors, bins=bins) == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.6  # a middling case, not a degenerate 0 or 1


def test_mig_scores(data):
    train, _, codes = data
    factors = mig(codes["factors"][0], train)
    assert factors >= 0.95  # 1 less the estimator's bias on 1,000 points
    assert mig(codes["factors"][0][:, PERMUTATION], train) == factors
    assert mig(codes["factors"][0] * SCALE + SHIFT, train) == factors
    assert mig(codes["noise"][0], train) <= 0.02


def test_mig_does_not_penalise_one_code_carrying_two_factors(data):
    # MIG rewards each factor having one code of its own (compactness): code 0 = f0·6 + f1 has all of f0 and, with
    # 20 bins for its 18 values, all of f1, so the mixed code scores as the factors do (within the estimator's bias
    # of the pure-noise code 1). A second code for a factor is what MIG penalises: that factor's gap goes to 0.
    train, _, codes = data
    assert mig(codes["mixed"][0], train) == pytest.approx(mig(codes["factors"][0], train), abs=0.03)
    duplicated = np.hstack([codes["factors"][0], codes["factors"][0][:, 1:2]])
    assert 0.70 <= mig(duplicated, train) <= 0.76  # factor 1's gap ~0: (1 + 0 + 1 + 1) / 4 less the bias


# ------------------------------------------------------------------------------------------------------------ SAP


def test_sap_scores(data):
    train, test, codes = data
    matrix = sap_matrix(*codes["factors"][:1], train, codes["factors"][1], test, seed=0)
    # A linear SVM on one code cannot separate 6, 8 or 10 ordered classes (one-vs-rest lines over a scalar), and an
    # unrelated code still scores about chance, so SAP on discrete factors stays well below 1 even for the factors
    # themselves: the 3-class factor is read perfectly, the others partly.
    assert matrix[0, 0] == 1.0
    assert np.all(np.argmax(matrix, axis=0) == np.arange(4))
    score = sap(codes["factors"][0], train, codes["factors"][1], test, seed=0)
    assert score == pytest.approx(np.mean(np.sort(matrix, 0)[-1] - np.sort(matrix, 0)[-2]), abs=1e-15)
    assert score >= 0.3
    assert sap(codes["noise"][0], train, codes["noise"][1], test, seed=0) <= 0.05
    assert sap(codes["mixed"][0], train, codes["mixed"][1], test, seed=0) < score
    permuted = sap(codes["factors"][0][:, PERMUTATION], train, codes["factors"][1][:, PERMUTATION], test, seed=0)
    assert permuted == score
    # Not exactly scale-invariant: C = 0.01 is strong and liblinear regularises the intercept too.
    # Not invariant to rescaling or shifting a code, as in dlib: C = 0.01 is strong and liblinear regularises the
    # intercept too, so halving the codes loses about half the score.
    halved = sap(codes["factors"][0] * 0.5, train, codes["factors"][1] * 0.5, test, seed=0)
    assert halved < score - 0.1


def test_sap_gives_a_constant_code_zero():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 2, size=(200, 1))
    codes = np.hstack([factors + 0.01 * rng.normal(size=(200, 1)), np.full((200, 1), 4.0)])
    matrix = sap_matrix(codes, factors, codes, factors, seed=0)
    assert matrix[0, 0] == 1.0 and matrix[1, 0] == 0.0
    assert sap(codes, factors, codes, factors, seed=0) == 1.0


# ------------------------------------------------------------------------------------------------------------ DCI


def test_dci_from_importance_by_hand():
    assert dci_from_importance(np.eye(3)) == pytest.approx((1.0, 1.0), abs=1e-9)
    assert dci_from_importance(np.ones((3, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert dci_from_importance(np.zeros((2, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)  # uniform weights
    # One code explains both factors: disentanglement 0 (the code is split), completeness 1 (each factor has one code).
    assert dci_from_importance(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx((0.0, 1.0), abs=1e-9)

    # R = [[3, 1], [0, 2]]: code 0 P = (3/4, 1/4), weight 4/6; code 1 P = (0, 1), weight 2/6;
    # factor 0 P̃ = (1, 0), weight 3/6; factor 1 P̃ = (1/3, 2/3), weight 3/6.
    def h(*p: float) -> float:
        return -sum(x * math.log2(x) for x in p)

    d = (1 - h(3 / 4, 1 / 4)) * 4 / 6 + 1 * 2 / 6
    c = 1 * 3 / 6 + (1 - h(1 / 3, 2 / 3)) * 3 / 6
    assert dci_from_importance(np.array([[3.0, 1.0], [0.0, 2.0]])) == pytest.approx((d, c), abs=1e-9)
    assert (d, c) == pytest.approx((0.459148, 0.540852), abs=1e-6)


def test_dci_from_importance_with_one_factor_or_one_code():
    # Base-1 entropies are taken as 0: one factor makes each code's disentanglement 1, one code each factor's
    # completeness 1.
    d, c = dci_from_importance(np.array([[1.0], [1.0]]))
    assert d == 1.0 and c == pytest.approx(0.0, abs=1e-9)
    d, c = dci_from_importance(np.array([[1.0, 1.0]]))
    assert d == pytest.approx(0.0, abs=1e-9) and c == 1.0


def test_dci_scores(small_data, small_dci):
    factors, noise, mixed = small_dci["factors"], small_dci["noise"], small_dci["mixed"]
    assert isinstance(factors, DCI)
    assert factors.disentanglement >= 0.99 and factors.completeness >= 0.99
    assert factors.informativeness == 1.0 and factors.informativeness_train == 1.0
    assert noise.disentanglement <= 0.1 and noise.completeness <= 0.1
    assert noise.informativeness <= 0.5  # chance: mean(1/2, 1/3, 1/4) = 0.36
    assert mixed.disentanglement <= 0.85  # code 0 splits its importance between factors 0 and 1
    assert mixed.completeness >= 0.99 and mixed.informativeness == 1.0


def test_dci_is_unchanged_by_permuting_and_rescaling_codes(small_data, small_dci):
    train, test, codes = small_data
    c_train, c_test = codes["factors"]
    reference = small_dci["factors"]
    permuted = dci(c_train[:, [2, 4, 0, 3, 1]], train, c_test[:, [2, 4, 0, 3, 1]], test, seed=0)
    rescaled = dci(c_train * SCALE[:5] + SHIFT[:5], train, c_test * SCALE[:5] + SHIFT[:5], test, seed=0)
    for other in (permuted, rescaled):
        assert other.informativeness == reference.informativeness
        assert other.disentanglement == pytest.approx(reference.disentanglement, abs=1e-12)
        assert other.completeness == pytest.approx(reference.completeness, abs=1e-12)


# ----------------------------------------------------------------------------------------- β-VAE and FactorVAE


def test_beta_vae_score():
    kwargs = {"seed": 0, "num_train": 1000, "num_eval": 500}
    exact = beta_vae_score(oracle(SIZES, "exact"), SIZES, **kwargs)
    assert exact.train_accuracy >= 0.98 and exact.eval_accuracy >= 0.98
    noise = beta_vae_score(oracle(SIZES, "noise"), SIZES, **kwargs)
    assert noise.eval_accuracy <= 0.35  # chance: 1/4
    shuffled = lambda f: oracle(SIZES, "exact")(f)[:, [2, 0, 3, 1]] * 2.0 - 1.0  # noqa: E731
    # The features |code(b1) − code(b2)| ignore the shift; the permutation and the ×2 leave the logistic regression
    # (L2-regularised, so not exactly scale-free) as accurate.
    assert beta_vae_score(shuffled, SIZES, **kwargs).eval_accuracy == pytest.approx(exact.eval_accuracy, abs=0.01)


def test_factor_vae_score():
    kwargs = {"seed": 0, "num_train": 1000, "num_eval": 500, "num_variance_estimate": 1000}
    exact = factor_vae_score(oracle(SIZES, "exact"), SIZES, **kwargs)
    assert exact.train_accuracy == 1.0 and exact.eval_accuracy == 1.0 and exact.active_dims == 4
    shuffled = lambda f: oracle(SIZES, "exact")(f)[:, [2, 0, 3, 1]] * 2.0 - 1.0  # noqa: E731
    assert factor_vae_score(shuffled, SIZES, **kwargs) == exact
    noise = factor_vae_score(oracle(SIZES, "noise"), SIZES, **kwargs)
    assert noise.eval_accuracy <= 0.45  # 4 noise dims voted by majority: about chance (1/4)
    mixed = factor_vae_score(oracle(SIZES, "mixed"), SIZES, **kwargs)
    assert mixed.eval_accuracy <= 0.85  # factor 1 has no code of its own: its quarter of the votes is lost


def test_factor_vae_prunes_and_votes_for_global_dimensions():
    constant_first = lambda f: np.hstack([np.full((f.shape[0], 1), 3.0), f.astype(float)])  # noqa: E731
    kwargs = {"seed": 0, "num_train": 200, "num_eval": 100, "num_variance_estimate": 500}
    score = factor_vae_score(constant_first, SIZES, **kwargs)
    assert score.active_dims == 4 and score.eval_accuracy == 1.0
    sizes = np.array(SIZES)
    codes = constant_first(sample_factors(SIZES, 500, np.random.default_rng(0)))
    variance = np.var(codes, axis=0, ddof=1)
    votes = _factor_vae_votes(constant_first, sizes, 200, 64, np.random.default_rng(1), variance, variance > 0)
    # Factor k's votes land on dimension k + 1, its index among all five (dlib would count them at k).
    assert votes[:, 0].sum() == 0 and votes.sum() == 200
    np.testing.assert_array_equal(np.argmax(votes, axis=1), [1, 2, 3, 4])
    scaled_down = lambda f: 0.01 * f.astype(float)  # noqa: E731  std < 0.05 everywhere
    none = factor_vae_score(scaled_down, SIZES, **kwargs)
    assert (none.train_accuracy, none.eval_accuracy, none.active_dims) == (0.0, 0.0, 0)
    assert factor_vae_score(scaled_down, SIZES, **kwargs, prune_threshold=0.0).eval_accuracy == 1.0


# ---------------------------------------------------------------------------------------------------- everything


def test_disentanglement_scores_are_reproducible_and_report_progress():
    names: list[str] = []
    kwargs = {"seed": 3, "num_train": 400, "num_test": 200}
    first = disentanglement_scores(oracle(SMALL, "factors"), SMALL, progress=names.append, **kwargs)
    assert names == ["mig", "sap", "dci", "beta_vae", "factor_vae"]
    assert isinstance(first, Scores)
    assert list(first.as_dict()) == [
        "beta_vae", "factor_vae", "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness"
    ]  # fmt: skip
    assert all(type(value) is float for value in first.as_dict().values())
    assert disentanglement_scores(oracle(SMALL, "factors"), SMALL, **kwargs) == first
    values = first.as_dict()
    assert min(values["beta_vae"], values["factor_vae"], values["dci_disentanglement"], values["mig"]) >= 0.9
    assert values["dci_informativeness"] == 1.0 and values["sap"] >= 0.3


# ------------------------------------------------------------------------------------------------------ bad input

F = np.array([[0, 1], [1, 0], [0, 0], [1, 1]])
C = np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0.9], [0.2, 0.4]])
exact_small = oracle(SMALL, "exact")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mig(C[:, 0], F), "codes must be a 2-D"),
        (lambda: mig(C, F.astype(float)), "factors must be integer class indices"),
        (lambda: mig(C[:3], F), "codes has 3 rows but factors has 4"),
        (lambda: mig(C, np.array([[0, 1], [0, 0], [0, 1], [0, 0]])), "factor 0 has a single class"),
        (lambda: mig(C[:1], F[:1]), "at least 2 samples"),
        (lambda: mig(np.where(C > 0.8, np.nan, C), F), "NaN or infinite"),
        (lambda: mig(C, F, bins=0), "bins must be an int ≥ 1"),
        (lambda: mig(C.astype(str), F), "codes must be numbers"),
        (lambda: sap(C, F, C[:, :1], F, seed=0), "test_codes has 1 dims but train_codes has 2"),
        (lambda: dci(C, F, C, F[:, :1], seed=0), "test_factors has 1 factors but train_factors has 2"),
        (lambda: dci(C, F, C[:2], F, seed=0), "test_codes has 2 rows but test_factors has 4"),
        (lambda: dci_from_importance(-np.eye(2)), "finite and non-negative"),
        (lambda: dci_from_importance(np.ones(3)), "2-D"),
        (lambda: beta_vae_score(exact_small, (2, 1), seed=0), "at least 2 classes"),
        (lambda: beta_vae_score(exact_small, (2.0, 3.0), seed=0), "tuple of ints"),
        (lambda: beta_vae_score(lambda f: f[:, :1].T, SMALL, seed=0, num_train=4), "represent returned shape"),
        (lambda: beta_vae_score(exact_small, SMALL, seed=0, batch_size=0), "batch_size must be an int ≥ 1"),
        (lambda: factor_vae_score(exact_small, SMALL, seed=0, batch_size=1), "batch_size must be an int ≥ 2"),
        (lambda: factor_vae_score(exact_small, SMALL, seed=0, prune_threshold=-1.0), "prune_threshold"),
        (lambda: disentanglement_scores(exact_small, SMALL, num_train=1), "num_train must be an int ≥ 2"),
    ],
)
def test_bad_input_raises_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


# ------------------------------------------------------------------------------- disent (optional cross-check)
# pip install disent==0.8.0 (adds lightning; disent ≥ 0.9 needs Python ≥ 3.12). The functions take (dims, N).


@pytest.fixture(scope="module")
def cross_check_data():
    rng = np.random.default_rng(7)
    train, test = sample_factors(SMALL, 800, rng), sample_factors(SMALL, 400, rng)
    mix = rng.normal(size=(3, 5))

    def encode(factors: np.ndarray) -> np.ndarray:
        return factors @ mix + 0.5 * rng.normal(size=(factors.shape[0], 5))

    return encode(train), train, encode(test), test


def test_mig_agrees_with_disent(cross_check_data):
    disent_mig = pytest.importorskip("disent.metrics._mig")
    codes, factors, _, _ = cross_check_data
    theirs = disent_mig._compute_mig(codes.T, factors.T)["mig.discrete_score"]
    assert mig(codes, factors) == pytest.approx(theirs, abs=1e-12)


def test_sap_agrees_with_disent(cross_check_data):
    disent_sap = pytest.importorskip("disent.metrics._sap")
    codes, factors, test_codes, test_factors = cross_check_data
    theirs = disent_sap._compute_sap(codes.T, factors.T, test_codes.T, test_factors.T, continuous_factors=False)
    assert sap(codes, factors, test_codes, test_factors, seed=0) == pytest.approx(theirs["sap.score"], abs=1e-12)


def test_dci_agrees_with_disent(cross_check_data, monkeypatch):
    disent_dci = pytest.importorskip("disent.metrics._dci")
    import sklearn.ensemble

    codes, factors, test_codes, test_factors = cross_check_data
    # disent builds GradientBoostingClassifier() with no random_state: give it ours so the trees are the same.
    seeded = functools.partial(sklearn.ensemble.GradientBoostingClassifier, random_state=0)
    monkeypatch.setattr(sklearn.ensemble, "GradientBoostingClassifier", seeded)
    theirs = disent_dci._compute_dci(codes.T, factors.T, test_codes.T, test_factors.T)
    ours = dci(codes, factors, test_codes, test_factors, seed=0)
    assert ours.disentanglement == pytest.approx(theirs["dci.disentanglement"], abs=1e-12)
    assert ours.completeness == pytest.approx(theirs["dci.completeness"], abs=1e-12)
    assert ours.informativeness == theirs["dci.informativeness_test"]
    assert ours.informativeness_train == theirs["dci.informativeness_train"]


def test_factor_vae_score_agrees_with_disent():
    """disent's FactorVAE score samples with numpy's global generator, so the two agree in distribution, not bit for
    bit: on codes where the majority vote is right about 71 % of the time, the two eval accuracies (2,000 points
    each, standard error about 0.01) agree within 0.04. Both without pruning (disent prunes nothing)."""
    disent_factor_vae = pytest.importorskip("disent.metrics._factor_vae")
    sizes = (3, 6, 10, 8)
    rng = np.random.default_rng(0)
    # Factor 1 shares code 0 with factor 0; noise makes the votes imperfect.
    mixing = np.array([[1.0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0], [0, 0, 1.0, 0, 0], [0, 0, 0, 0.3, 1.0]])

    def represent(factors: np.ndarray) -> np.ndarray:
        return factors.astype(float) @ mixing + 1.5 * rng.normal(size=(len(factors), 5))

    class Factors:  # what disent's metric reads of a ground-truth dataset: observations are the factors here
        num_factors = len(sizes)

        def sample_factors(self, n: int) -> np.ndarray:
            return np.stack([np.random.randint(size, size=n) for size in sizes], axis=1)

    class Dataset:
        gt_data = Factors()

        def dataset_sample_batch(self, n: int, mode: str) -> np.ndarray:
            return self.gt_data.sample_factors(n)

        def dataset_batch_from_factors(self, factors: np.ndarray, mode: str) -> np.ndarray:
            return factors

    np.random.seed(0)
    metric = disent_factor_vae.metric_factor_vae
    compute = getattr(metric, "unwrap", None) or getattr(metric, "__wrapped__", metric)
    counts = {"num_train": 3000, "num_eval": 2000, "num_variance_estimate": 5000}
    theirs = compute(Dataset(), represent, **counts)
    ours = factor_vae_score(represent, sizes, seed=0, prune_threshold=0.0, **counts)
    assert 0.6 < ours.eval_accuracy < 0.8  # a case where the score is neither 0 nor 1
    assert ours.eval_accuracy == pytest.approx(theirs["factor_vae.eval_accuracy"], abs=0.04)
    assert ours.active_dims == theirs["factor_vae.num_active_dims"] == 5
