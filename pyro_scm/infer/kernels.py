"""Batched gradient kernels for ``pyro.infer.MCMC``: unadjusted Langevin (ULA), MALA and HMC.

Langevin kernels move every latent site of a Pyro model by the Euler–Maruyama step of the
Langevin SDE (the DeepBC paper's Eq. 13),

    z' = z + ε ∇ log p(z) + sqrt(2ε) ξ,   ξ ~ N(0, I),

and MALA accepts or rejects z' with the Metropolis–Hastings ratio of the Gaussian proposals.
:class:`HMCKernel` runs exactly ``num_steps`` leapfrog steps of the Hamiltonian
H = −log p(z) + ½ ‖p‖² (identity mass) per draw and accepts with exp(−ΔH): its work per draw is
``num_steps`` gradients, whatever the step size (at most :data:`MAX_LEAPFROG`).

When the model's density factorises over its leading ``batch_ndims`` dims (independent chains
and units as batch dimensions), acceptance and step-size adaptation run per batch element, which
is a valid MCMC for each element; with ``batch_ndims=0`` the whole state moves as one.

Non-finite states are never returned: a batch element whose proposal (or any leapfrog state)
is NaN or infinite, or whose energy error exceeds :data:`DIVERGENCE_ENERGY` (for ULA: whose
log density drops by more than that in one step, an exploding discretisation), keeps its
current state and is flagged in ``diverging`` (ULA included, which otherwise accepts every
step).

Every latent site must have real support (no constraint transforms).
"""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from ..errors import ArgumentError, MechanismError

__all__ = ["DIVERGENCE_ENERGY", "MALA", "MAX_LEAPFROG", "HMCKernel", "LangevinKernel"]

MAX_LEAPFROG = 1024
"""The cap on leapfrog steps per draw of :class:`HMCKernel` (and of the constrained HMC)."""

DIVERGENCE_ENERGY = 1000.0
"""An energy error H(new) − H(old) above this counts as a divergent transition (as in Stan)."""


def adapt_log_step(
    log_eps: Tensor, log_bar: Tensor, accept: Tensor, target: float, t: int
) -> tuple[Tensor, Tensor]:
    """One Robbins–Monro step of log ε toward ``target`` acceptance, and its running average.

    log ε ← log ε + 2 (t^0.6 + 10)⁻¹ (α − target);  log ε̄ ← (1 − t^−0.75) log ε̄ + t^−0.75 log ε.
    Both ``(*batch,)``; the average is the step size used after warmup.
    """
    log_eps = log_eps + 2.0 / (t**0.6 + 10) * (accept - target)
    w = 1.0 / t**0.75
    return log_eps, (1 - w) * log_bar + w * log_eps


