r"""Hierarchical VAE mechanisms (Ribeiro et al. 2023): an image's structural equation as the
top-down decoder of a ladder VAE with the parents injected at every level.

With levels l = 1..L from coarse to fine, prior p(z_l | z_<l, pa) = N(μ_l, σ_l²) and posterior
q(z_l | x, z_<l, pa) (networks in :mod:`pyro_scm.nets.hvae`), the exogenous noise is the
prior-standardised latent of every level, so that it is N(0, I) and independent of the parents:

    u = (ε_1, ..., ε_L),  z_l = μ_l(z_<l; pa) + σ_l(z_<l; pa) ε_l,  x = sigmoid(g(z_1..L; pa))
    (``residual=True``: u also holds ε_x and x = clamp(μ + σ ε_x, 0, 1))

- ``abduct(x)``: walk the levels with z_l = the posterior mean (or a draw, ``abduction="sample"``)
  under the factual parents and return ε_l = (z_l − μ_l) / σ_l (and ε_x = (x − μ) / σ);
- ``generate(u)``: walk the levels building z_l from ε_l under the (new) parents —
  differentiable in u, so backtracking over the latents works;
- ``loss(x)``: the negative ELBO, −E_q log p(x | z, pa) + β Σ_l KL(q_l ‖ p_l).

A counterfactual therefore keeps each level's position relative to its prior and lets the new
parents move the priors and the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MechanismError, ShapeError
from ..nets.hvae import LadderDecoder, LadderEncoder, level_noise
from .vae import VAEDistribution, VAEMechanism

__all__ = ["GPU_CONFIG", "HVAEDistribution", "HVAEMechanism"]

GPU_CONFIG = {"size": 32, "width": 128, "levels": ((1, 32), (8, 16), (16, 8), (32, 2))}
"""A GPU-sized configuration (documented, not run here): ``HVAEMechanism.conv(context=k,
**GPU_CONFIG)``, a 128-channel state and four latent levels up to full resolution, close to
causal-gen's Morpho-MNIST model; see docs/hvae.md."""


