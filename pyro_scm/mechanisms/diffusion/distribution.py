"""The distribution a diffusion mechanism returns under fixed parents: DDIM generation and
inversion, and the DDPM training loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import pyro.distributions as dist
import torch
from torch import Tensor

from ...errors import MechanismError, ShapeError
from ..base import MechanismDistribution

if TYPE_CHECKING:
    from .mechanism import DiffusionMechanism

__all__ = ["VALIDATION_DRAWS", "VALIDATION_SEED", "DiffusionDistribution"]

#: seed of the timesteps and noise of the validation loss (eval mode;
#: :meth:`DiffusionDistribution.loss`).
VALIDATION_SEED = 20221
#: draws of (t, ε) per unit in the validation loss of events of at most 64 features.
VALIDATION_DRAWS = 8


class DiffusionDistribution(MechanismDistribution, dist.TorchDistribution):
    """The distribution a :class:`DiffusionMechanism` returns under fixed parents.

    ``noise`` is N(0, I) over the node's event shape; ``generate`` and ``abduct`` run DDIM and its
    inversion; ``loss`` is the DDPM loss (plus the predictor's NLL); there is no ``log_prob``.
    """

    arg_constraints: ClassVar[dict] = {}
    deterministic_abduction = True

    def __init__(self, mechanism: DiffusionMechanism, context: Tensor | None, batch_shape):
        self.mechanism = mechanism
        self.context = context
        super().__init__(torch.Size(batch_shape), mechanism.event_shape, validate_args=False)

    @property
    def noise(self) -> dist.Distribution:
        like = self.mechanism.alphas_cumprod
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        shape = self.batch_shape + self.event_shape
        return dist.Normal(zero, 1.0).expand(shape).to_event(len(self.event_shape))

    def _flat(
        self, v: Tensor, standardize: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor | None, torch.Size]:
        """Broadcast ``v`` ``(*b, *event)`` and the context; flatten the batch for the networks."""
        m, nev = self.mechanism, len(self.event_shape)
        if tuple(v.shape[v.dim() - nev :]) != tuple(self.event_shape):
            raise ShapeError(
                f"expected a value of event shape {tuple(self.event_shape)}, got {tuple(v.shape)}"
            )
        batch = v.shape[: v.dim() - nev]
        c = self.context
        if c is not None:
            batch = torch.broadcast_shapes(batch, c.shape[:-1])
            c = c.to(v).expand(*batch, c.shape[-1]).reshape(-1, c.shape[-1])
        v = v.expand(*batch, *self.event_shape)
        z = m.to_net(v) if standardize else v.reshape(*batch, *m.net_event)
        z = z.reshape(-1, *m.net_event)
        c_std = (c - m.c_loc) / m.c_scale if c is not None else None
        return z, c_std, c, batch

    def _target(self, c_std: Tensor | None, c: Tensor | None) -> Tensor | None:
        kind = self.mechanism.predictor_kind
        return c if kind == "categorical" else c_std

    def generate(self, u: Tensor) -> Tensor:
        """x_0 = DDIM(x_T = u; pa): ``(*batch, *event)`` -> ``(*batch, *event)``."""
        m = self.mechanism
        z, c_std, c, batch = self._flat(u, standardize=False)
        x = m.ddim(z, c_std, self._target(c_std, c), invert=False)
        return m.from_net(x.reshape(*batch, *m.net_event))

    def abduct(self, x: Tensor) -> Tensor:
        """u = x_T by DDIM inversion from x_0 = x under the factual parents."""
        m = self.mechanism
        z, c_std, c, batch = self._flat(x)
        u = m.ddim(z, c_std, self._target(c_std, c), invert=True, guided=m.guided_abduction)
        return u.reshape(*batch, *self.event_shape)

    def loss(self, x: Tensor) -> Tensor:
        """DDPM loss per unit (Eq. 1), ``(*batch,)``, plus -log p_φ(pa | x_t, t) if guided.

        In training mode t and ε are one fresh draw of the global RNG per unit. In eval mode
        (validation) each unit gets :data:`VALIDATION_DRAWS` draws (one for events of more than
        64 features), their t stratified over the T steps, all from a generator seeded with
        :data:`VALIDATION_SEED`, and the loss is their mean: the same units get the same t and
        ε at every evaluation, so the validation loss changes only with the weights and early
        stopping on it compares models, not noise draws."""
        m = self.mechanism
        z, c_std, c, batch = self._flat(x)
        n = z.shape[0]
        if m.training:
            draws, gen = 1, None
            t = torch.randint(0, m.timesteps, (n,), device=z.device)
        else:
            draws = VALIDATION_DRAWS if z[0].numel() <= 64 else 1
            gen = torch.Generator(device=z.device).manual_seed(VALIDATION_SEED)
            strata = torch.arange(draws, device=z.device, dtype=z.dtype).unsqueeze(-1)
            position = strata + torch.rand(draws, n, device=z.device, dtype=z.dtype, generator=gen)
            t = (position * m.timesteps / draws).long().clamp(max=m.timesteps - 1).flatten()
            z = z.repeat(draws, *[1] * (z.dim() - 1))
            c_std = None if c_std is None else c_std.repeat(draws, 1)
            c = None if c is None else c.repeat(draws, 1)
        abar = m.alphas_cumprod[t].reshape(-1, *[1] * len(m.net_event))
        eps = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=gen)
        xt = abar.sqrt() * z + (1 - abar).sqrt() * eps
        tf = t.to(z.dtype)
        eps_hat = m.eps(xt, tf, c_std)
        if c_std is not None and m.conditional and m.cond_drop > 0 and m.training:
            keep = torch.rand(n, device=z.device) >= m.cond_drop
            keep = keep.reshape(-1, *[1] * len(m.net_event))
            eps_hat = torch.where(keep, eps_hat, m.eps(xt, tf, None))
        err = (eps_hat - eps).square().flatten(1).sum(-1)
        if m.weighted:
            err = err * (1 - abar.flatten())
        if m.predictor is not None:
            err = err - m.log_predictor(xt, tf, self._target(c_std, c))
        return err.reshape(draws, n).mean(0).reshape(batch)

    def log_prob(self, x: Tensor) -> Tensor:
        raise MechanismError(
            "a diffusion mechanism has no tractable log_prob; it trains on its denoising loss"
        )

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """x = generate(u) with u drawn from the prior."""
        with torch.no_grad():
            return self.generate(self.noise.sample(torch.Size(sample_shape)))

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """x = generate(u), differentiable in the parameters."""
        return self.generate(self.noise.sample(torch.Size(sample_shape)))
