"""Closed-form ridge regression on standardised features, solved once by SVD for a whole grid of strengths.

The shared core of the two training-free linear read-outs: the online probe during pretraining
(`pretrain/online_probe.py`: per label, λ by GCV) and the report's "is the finding still in these tokens?" probe
(`report/probe.py`: all labels at once, λ by validation F1). Each caller keeps its own targets and its own rule
for choosing λ; this module standardises with the training mean / std, takes the SVD once, and gives the weights
(and the GCV score) for any λ on centred targets.
"""
from __future__ import annotations

import numpy as np


class RidgeSVD:
    """Standardise `x_train` with its own mean / std and take its thin SVD; then `weights(uty, lam)` for any λ.

    Constant features keep sd 1 (so they standardise to 0 and drop out of the fit). Which features count as
    constant is the caller's: `sd < min_sd` (absolute, the default), or with `relative=True`
    `not sd > min_sd * max(sd)` (relative to the largest sd, for features of any scale).
    The arithmetic follows the input dtype; pass float64 for float64 numbers."""

    def __init__(self, x_train: np.ndarray, *, min_sd: float = 1e-8, relative: bool = False):
        self.mu, sd = x_train.mean(0), x_train.std(0)
        if relative:
            sd = np.where(sd > min_sd * max(float(sd.max()), 1e-30), sd, 1.0)
        else:
            sd[sd < min_sd] = 1.0
        self.sd = sd
        self.u, self.s, self.vt = np.linalg.svd(self.transform(x_train), full_matrices=False)
        self.s2 = self.s ** 2

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise with the training mean / std."""
        return (np.asarray(x) - self.mu) / self.sd

    @property
    def mean_s2(self):
        """The mean squared singular value: the scale the λ grids are relative to."""
        return self.s2.mean()

    def project(self, t_centred: np.ndarray) -> np.ndarray:
        """Uᵀt for centred targets t ([n] or [n, L]): all any λ's solution needs of them."""
        return self.u.T @ t_centred

    def weights(self, uty: np.ndarray, lam: float) -> np.ndarray:
        """Ridge weights [d] or [d, L] for strength λ, from `project`'s Uᵀt: V diag(s / (s² + λ)) Uᵀt."""
        f = self.s / (self.s2 + lam)
        return self.vt.T @ ((f[:, None] if uty.ndim == 2 else f) * uty)

    def gcv(self, t_centred: np.ndarray, uty: np.ndarray, lam: float) -> float:
        """Generalised cross-validation score n‖t − t̂‖² / (n − tr H)² for one centred target [n] at λ
        (the residual from the SVD, without forming t̂)."""
        f = self.s2 / (self.s2 + lam)
        n = len(t_centred)
        resid = np.sum(t_centred ** 2) - np.sum((2 * f - f ** 2) * uty ** 2)
        return n * resid / max(n - f.sum(), 1e-9) ** 2
