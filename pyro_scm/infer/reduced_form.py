"""The reduced form x = F(u) of an SCM around a factual, as backtracking needs it.

:class:`ReducedForm` abducts the factual noise u_F, splits the latents into *free* ones (the
antecedent nodes and their ancestors: only these can move the antecedent) and *fixed* ones, and
runs the program on noise with pyro_scm's handlers: ``ReplayNoise`` with the given noise, and
:class:`Relax` replacing Gumbel-max nodes by their temperature-softmax relaxation so that F is
differentiable in every free latent (the paper's Section 3.4).

Free latents are packed into one vector per unit, ``z`` of shape ``(*batch, units, D)``; the
antecedent residual F_A(z) − x*_A is ``(*batch, units, M)``. Per-unit Jacobians ``(units, M, D)``
come from ``torch.func.vmap`` over a per-unit function (``jacrev`` when M <= D, else
``jacfwd``), so their cost grows linearly with the number of units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import ExitStack

import pyro.poutine as poutine
import torch
from torch import Tensor
from torch.func import jacfwd, jacrev, vmap

from .. import graph as g
from ..handlers import Relax, ReplayNoise
from ..handlers import StopAfter as _StopAfter
from ..handlers import Stopped as _Done
from ..mechanisms.categorical import RelaxedGumbelMax

__all__ = ["ReducedForm", "Relax", "RelaxedGumbelMax"]


class ReducedForm:
    """F(u) of ``scm`` around one factual per unit, with the free latents of an antecedent.

    Args:
        scm: the model.
        factual: node -> ``(units, *event)`` validated tensors.
        target: antecedent node -> ``(units, *event)`` values x*_A.
        temperature: softmax temperature of relaxed categorical nodes.
        free: the nodes whose latents may move; defaults to the antecedent and its ancestors.
    """

    def __init__(
        self,
        scm,
        factual: Mapping[str, Tensor],
        target: Mapping[str, Tensor],
        temperature: float = 0.1,
        free: list[str] | None = None,
    ):
        self.scm, self.factual, self.target = scm, dict(factual), dict(target)
        self.temperature = temperature
        graph = scm.graph
        self.nodes = list(graph.nodes)
        self.antecedent = [n for n in self.nodes if n in target]
        if free is None:
            free_set = set(self.antecedent) | g.ancestors(graph, self.antecedent)
            free = [n for n in self.nodes if n in free_set]
        self.free = list(free)
        self.units = next(iter(self.factual.values())).shape[0]
        with torch.no_grad():
            self.u_factual = scm.abduct(self.factual)
        self.noise_shapes = {n: self.u_factual[n].shape[1:] for n in self.nodes}
        self.sizes = [math.prod(self.noise_shapes[n]) for n in self.free]
        self.dim = sum(self.sizes)
        self.categorical = {n for n in self.nodes if graph.nodes[n]["mechanism"] == "categorical"}
        self.z_factual = self.pack(self.u_factual)
        self.target_flat = torch.cat(
            [self.target[n].reshape(self.units, -1) for n in self.antecedent], -1
        )
        self.constraint_dim = self.target_flat.shape[-1]
        # nodes that no free latent reaches keep their factual values exactly
        moved = set(self.free) | g.descendants(graph, self.free)
        self.unmoved = [n for n in self.nodes if n not in moved]

    # -- packing ------------------------------------------------------------------------

    def pack(self, noise: Mapping[str, Tensor]) -> Tensor:
        """Free latents ``node -> (*batch, *noise_event)`` -> ``(*batch, D)``."""
        parts = []
        for n in self.free:
            u = noise[n]
            parts.append(u.reshape(*u.shape[: u.dim() - len(self.noise_shapes[n])], -1))
        return torch.cat(parts, -1)

    def unpack(self, z: Tensor) -> dict[str, Tensor]:
        """``(*batch, D)`` -> free latents ``node -> (*batch, *noise_event)``."""
        out = {}
        for n, part in zip(self.free, z.split(self.sizes, -1)):
            out[n] = part.reshape(*z.shape[:-1], *self.noise_shapes[n])
        return out

    def event_dims(self) -> dict[str, int]:
        """node -> number of noise event dims."""
        return {n: len(s) for n, s in self.noise_shapes.items()}

    # -- running the program ------------------------------------------------------------

    def run(
        self,
        noise: Mapping[str, Tensor],
        batch_shape: torch.Size,
        relax: bool = True,
        fixed: Mapping[str, Tensor] | None = None,
        until: list[str] | None = None,
    ) -> dict[str, Tensor]:
        """The program on ``noise`` (every node ``(*batch_shape, *noise_event)``): values.

        With ``until``, the program stops once those nodes are sampled and only they are
        returned (the antecedent needs no descendants).
        """
        stop = _StopAfter(list(until or [])) if until else None
        trace = self._trace(noise, batch_shape, relax, fixed, stop)
        if stop is not None:
            return stop.values
        return {
            name: site["value"] for name, site in trace.nodes.items() if site["type"] == "sample"
        }

    def _trace(self, noise, batch_shape, relax, fixed, stop):
        """The program under the handlers: its trace, or None when ``stop`` ended it (then
        ``stop`` holds the values, and no trace is recorded: an antecedent residual, run many
        times per draw by the constrained samplers, needs only them)."""
        try:
            with ExitStack() as stack:
                stack.enter_context(poutine.block())  # an enclosing model sees none of it
                stack.enter_context(ReplayNoise(dict(noise), batch_shape))
                if fixed:
                    stack.enter_context(poutine.condition(data=dict(fixed)))
                if relax:
                    stack.enter_context(Relax(self.temperature))
                if stop is not None:
                    stack.enter_context(stop)
                    self.scm.model()
                    return None
                return poutine.trace(self.scm.model).get_trace()
        except _Done:
            return None

    def antecedent_residual(
        self,
        noise: Mapping[str, Tensor],
        batch_shape: torch.Size,
        target: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """F_A(u) − x*_A on relaxed ``noise``, flattened: ``(*batch_shape, M)``.

        A categorical antecedent node contributes the hinge max(0, m − (g_k − g_j)) per class j
        (zero for j = k), with g = logits + u the perturbed logits, k the target class and the
        margin m = ``temperature``: it vanishes exactly when class k wins by at least m, so the
        hard counterfactual has class k (the constraint is a set, not a point).
        ``target`` (node -> ``(*, *event)``) defaults to x*_A for every unit.
        """
        target = self.target if target is None else target
        stop = _StopAfter(self.antecedent)
        self._trace(noise, batch_shape, True, None, stop)
        parts = []
        for n in self.antecedent:
            if n in stop.perturbed:
                g, t = stop.perturbed[n], target[n]
                gap = (g * t).sum(-1, keepdim=True) - g
                parts.append(torch.relu(self.temperature - gap) * (1 - t))
            else:
                v, t = stop.values[n], target[n]
                ev = len(self.factual[n].shape) - 1
                flat_v = v.reshape(*v.shape[: v.dim() - ev], -1)
                parts.append(flat_v - t.reshape(*t.shape[: t.dim() - ev], -1))
        return torch.cat(parts, -1)

    def full_noise(self, z: Tensor, rest: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Free latents from ``z`` ``(*batch, units, D)``, the others from ``rest`` or u_F."""
        batch = z.shape[:-1]
        noise = {}
        for n in self.nodes:
            if rest is not None and n in rest:
                noise[n] = rest[n]
            else:
                u = self.u_factual[n]
                noise[n] = u.expand(*batch[:-1], *u.shape)
        noise.update(self.unpack(z))
        return noise

    def values(
        self,
        z: Tensor,
        rest: Mapping[str, Tensor] | None = None,
        relax: bool = False,
        keep_unmoved: bool = True,
    ) -> dict[str, Tensor]:
        """All node values at free latents ``z`` ``(*b, units, D)``: ``(*b, units, *event)``.

        Nodes that no free latent reaches keep their factual values exactly when ``keep_unmoved``
        (and no other latents are given in ``rest``).
        """
        batch = z.shape[:-1]
        fixed = {}
        if keep_unmoved and not rest:
            fixed = {
                n: self.factual[n].expand(*batch[:-1], *self.factual[n].shape) for n in self.unmoved
            }
        return self.run(self.full_noise(z, rest), batch, relax=relax, fixed=fixed)

    def residual(self, z: Tensor, rest: Mapping[str, Tensor] | None = None) -> Tensor:
        """F_A(z) − x*_A, flattened: ``(*batch, units, M)`` (relaxed categorical nodes; see
        :meth:`antecedent_residual`)."""
        return self.antecedent_residual(self.full_noise(z, rest), z.shape[:-1])

    def jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-unit residual ``(*batch, units, M)`` and Jacobian ``(*batch, units, M, D)`` at
        ``z`` ``(*batch, units, D)`` (e.g. ``batch`` = chains).

        Computed by ``vmap`` over every unit (of every batch element) of ``jacrev`` (or
        ``jacfwd`` when M > D) of a one-unit function; latents of non-free nodes stay at the
        factual.
        """
        batch = z.shape[:-2]
        n = math.prod(batch)

        def flat(v: Tensor) -> Tensor:
            return v.expand(*batch, *v.shape).reshape(n * v.shape[0], *v.shape[1:])

        fixed = {k: flat(self.u_factual[k]) for k in self.nodes if k not in self.free}
        target = {k: flat(self.target[k]) for k in self.antecedent}

        def one(z_unit: Tensor, fixed_unit: dict, target_unit: dict):
            noise = {k: v.unsqueeze(0) for k, v in fixed_unit.items()}
            noise.update(self.unpack(z_unit.unsqueeze(0)))
            r = self.antecedent_residual(noise, torch.Size([1]), target_unit)[0]
            return r, r

        jac = jacrev if self.constraint_dim <= self.dim else jacfwd
        J, r = vmap(jac(one, has_aux=True))(z.reshape(-1, z.shape[-1]), fixed, target)
        return r.reshape(*z.shape[:-1], -1), J.reshape(*z.shape[:-1], *J.shape[1:])
