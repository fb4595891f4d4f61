"""Synthetic catalogue vectors for the index tests and bench/index.py.

Uniform random unit vectors in 576 dimensions are no model of embeddings: every point is
nearly equidistant from every other, so no approximate index beats a scan. Text embeddings
concentrate near a low-dimensional subspace; these vectors do too:

    x = normalise(z W + σ ε),  z ~ N(0, I_latent),  W ~ N(0, 1/latent) of shape latent × dim,
    ε ~ N(0, I_dim / dim)

Queries drawn the same way share W, as user and item vectors share a model.
"""

from __future__ import annotations

import numpy as np

# Latent dimensions and noise of the default synthetic catalogue (recall is lower, and the
# test stricter, as `latent` grows: 32 -> 0.999, 64 -> 0.989 recall@10 at efSearch 128).
LATENT = 32
NOISE = 0.3


class LatentVectors:
    """A seeded generator of unit vectors of one latent structure (catalogue and queries)."""

    def __init__(self, dim: int, seed: int, latent: int = LATENT, noise: float = NOISE) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim, self.noise = dim, noise
        self.mixing = self.rng.standard_normal((latent, dim)) / np.sqrt(latent)

    def draw(self, n: int) -> np.ndarray:
        """(n, dim) float32 unit vectors."""
        z = self.rng.standard_normal((n, self.mixing.shape[0])) @ self.mixing
        x = z + self.noise * self.rng.standard_normal((n, self.dim)) / np.sqrt(self.dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
