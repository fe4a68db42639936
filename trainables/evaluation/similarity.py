"""Representation similarity: linear CKA and SVCCA between two representations of the same inputs.

Both take activations X (n, p1) and Y (n, p2), numpy arrays or torch tensors whose rows are the
same n data points (e.g. images, or image x spatial-position pairs of a conv layer) and whose
columns are neurons (channels); p1 and p2 may differ. Both compute in float64 on the tensors'
device, center every column first, and return a float in [0, 1].

- `linear_cka`: Kornblith, Norouzi, Lee, Hinton (2019), "Similarity of Neural Network
  Representations Revisited", ICML, Eq. 5 (linear kernel): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
  on centered X and Y, equal to HSIC(XX^T, YY^T) normalized. Invariant to orthogonal transforms
  and isotropic scaling of either side, not to arbitrary invertible linear maps.
- `svcca`: Raghu, Gilmer, Yosinski, Sohl-Dickstein (2017), "SVCCA: Singular Vector Canonical
  Correlation Analysis for Deep Learning Dynamics and Interpretability", NeurIPS: keep each side's
  top singular directions that explain `variance_kept` (99%) of its variance, then CCA between
  the two reduced representations; the similarity is the mean canonical correlation. CCA is
  invariant to invertible linear maps; the 99% truncation keeps that as long as the map does not
  change which directions explain 99% of the variance.

CCA of k directions fits k x k parameters: with n not much larger than the kept directions,
canonical correlations are biased towards 1 even for unrelated representations (use n >> p).
"""

import numpy as np
import torch

VARIANCE_KEPT = 0.99  # Raghu et al. 2017: the directions explaining 99% of the variance

Activations = torch.Tensor | np.ndarray


def centered(activations: Activations) -> torch.Tensor:
    """(n, p) activations as float64 with every column's mean subtracted."""
    matrix = torch.as_tensor(activations).to(torch.float64)
    if matrix.ndim != 2:
        raise ValueError(f"activations must be (data points, neurons), got shape {tuple(matrix.shape)}")
    return matrix - matrix.mean(dim=0, keepdim=True)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"the two representations must have the same data points (rows), "
                         f"got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("similarity needs at least 2 data points")


def linear_cka(x: Activations, y: Activations) -> float:
    """Linear CKA of X (n, p1) and Y (n, p2); 0 when either side is constant."""
    x, y = centered(x), centered(y)
    _check_pair(x, y)
    if x.shape[1] + y.shape[1] > 2 * x.shape[0]:
        # Wide representations: the n x n Gram matrices are the smaller products.
        gram_x, gram_y = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (gram_x * gram_y).sum(), gram_x.norm(), gram_y.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).square().sum(), (x.T @ x).norm(), (y.T @ y).norm()
    if norm_x == 0 or norm_y == 0:
        return 0.0
    return float((cross / (norm_x * norm_y)).clamp(0.0, 1.0))


def top_singular_directions(x: torch.Tensor, variance_kept: float = VARIANCE_KEPT) -> torch.Tensor:
    """An orthonormal basis (n, k) of centered X's top k left singular directions, k the fewest
    that explain `variance_kept` of its variance (all numerically non-zero ones for 1.0)."""
    left, singular, _ = torch.linalg.svd(x, full_matrices=False)
    if len(singular) == 0 or singular[0] == 0:
        return left[:, :0]
    # Directions at rounding level are noise (dead channels, n < p): never kept.
    rank = int((singular > singular[0] * max(x.shape) * torch.finfo(x.dtype).eps).sum())
    energy = singular[:rank].square()
    explained = energy.cumsum(0) / energy.sum()
    keep = int(torch.searchsorted(explained, torch.tensor(variance_kept, dtype=explained.dtype))) + 1
    return left[:, :min(keep, rank)]


def canonical_correlations(x: Activations, y: Activations,
                           variance_kept: float = VARIANCE_KEPT) -> torch.Tensor:
    """SVCCA's canonical correlations (min(kx, ky),), largest first: the cosines of the principal
    angles between the spans of the two sides' top singular directions."""
    x, y = centered(x), centered(y)
    _check_pair(x, y)
    if not 0 < variance_kept <= 1:
        raise ValueError(f"variance_kept must be in (0, 1], got {variance_kept}")
    basis_x, basis_y = top_singular_directions(x, variance_kept), top_singular_directions(y, variance_kept)
    return torch.linalg.svdvals(basis_x.T @ basis_y).clamp(0.0, 1.0)


def svcca(x: Activations, y: Activations, variance_kept: float = VARIANCE_KEPT) -> float:
    """SVCCA similarity of X (n, p1) and Y (n, p2): the mean canonical correlation after keeping
    each side's directions that explain `variance_kept` of its variance; 0 when either is constant."""
    correlations = canonical_correlations(x, y, variance_kept)
    return float(correlations.mean()) if len(correlations) else 0.0


MEASURES = {"cka": linear_cka, "svcca": svcca}  # metric-name part -> function