class _BatchedKernel(MCMCKernel):
    """Shared machinery: setup from a Pyro model, batched log density and gradient, caching."""

    target_accept: float
    adapt: bool

    def __init__(self, model, step_size: float | Tensor, batch_ndims: int):
        if not torch.is_tensor(step_size) and not (
            isinstance(step_size, int | float) and math.isfinite(step_size) and step_size > 0
        ):
            raise ArgumentError(f"step_size must be a finite number > 0, got {step_size!r}")
        self.model = model
        self.batch_ndims = batch_ndims
        self._step_size0 = step_size
        self._initial_params: dict[str, Tensor] | None = None
        self.transforms: dict = {}
        self._cache = None

    @property
    def initial_params(self) -> dict[str, Tensor]:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        self._initial_params = {k: v.detach() for k, v in params.items()}

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._args, self._kwargs = args, kwargs
        self._warmup_steps, self._t = warmup_steps, 0
        model = self.model
        if self._initial_params is not None:
            model = poutine.condition(model, data=self._initial_params)
        with poutine.block():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        self._latent = [
            name
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and name not in self._observed(trace)
        ]
        for name in self._latent:
            support = trace.nodes[name]["fn"].support
            if support is not constraints.real and not (
                isinstance(support, constraints.independent)
                and support.base_constraint is constraints.real
            ):
                raise MechanismError(
                    f"{type(self).__name__} needs real-valued latent sites; "
                    f"{name!r} has support {support}"
                )
        if self._initial_params is None:
            self._initial_params = {k: trace.nodes[k]["value"].detach() for k in self._latent}
        like = next(iter(self._initial_params.values()))
        batch = like.shape[: self.batch_ndims]
        step = torch.as_tensor(self._step_size0, dtype=like.dtype, device=like.device)
        if not bool(torch.isfinite(step).all() and (step > 0).all()):
            raise ArgumentError("step_size must be finite and > 0 in every batch element")
        self.step_size = step.expand(batch).clone()
        self.accept_prob = torch.ones(batch, dtype=like.dtype, device=like.device)
        self.diverging = torch.zeros(batch, dtype=torch.bool, device=like.device)
        self._accept_sum = torch.zeros_like(self.accept_prob)
        self._log_step_bar = self.step_size.log()
        self._cache = None

    def _observed(self, trace) -> set[str]:
        given = set(self._initial_params or {})
        return {
            name
            for name, site in trace.nodes.items()
            if site["type"] == "sample"
            and name not in given
            and (site["is_observed"] or type(site["fn"]).__name__ == "Unit")
        }

    def clear_cache(self) -> None:
        """Forget the cached density and gradient (the model's density changed, e.g. σ)."""
        self._cache = None

    def end_warmup(self) -> None:
        if self.adapt:
            self.step_size = self._log_step_bar.exp()

    def logging(self) -> dict:
        return {
            "step size": f"{self.step_size.mean().item():.3g}",
            "acc. prob": f"{self.accept_prob.mean().item():.3f}",
        }

    def diagnostics(self) -> dict:
        return {"acceptance rate": (self._accept_sum / max(self._t, 1)).mean().item()}

    def log_density(self, params: dict[str, Tensor]) -> Tensor:
        """log p(params) summed over everything but the leading ``batch_ndims`` dims."""
        with poutine.block():
            trace = poutine.trace(poutine.condition(self.model, data=params)).get_trace(
                *self._args, **self._kwargs
            )
        total = 0.0
        for site in trace.nodes.values():
            if site["type"] != "sample":
                continue
            lp = site["fn"].log_prob(site["value"])
            if lp.dim() > self.batch_ndims:
                lp = lp.sum(tuple(range(self.batch_ndims, lp.dim())))
            total = total + lp
        return total

    def value_and_grad(self, params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """log p ``(*batch,)`` and its gradient per site (same shapes as ``params``)."""
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            logp = self.log_density(leaves)
            grads = torch.autograd.grad(logp.sum(), list(leaves.values()))
        return logp.detach(), {k: g.detach() for k, g in zip(leaves, grads)}

    def _expand(self, x: Tensor, like: Tensor) -> Tensor:
        return x.reshape(x.shape + (1,) * (like.dim() - x.dim()))

    def _reduce(self, x: Tensor) -> Tensor:
        """Sum (or all) over the non-batch dims: ``(*batch,)``."""
        dims = tuple(range(self.batch_ndims, x.dim()))
        if x.dtype == torch.bool:
            return x.all(dims) if dims else x
        return x.sum(dims) if dims else x

    def _finite(self, params: dict[str, Tensor]) -> Tensor:
        """``(*batch,)``: every element of every site finite."""
        ok = None
        for v in params.values():
            f = self._reduce(torch.isfinite(v))
            ok = f if ok is None else ok & f
        return ok

    def _guarded(
        self, proposal: dict[str, Tensor], current: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Replace non-finite batch elements of ``proposal`` by ``current``: (safe, finite)."""
        ok = self._finite(proposal)
        safe = {k: torch.where(self._expand(ok, v), v, current[k]) for k, v in proposal.items()}
        return safe, ok

    def _select(self, keep_new: Tensor, new: dict, old: dict) -> dict:
        return {k: torch.where(self._expand(keep_new, v), new[k], old[k]) for k, v in old.items()}

    def _current(self, params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self._cache is None or self._cache[0] is not params:
            return self.value_and_grad(params)
        return self._cache[1], self._cache[2]

    pool_chains = False
    """Adapt one step size per unit from the acceptance averaged over the chains (dim 0)."""

    def _adapt(self, accept_prob: Tensor) -> None:
        if self.adapt and self._t <= self._warmup_steps:
            if self.pool_chains:
                accept_prob = accept_prob.mean(0, keepdim=True).expand_as(accept_prob)
            log_eps, self._log_step_bar = adapt_log_step(
                self.step_size.log(), self._log_step_bar, accept_prob, self.target_accept, self._t
            )
            self.step_size = log_eps.exp()


class LangevinKernel(_BatchedKernel):
    """Unadjusted Langevin (``adjust=False``) or MALA (``adjust=True``) for ``pyro.infer.MCMC``.

    Args:
        model: a Pyro model whose latent sites all have real support.
        step_size: initial ε > 0 (a number, or per batch element when ``batch_ndims`` > 0).
        adjust: Metropolis-adjust the step (MALA).
        adapt_step_size: adapt ε during warmup toward ``target_accept`` (MALA only).
        target_accept: the acceptance rate adaptation aims at (0.574 is optimal for MALA).
        batch_ndims: leading dims of every site over which the density factorises.

    Statistics of the latest step, per batch element: ``accept_prob`` (ULA: 1, or 0 for a
    divergent step), ``step_size``, ``diverging`` (the proposal or its density was not finite).
    """

    def __init__(
        self,
        model,
        step_size: float | Tensor = 1e-3,
        adjust: bool = False,
        adapt_step_size: bool = True,
        target_accept: float = 0.574,
        batch_ndims: int = 0,
    ):
        super().__init__(model, step_size, batch_ndims)
        self.adjust = adjust
        self.adapt = adapt_step_size and adjust
        self.target_accept = target_accept

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One transition of every chain and unit; returns the new state."""
        logp, grad = self._current(params)
        eps = self.step_size
        proposal = {}
        for k, v in params.items():
            e = self._expand(eps, v)
            proposal[k] = v + e * grad[k] + (2 * e).sqrt() * torch.randn_like(v)
        safe, finite = self._guarded(proposal, params)
        logp_new, grad_new = self.value_and_grad(safe)
        finite = finite & torch.isfinite(logp_new) & self._finite(grad_new)
        self._t += 1
        if not self.adjust:
            finite = finite & (logp_new > logp - DIVERGENCE_ENERGY)  # an exploding step
            new = self._select(finite, safe, params)
            self.diverging = ~finite
            self.accept_prob = finite.to(eps.dtype)
            self._accept_sum += self.accept_prob
            self._cache = (
                new,
                torch.where(finite, logp_new, logp),
                self._select(finite, grad_new, grad),
            )
            return new
        log_ratio = logp_new - logp
        for k, v in params.items():
            e = self._expand(eps, v)
            fwd = (safe[k] - v - e * grad[k]).square() / (4 * e)
            bwd = (v - safe[k] - e * grad_new[k]).square() / (4 * e)
            log_ratio = log_ratio + self._reduce(fwd - bwd)
        log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -math.inf))
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        accept_prob = log_ratio.clamp(max=0).exp()
        accept = torch.rand_like(accept_prob) < accept_prob
        new = self._select(accept, safe, params)
        logp = torch.where(accept, logp_new, logp)
        grad = self._select(accept, grad_new, grad)
        self.accept_prob = accept_prob
        self.diverging = ~finite
        self._accept_sum += accept_prob
        self._adapt(accept_prob)
        self._cache = (new, logp, grad)
        return new


