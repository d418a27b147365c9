"""Langevin kernels for ``pyro.infer.MCMC``: unadjusted Langevin (ULA) and MALA.

Both move every latent site of a Pyro model by the Euler–Maruyama step of the Langevin SDE
(the DeepBC paper's Eq. 13),

    z' = z + ε ∇ log p(z) + sqrt(2ε) ξ,   ξ ~ N(0, I),

and MALA accepts or rejects z' with the Metropolis–Hastings ratio of the Gaussian proposals.
When the model's density factorises over its leading ``batch_ndims`` dims (independent chains
and units as batch dimensions), acceptance and step-size adaptation run per batch element, which
is a valid MCMC for each element; with ``batch_ndims=0`` the whole state moves as one.

Every latent site must have real support (no constraint transforms).
"""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from ..errors import MechanismError

__all__ = ["MALA", "LangevinKernel"]


class LangevinKernel(MCMCKernel):
    """Unadjusted Langevin (``adjust=False``) or MALA (``adjust=True``) for ``pyro.infer.MCMC``.

    Args:
        model: a Pyro model whose latent sites all have real support.
        step_size: initial ε (a number, or per batch element when ``batch_ndims`` > 0).
        adjust: Metropolis-adjust the step (MALA).
        adapt_step_size: adapt ε during warmup toward ``target_accept`` (MALA only).
        target_accept: the acceptance rate adaptation aims at (0.574 is optimal for MALA).
        batch_ndims: leading dims of every site over which the density factorises.

    Statistics of the latest step, per batch element: ``accept_prob``, ``step_size``.
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
        self.model = model
        self.adjust = adjust
        self.adapt = adapt_step_size and adjust
        self.target_accept = target_accept
        self.batch_ndims = batch_ndims
        self._step_size0 = step_size
        self._initial_params: dict[str, Tensor] | None = None
        self.transforms: dict = {}

    # -- MCMCKernel interface ------------------------------------------------------------

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
                    f"Langevin kernels need real-valued latent sites; "
                    f"{name!r} has support {support}"
                )
        if self._initial_params is None:
            self._initial_params = {k: trace.nodes[k]["value"].detach() for k in self._latent}
        like = next(iter(self._initial_params.values()))
        batch = like.shape[: self.batch_ndims]
        self.step_size = torch.as_tensor(self._step_size0, dtype=like.dtype, device=like.device)
        self.step_size = self.step_size.expand(batch).clone()
        self.accept_prob = torch.ones(batch, dtype=like.dtype, device=like.device)
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

    # -- the step ------------------------------------------------------------------------

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

    def _value_and_grad(self, params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            logp = self.log_density(leaves)
            grads = torch.autograd.grad(logp.sum(), list(leaves.values()))
        return logp.detach(), {k: g.detach() for k, g in zip(leaves, grads)}

    def _expand(self, x: Tensor, like: Tensor) -> Tensor:
        return x.reshape(x.shape + (1,) * (like.dim() - x.dim()))

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        if self._cache is None or self._cache[0] is not params:
            logp, grad = self._value_and_grad(params)
        else:
            _, logp, grad = self._cache
        eps = self.step_size
        proposal = {}
        for k, v in params.items():
            e = self._expand(eps, v)
            proposal[k] = v + e * grad[k] + (2 * e).sqrt() * torch.randn_like(v)
        if not self.adjust:
            self._t += 1
            self._cache = None
            self._accept_sum += 1
            return proposal
        logp_new, grad_new = self._value_and_grad(proposal)
        log_ratio = logp_new - logp
        for k, v in params.items():
            e = self._expand(eps, v)
            fwd = (proposal[k] - v - e * grad[k]).square() / (4 * e)
            bwd = (v - proposal[k] - e * grad_new[k]).square() / (4 * e)
            dims = tuple(range(self.batch_ndims, v.dim()))
            log_ratio = log_ratio + (fwd - bwd).sum(dims) if dims else log_ratio + fwd - bwd
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        accept_prob = log_ratio.clamp(max=0).exp()
        accept = torch.rand_like(accept_prob) < accept_prob
        new = {k: torch.where(self._expand(accept, v), proposal[k], v) for k, v in params.items()}
        logp = torch.where(accept, logp_new, logp)
        grad = {
            k: torch.where(self._expand(accept, v), grad_new[k], grad[k]) for k, v in grad.items()
        }
        self.accept_prob = accept_prob
        self._accept_sum += accept_prob
        self._t += 1
        if self.adapt and self._t <= self._warmup_steps:
            rate = 1.0 / (self._t**0.6 + 10)
            log_eps = self.step_size.log() + 2 * rate * (accept_prob - self.target_accept)
            self.step_size = log_eps.exp()
            w = 1.0 / self._t**0.75
            self._log_step_bar = (1 - w) * self._log_step_bar + w * log_eps
        self._cache = (new, logp, grad)
        return new


def MALA(model, step_size: float | Tensor = 1e-3, **kwargs) -> LangevinKernel:
    """The Metropolis-adjusted Langevin kernel: ``LangevinKernel(adjust=True)``."""
    return LangevinKernel(model, step_size=step_size, adjust=True, **kwargs)
