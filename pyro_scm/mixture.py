r"""A Gaussian mixture density fitted by expectation maximisation, batched over components.

The extrapolation diagnostics (:mod:`pyro_scm.extrapolation`) use it as a model of a node's
whitened training parents: a thin curved ridge of parents (x2 ≈ f(x1)) is a region of high
density that a few components follow, and parents just off it have a low density although
they are no more isolated than the training points in the tails.

With responsibilities $r_{nk} \propto w_k \mathcal{N}(x_n; \mu_k, \Sigma_k)$, one EM step sets

$$N_k = \sum_n r_{nk},\quad w_k = N_k / n,\quad \mu_k = \frac{1}{N_k} \sum_n r_{nk} x_n,\quad
\Sigma_k = \frac{1}{N_k} \sum_n r_{nk} (x_n - \mu_k)(x_n - \mu_k)^\top + \epsilon I,$$

and stops when the mean log-likelihood gains less than ``tolerance``; the ridge $\epsilon$
keeps duplicated (discrete) parents from a singular covariance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .errors import ArgumentError, NonFiniteError, NotFittedError, ShapeError

__all__ = ["GaussianMixture", "components_for"]

#: most components of a mixture fitted by :func:`components_for`.
MAX_COMPONENTS = 32


def components_for(n: int, d: int, per_parameter: int = 10) -> int:
    """The number of components for ``n`` points of ``d`` features: about ``per_parameter``
    points per free parameter of a full-covariance component, between 1 and
    :data:`MAX_COMPONENTS`."""
    parameters = 1 + d + d * (d + 1) // 2
    return max(1, min(MAX_COMPONENTS, n // (per_parameter * parameters)))


class GaussianMixture(nn.Module):
    """A mixture of K full-covariance Gaussians over ``d`` features.

    Buffers (saved and loaded with the model; loading resizes them to the saved shapes):
    ``logits`` ``(K,)`` the log-weights, ``loc`` ``(K, d)``, ``scale_tril`` ``(K, d, d)`` the
    Cholesky factors of the covariances. K = 0 until :meth:`fit`.

    Args:
        features: the number of features d.
    """

    def __init__(self, features: int = 1):
        super().__init__()
        self.register_buffer("logits", torch.zeros(0))
        self.register_buffer("loc", torch.zeros(0, features))
        self.register_buffer("scale_tril", torch.zeros(0, features, features))

    @property
    def features(self) -> int:
        """The number of features d."""
        return self.loc.shape[-1]

    @property
    def components(self) -> int:
        """The number of components K (0: not fitted)."""
        return self.logits.shape[0]

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        components: int,
        *,
        iterations: int = 200,
        tolerance: float = 1e-6,
        ridge: float = 1e-3,
        seed: int = 0,
    ) -> GaussianMixture:
        """Fit to points ``(n, d)`` by EM from ``components`` distinct random points (a CPU
        generator seeded by ``seed``: the same fit on every device). Returns ``self``."""
        if x.dim() != 2 or x.shape[-1] != self.features:
            raise ShapeError(f"points must have shape (n, {self.features}), got {tuple(x.shape)}")
        n, d = x.shape
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("points must be finite to fit a GaussianMixture")
        if not 1 <= components <= n:
            raise ArgumentError(f"components must lie in [1, {n}] for {n} points, got {components}")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        start = torch.randperm(n, generator=generator)[:components].to(x.device)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        self.loc = x[start].clone()
        self.logits = torch.full((components,), -math.log(components), dtype=x.dtype).to(x)
        spread = (x.var(0).mean() if n > 1 else x.new_tensor(0.0)).clamp_min(
            ridge
        ) * components ** (-2.0 / d)
        self.scale_tril = (spread.sqrt() * eye).expand(components, d, d).clone()
        previous = -math.inf
        for _ in range(iterations):
            joint = self._joint(x)  # (n, K)
            total = joint.logsumexp(-1)
            mean = float(total.mean())
            if mean - previous < tolerance * max(1.0, abs(mean)):
                break
            previous = mean
            r = (joint - total[:, None]).exp()
            count = r.sum(0) + 10 * torch.finfo(x.dtype).tiny  # (K,)
            self.logits = (count / n).log()
            self.loc = (r.T @ x) / count[:, None]
            centred = x[None] - self.loc[:, None]  # (K, n, d)
            weighted = centred * (r.T / count[:, None])[..., None]
            cov = weighted.transpose(1, 2) @ centred + ridge * eye
            self.scale_tril = torch.linalg.cholesky(cov)
        return self

    def _joint(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; μ_k, Σ_k) of points ``(n, d)`` -> ``(n, K)``."""
        d = x.shape[-1]
        centred = (x[None] - self.loc[:, None]).transpose(1, 2)  # (K, d, n)
        solved = torch.linalg.solve_triangular(self.scale_tril, centred, upper=False)
        mahalanobis = solved.square().sum(1)  # (K, n)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_norm = log_det + 0.5 * d * math.log(2 * math.pi)
        return (self.logits[:, None] - log_norm[:, None] - 0.5 * mahalanobis).T

    @torch.no_grad()
    def log_prob(self, x: Tensor, chunk: int = 4096) -> Tensor:
        """log density of points ``(*batch, d)`` -> ``(*batch,)``, in chunks of ``chunk`` rows.

        Raises:
            NotFittedError: :meth:`fit` has not run (and no fitted mixture was loaded).
            ShapeError: the last dimension of ``x`` is not d.
        """
        if self.components == 0:
            raise NotFittedError("GaussianMixture has no components: call fit first")
        if x.dim() == 0 or x.shape[-1] != self.features:
            raise ShapeError(
                f"points must have shape (*batch, {self.features}), got {tuple(x.shape)}"
            )
        flat = x.reshape(-1, self.features).to(self.loc)
        out = [self._joint(flat[i : i + chunk]).logsumexp(-1) for i in range(0, len(flat), chunk)]
        return torch.cat(out).reshape(x.shape[:-1]) if out else flat.new_zeros(x.shape[:-1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("logits", "loc", "scale_tril"):
            if prefix + name not in state_dict:  # saved without a mixture: load as unfitted
                empty = getattr(self, name)
                state_dict[prefix + name] = empty.new_zeros(0, *empty.shape[1:])
            setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
