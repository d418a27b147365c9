"""Stochastic DeepBC: sample u* ∝ P_B(u* | u_F) [p(u*)] N(x*_A; F_A(u*), σ²) with Pyro's MCMC.

:func:`backtracking_model` writes the target as a Pyro model: one sample site ``noise_<node>`` per
sampled latent (an improper flat site, or the exogenous prior when ``prior=True``), a
``pyro.factor`` with −Σ λ_k d_k(u*_k, u_F,k), and the antecedent as a narrow Gaussian
observation, the relaxation of the paper's δ(F_A(u*) = x*_A). Chains and units are the two
leading batch dimensions of every site; the density factorises over them.

:func:`run_mcmc` runs it with :class:`~pyro_scm.infer.kernels.LangevinKernel` (unadjusted or
MALA) or :class:`~pyro_scm.infer.kernels.HMCKernel` (exactly ``num_steps`` leapfrog steps per
draw), which accept and adapt their step size per chain and unit, or with Pyro's NUTS (one joint
trajectory over all chains and units, valid because the joint target is the product; at most
2^``max_tree_depth`` − 1 leapfrog steps per draw), started at the mode. Statistics are read
through public kernel attributes and ``diagnostics()`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import InitMessenger, init_to_value
from torch import Tensor

from ..distances import Distance
from .kernels import HMCKernel, LangevinKernel
from .reduced_form import ReducedForm

__all__ = ["Annealer", "backtracking_model", "run_mcmc", "sample_kernel", "sigma_schedule"]

METHODS = ("langevin", "mala", "hmc", "nuts")


def _noise_prior(rf: ReducedForm, node: str, batch: torch.Size, like: Tensor):
    shape = batch + rf.noise_shapes[node]
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    base = dist.Gumbel(zero, 1.0) if node in rf.categorical else dist.Normal(zero, 1.0)
    return base.expand(shape).to_event(len(rf.noise_shapes[node]))


def backtracking_model(
    rf: ReducedForm,
    distance: Distance,
    nodes: list[str],
    num_chains: int,
    sigma: float | Callable[[], float],
    prior: bool,
):
    """The Pyro model over the latents of ``nodes``, sites ``noise_<node>`` ``(chains, units, *e)``.

    ``sigma`` is the antecedent likelihood's scale, or a callable read at every run (annealing).
    """
    like = rf.z_factual
    batch = torch.Size([num_chains, rf.units])
    dims = rf.event_dims()

    def model() -> None:
        u = {}
        for n in nodes:
            if prior:
                site = _noise_prior(rf, n, batch, like)
            else:
                site = dist.ImproperUniform(constraints.real, batch, rf.noise_shapes[n])
            u[n] = pyro.sample(f"noise_{n}", site)
        u_f = {n: rf.u_factual[n].expand(num_chains, *rf.u_factual[n].shape) for n in nodes}
        pyro.factor("backtracking", -distance.total(u, u_f, dims))
        noise = {n: rf.u_factual[n].expand(num_chains, *rf.u_factual[n].shape) for n in rf.nodes}
        noise.update(u)
        r = rf.antecedent_residual(noise, batch)
        scale = sigma() if callable(sigma) else sigma
        pyro.sample("antecedent", dist.Normal(r, scale).to_event(1), obs=torch.zeros_like(r))

    return model


def sigma_schedule(sigma: float, start: float, warmup: int) -> Callable[[int], float]:
    """σ before warmup step t (0-based): geometric from ``start`` to ``sigma`` over the first
    half of warmup, then ``sigma`` (the second half adapts the step size at the final σ)."""
    steps = max(warmup // 2, 1)
    ratio = math.log(sigma / start)

    def at(t: int) -> float:
        return sigma if t >= steps else start * math.exp(ratio * t / steps)

    return at


class Annealer:
    """Holds the current σ for :func:`backtracking_model`; as a ``hook_fn`` it moves σ along
    ``schedule`` during warmup and drops the kernel's cached density (which used the old σ)."""

    def __init__(self, schedule: Callable[[int], float]):
        self.schedule, self.value, self.history = schedule, schedule(0), [schedule(0)]

    def __call__(self) -> float:
        return self.value

    def step(self, kernel, stage: str, i: int) -> None:
        """After warmup step ``i``: set σ for step ``i + 1``."""
        if not stage.startswith("Warmup"):
            return
        new = self.schedule(i + 1)
        if new != self.value:
            self.value = new
            kernel.clear_cache()
        self.history.append(self.value)