class HVAEMechanism(VAEMechanism):
    r"""A hierarchical conditional VAE as an image mechanism.

    Args:
        encoder: a :class:`~pyro_scm.nets.hvae.LadderEncoder` (or any module
            ``(x, context) -> {resolution: features}``).
        decoder: a :class:`~pyro_scm.nets.hvae.LadderDecoder` (or one with its call contract).
        event_shape: ``(C, S, S)``.
        context: total size k of the parents.
        beta, likelihood, residual, abduction, residual_scale, name: as
            :class:`~pyro_scm.mechanisms.vae.VAEMechanism`.

    Example:
        >>> import torch
        >>> hvae = HVAEMechanism.conv(size=28, context=2, width=8, residual=True)
        >>> d = hvae(torch.rand(3), torch.rand(3))
        >>> x = torch.rand(3, 1, 28, 28)
        >>> bool((d.generate(d.abduct(x)) - x).abs().max() < 1e-5)
        True
    """

    def __init__(
        self,
        encoder: LadderEncoder,
        decoder: LadderDecoder,
        event_shape: Sequence[int],
        *,
        context: int = 0,
        **kwargs,
    ):
        if not hasattr(decoder, "latent_features"):
            raise MechanismError("the HVAE's decoder must have latent_features (a LadderDecoder)")
        super().__init__(
            encoder, decoder, decoder.latent_features, event_shape, context=context, **kwargs
        )

    @classmethod
    def conv(
        cls,
        size: int = 28,
        channels: int = 1,
        context: int = 0,
        *,
        width: int = 16,
        latent: int = 16,
        levels: Sequence[tuple[int, int]] | None = None,
        **kwargs,
    ) -> HVAEMechanism:
        """The CPU configuration for ``(channels, size, size)`` images (size 28 or 32): state
        ``width`` 16, levels ``((1, latent), (size/4, 4), (size/2, 1))``. For a GPU use e.g.
        ``width=128, levels=((1, 32), (size/4, 16), (size/2, 8), (size, 2))`` (see
        :data:`GPU_CONFIG`). ``kwargs`` go to the constructor."""
        if levels is None:
            levels = ((1, latent), (size // 4, 4), (size // 2, 1))
        return cls(
            LadderEncoder(size, channels, width),
            LadderDecoder(size, channels, context, width, levels),
            (channels, size, size),
            context=context,
            **kwargs,
        )

    def _who(self) -> str:
        return f"node {self.name!r} (hvae)" if getattr(self, "name", None) else "the HVAE mechanism"

    def forward(self, *parents: Tensor) -> HVAEDistribution:
        """The node's distribution given its parents' values (no network runs here)."""
        d = super().forward(*parents)
        return HVAEDistribution(self, d.context, d.batch_shape)


class HVAEDistribution(VAEDistribution):
    """The distribution an :class:`HVAEMechanism` returns for fixed parents.

    Noise ``u`` is ``(*batch, noise_features)``: the levels' standardised latents, flattened
    coarse to fine, then the residual when the mechanism keeps one.
    """

    def _context_for(self, batch: torch.Size) -> tuple[Tensor | None, torch.Size]:
        """The context broadcast against a value batch ``batch``, flattened: ``(B, k)``."""
        c = self.context
        if c is None:
            return None, batch
        full = torch.broadcast_shapes(batch, c.shape[:-1])
        return c.expand(*full, c.shape[-1]).reshape(-1, c.shape[-1]), full

    def _walk(self, x: Tensor, posterior: str):
        """Encode ``x`` ``(*b, *event)`` and walk the posterior: (logits, stats, batch)."""
        mech = self.mechanism
        nev = len(mech.event_shape)
        context, batch = self._context_for(x.shape[: x.dim() - nev])
        flat = x.expand(*batch, *mech.event_shape).reshape(-1, *mech.event_shape)
        features = mech.encoder(flat, context)
        logits, stats = mech.decoder(context, features=features, posterior=posterior)
        return logits, stats, batch

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Location and scale of the posterior over the levels' standardised noise along the
        posterior-mean walk, each ``(*batch, L)``."""
        _, stats, batch = self._walk(x, "mean")
        loc = torch.cat([((s.q_loc - s.p_loc) / s.p_scale).flatten(1) for s in stats], -1)
        scale = torch.cat([(s.q_scale / s.p_scale).flatten(1) for s in stats], -1)
        return loc.reshape(*batch, -1), scale.reshape(*batch, -1)

    def decode_logits(self, z: Tensor) -> Tensor:
        """Logits ``(*batch, *event)`` from the levels' standardised noise ``(*batch, L)``."""
        mech = self.mechanism
        if z.shape[-1] != mech.latent_dim:
            raise ShapeError(f"{mech._who()}: expected {mech.latent_dim} latent features")
        context, batch = self._context_for(z.shape[:-1])
        flat = z.expand(*batch, mech.latent_dim).reshape(-1, mech.latent_dim)
        logits, _ = mech.decoder(context, noise=flat)
        if logits.shape[1:] != mech.event_shape:
            raise ShapeError(
                f"{mech._who()}: the decoder returned units of shape {tuple(logits.shape[1:])}; "
                f"expected {tuple(mech.event_shape)}"
            )
        return logits.reshape(*batch, *mech.event_shape)

    def abduct(self, x: Tensor) -> Tensor:
        """u = the standardised posterior latents (means or draws) and, with the residual,
        (x − μ) / σ."""
        mech = self.mechanism
        mech.check_values(x)
        logits, stats, batch = self._walk(x, mech.abduction)
        z = level_noise(stats).reshape(*batch, -1)
        if not mech.residual:
            return z
        mean = torch.sigmoid(logits) if mech.bounded else logits
        eps = x.expand(*batch, *mech.event_shape) - mean.reshape(*batch, *mech.event_shape)
        eps = eps / mech.sigma()
        return torch.cat([z, eps.reshape(*batch, -1)], dim=-1)

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO per unit ``(*batch,)``: reconstruction + β Σ_l KL(q_l ‖ p_l)."""
        mech = self.mechanism
        mech.check_values(x)
        logits, stats, batch = self._walk(x, "sample")
        target = x.expand(*batch, *mech.event_shape).reshape(logits.shape)
        if mech.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            mean = torch.sigmoid(logits) if mech.bounded else logits
            sigma = mech.sigma()
            recon = (
                0.5 * ((target - mean) / sigma).square() + sigma.log() + 0.5 * math.log(2 * math.pi)
            )
        kl = sum(s.kl() for s in stats)
        return (recon.flatten(1).sum(-1) + mech.beta * kl).reshape(batch)
