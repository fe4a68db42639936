"""Linear CKA and SVCCA against references written here from the papers' definitions (numpy),
and the invariances each paper proves."""

import numpy as np
import pytest
import torch

from trainables.evaluation.similarity import canonical_correlations, linear_cka, svcca


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019, Eq. 3-4: HSIC(K, L) = tr(K H L H) / (n-1)^2 with linear kernels
    K = X X^T, L = Y Y^T and the centering matrix H; CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    gram_x, gram_y = x @ x.T, y @ y.T

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(gram_x, gram_y) / np.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


def reference_svcca(x: np.ndarray, y: np.ndarray, variance_kept: float = 0.99) -> float:
    """Raghu et al. 2017, Section 2: SVD of each centered representation, projected onto the fewest
    singular directions explaining 99% of the variance; then CCA by its textbook definition, the
    singular values of Sxx^-1/2 Sxy Syy^-1/2; the similarity is their mean."""
    def reduce(a: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=0)
        u, s, _ = np.linalg.svd(a, full_matrices=False)
        fraction = np.cumsum(s**2) / np.sum(s**2)
        k = next(i + 1 for i, f in enumerate(fraction) if f >= variance_kept - 1e-12)
        return u[:, :k] * s[:k]

    def inverse_sqrt(c: np.ndarray) -> np.ndarray:
        values, vectors = np.linalg.eigh(c)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    a, b = reduce(x), reduce(y)
    n = len(a)
    sxx, syy, sxy = a.T @ a / (n - 1), b.T @ b / (n - 1), a.T @ b / (n - 1)
    rho = np.linalg.svd(inverse_sqrt(sxx) @ sxy @ inverse_sqrt(syy), compute_uv=False)
    return float(np.mean(rho))


def related_pair(rng: np.random.Generator, n: int = 500, p: int = 12, q: int = 9,
                 noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two representations sharing a 5-dimensional signal, with different widths and offsets."""
    signal = rng.normal(size=(n, 5))
    x = signal @ rng.normal(size=(5, p)) + noise * rng.normal(size=(n, p)) + 3.0
    y = np.tanh(signal @ rng.normal(size=(5, q))) + noise * rng.normal(size=(n, q)) - 1.0
    return x, y


def orthogonal(rng: np.random.Generator, p: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_matches_the_hsic_definition(seed: int) -> None:
    x, y = related_pair(np.random.default_rng(seed))
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), abs=1e-10)
    wide_x, wide_y = x[:8], y[:8]  # more neurons than data points: the Gram-matrix path
    assert linear_cka(wide_x, wide_y) == pytest.approx(reference_cka(wide_x, wide_y), abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_svcca_matches_the_papers_definition(seed: int) -> None:
    x, y = related_pair(np.random.default_rng(seed), noise=0.3)
    assert svcca(x, y) == pytest.approx(reference_svcca(x, y), abs=1e-8)
    assert svcca(x, y, variance_kept=0.9) == pytest.approx(reference_svcca(x, y, 0.9), abs=1e-8)
    assert 0.2 < svcca(x, y) < 1.0


def test_torch_and_float32_inputs_give_the_float64_numpy_result() -> None:
    x, y = related_pair(np.random.default_rng(3))
    x32, y32 = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    assert linear_cka(x32, y32) == pytest.approx(linear_cka(x, y), abs=1e-6)
    assert svcca(x32, y32) == pytest.approx(svcca(x, y), abs=1e-5)


def test_cka_of_a_representation_with_itself_is_one() -> None:
    x, _ = related_pair(np.random.default_rng(4))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling_not_to_any_linear_map() -> None:
    rng = np.random.default_rng(5)
    x, y = related_pair(rng)
    base = linear_cka(x, y)
    assert linear_cka(7.5 * x @ orthogonal(rng, x.shape[1]), y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, 0.01 * y @ orthogonal(rng, y.shape[1]) + 4.0) == pytest.approx(base, abs=1e-10)
    stretched = x * np.geomspace(0.01, 10, x.shape[1])  # invertible but anisotropic
    assert abs(linear_cka(stretched, y) - base) > 0.01


def test_svcca_is_invariant_to_invertible_linear_maps() -> None:
    rng = np.random.default_rng(6)
    x, y = related_pair(rng, noise=0.3)
    mixing = rng.normal(size=(x.shape[1], x.shape[1]))  # invertible, far from orthogonal
    assert np.linalg.cond(mixing) < 1e3
    # Keeping every direction, CCA's invariance is exact for any invertible map.
    assert svcca(x @ mixing, y, variance_kept=1.0) == pytest.approx(svcca(x, y, variance_kept=1.0), abs=1e-8)
    # With the 99% truncation: exactly low-rank representations keep the same directions.
    low_rank_x, low_rank_y = x[:, :4] @ rng.normal(size=(4, 20)), y[:, :3] @ rng.normal(size=(3, 16))
    well_conditioned = orthogonal(rng, 20) * rng.uniform(0.5, 2.0, size=20)
    assert svcca(low_rank_x @ well_conditioned, low_rank_y) == pytest.approx(svcca(low_rank_x, low_rank_y),
                                                                            abs=1e-8)
    assert len(canonical_correlations(low_rank_x, low_rank_y)) == 3


def test_independent_random_features_are_near_zero_for_large_samples() -> None:
    rng = np.random.default_rng(7)
    small = [(linear_cka(a, b), svcca(a, b)) for a, b in
             [(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)))]][0]
    x, y = rng.normal(size=(40_000, 8)), rng.normal(size=(40_000, 8))
    assert linear_cka(x, y) < 0.005 and svcca(x, y) < 0.02
    assert linear_cka(x, y) < small[0] and svcca(x, y) < small[1]  # the small-sample bias shrinks


def test_constant_and_mismatched_inputs() -> None:
    x = np.random.default_rng(8).normal(size=(50, 4))
    assert linear_cka(x, np.ones((50, 3))) == 0.0 and svcca(x, np.ones((50, 3))) == 0.0
    with pytest.raises(ValueError, match="same data points"):
        linear_cka(x, x[:40])
    with pytest.raises(ValueError, match="variance_kept"):
        svcca(x, x, variance_kept=0.0)