class _Stats:
    """A ``hook_fn`` recording per-draw sampler statistics ``(chains, units)``.

    Batched kernels expose ``accept_prob``, ``step_size`` and ``diverging`` per element; for
    Pyro's NUTS the acceptance (0/1: the draw moved) and divergences come from the public
    ``kernel.diagnostics()`` (running totals, differenced per draw) and apply to every element.
    """

    def __init__(self, batch: torch.Size, like: Tensor, annealer: Annealer | None = None):
        self.batch, self.like, self.annealer = batch, like, annealer
        self.rows: dict[str, list[Tensor]] = {"accept_prob": [], "step_size": [], "diverging": []}
        self._accepted, self._div = 0.0, 0

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        if self.annealer is not None:
            self.annealer.step(kernel, stage, i)
        if not stage.startswith("Sample"):
            return
        full = dict(dtype=self.like.dtype, device=self.like.device)
        if hasattr(kernel, "diverging"):
            acc, step = kernel.accept_prob, kernel.step_size
            div = kernel.diverging.to(self.like.dtype)
            if hasattr(kernel, "projection_failure"):
                fail = kernel.projection_failure.to(self.like.dtype)
                self.rows.setdefault("projection_failure", []).append(fail)
        else:
            info = kernel.diagnostics()
            accepted = float(info["acceptance rate"]) * (i + 1)
            a, self._accepted = accepted - self._accepted, accepted
            acc = torch.full(self.batch, min(max(a, 0.0), 1.0), **full)
            step = torch.full(self.batch, float(kernel.step_size), **full)
            count = len(info["divergences"])
            div = torch.full(self.batch, float(count > self._div), **full)
            self._div = count
        self.rows["accept_prob"].append(acc.expand(self.batch).clone())
        self.rows["step_size"].append(step.expand(self.batch).clone())
        self.rows["diverging"].append(div.expand(self.batch).clone())

    def stacked(self) -> dict[str, Tensor]:
        """stat -> ``(chains, draws, units)``."""
        return {k: torch.stack(v, 1) for k, v in self.rows.items() if v}


def run_mcmc(
    model,
    method: str,
    init: dict[str, Tensor],
    num_samples: int,
    warmup: int,
    step_size: float | None,
    num_steps: int,
    max_tree_depth: int,
    progress: bool,
    annealer: Annealer | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Run MCMC: sites ``(chains, draws, units, *e)``, stats ``(chains, draws, units)``.

    ``annealer``: the σ holder the model reads, moved along its schedule during warmup.
    """
    model = poutine.infer_config(model, lambda msg: {})  # a fresh callable per run
    model = InitMessenger(init_to_value(values=init))(model)
    if method in ("langevin", "mala"):
        kernel = LangevinKernel(
            model,
            step_size=step_size if step_size is not None else 1e-3,
            adjust=method == "mala",
            batch_ndims=2,
        )
    elif method == "hmc":
        kernel = HMCKernel(model, step_size=step_size or 0.1, num_steps=num_steps, batch_ndims=2)
    else:
        kernel = NUTS(model, step_size=step_size or 0.01, max_tree_depth=max_tree_depth)
    return sample_kernel(kernel, init, num_samples, warmup, progress, annealer)


def sample_kernel(
    kernel,
    init: dict[str, Tensor],
    num_samples: int,
    warmup: int,
    progress: bool,
    annealer: Annealer | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Run ``kernel`` with ``pyro.infer.MCMC`` from ``init`` (sites ``(chains, units, *e)``):
    sites ``(chains, draws, units, *e)``, stats ``(chains, draws, units)``."""
    like = next(iter(init.values()))
    stats = _Stats(like.shape[:2], like, annealer)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=warmup,
        initial_params=init,
        hook_fn=stats,
        disable_progbar=not progress,
    )
    mcmc.run()
    samples = {k: v[0].movedim(0, 1) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return samples, stats.stacked()