def MALA(model, step_size: float | Tensor = 1e-3, **kwargs) -> LangevinKernel:
    """The Metropolis-adjusted Langevin kernel: ``LangevinKernel(adjust=True)``."""
    return LangevinKernel(model, step_size=step_size, adjust=True, **kwargs)


class HMCKernel(_BatchedKernel):
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps, batched per element.

    Args:
        model: a Pyro model whose latent sites all have real support.
        step_size: initial leapfrog step ε > 0 (a number or per batch element).
        num_steps: leapfrog steps per draw, 1 to :data:`MAX_LEAPFROG`; each costs one gradient.
        adapt_step_size: adapt ε per batch element during warmup toward ``target_accept``.
        target_accept: the acceptance rate adaptation aims at.
        batch_ndims: leading dims of every site over which the density factorises.

    Each draw jitters ε uniformly by ±20% (the same factor for every element) so that no fixed
    trajectory length ε L resonates with the target. Statistics of the latest draw, per batch
    element: ``accept_prob``, ``step_size``, ``diverging``.
    """

    def __init__(
        self,
        model,
        step_size: float | Tensor = 0.1,
        num_steps: int = 10,
        adapt_step_size: bool = True,
        target_accept: float = 0.8,
        batch_ndims: int = 0,
    ):
        super().__init__(model, step_size, batch_ndims)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int):
            raise ArgumentError(f"num_steps must be an int, got {num_steps!r}")
        if not 1 <= num_steps <= MAX_LEAPFROG:
            raise ArgumentError(f"num_steps must be in [1, {MAX_LEAPFROG}], got {num_steps}")
        self.num_steps = num_steps
        self.adapt = adapt_step_size
        self.target_accept = target_accept

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One transition of every chain and unit; returns the new state."""
        logp, grad = self._current(params)
        eps = self.step_size * (0.8 + 0.4 * torch.rand((), device=self.step_size.device))
        mom = {k: torch.randn_like(v) for k, v in params.items()}
        h0 = -logp + 0.5 * sum(self._reduce(p.square()) for p in mom.values())
        q, p, g = dict(params), dict(mom), dict(grad)
        lp = logp
        ok = torch.ones_like(logp, dtype=torch.bool)
        for _ in range(self.num_steps):
            half = {k: p[k] + 0.5 * self._expand(eps, p[k]) * g[k] for k in q}
            moved = {k: q[k] + self._expand(eps, q[k]) * half[k] for k in q}
            q_safe, finite = self._guarded(moved, q)
            lp, g = self.value_and_grad(q_safe)
            finite = finite & torch.isfinite(lp) & self._finite(g)
            ok = ok & finite
            g = {k: torch.where(self._expand(ok, v), v, torch.zeros_like(v)) for k, v in g.items()}
            q = q_safe
            p = {k: half[k] + 0.5 * self._expand(eps, half[k]) * g[k] for k in q}
        h1 = -lp + 0.5 * sum(self._reduce(v.square()) for v in p.values())
        delta = h1 - h0
        ok = ok & torch.isfinite(delta) & (delta < DIVERGENCE_ENERGY)
        log_ratio = torch.where(ok, -delta, torch.full_like(delta, -math.inf))
        accept_prob = log_ratio.clamp(max=0).exp()
        accept = torch.rand_like(accept_prob) < accept_prob
        new = self._select(accept, q, params)
        self._cache = (new, torch.where(accept, lp, logp), self._select(accept, g, grad))
        self.accept_prob, self.diverging = accept_prob, ~ok
        self._accept_sum += accept_prob
        self._t += 1
        self._adapt(accept_prob)
        return new
