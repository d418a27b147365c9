r"""Ladder networks of a hierarchical VAE (VDVAE-style, Child 2021; Ribeiro et al. 2023).

A bottom-up encoder computes features of the image at each resolution; a top-down decoder walks
the latent levels from the coarsest to the finest. At level l, with h_l the top-down state and c
the parents' context (injected at *every* level),

    h_l ← h_l + W_l c                                   (parents at every level)
    p(z_l | z_<l, c)    = N(μ_p(h_l), σ_p(h_l)²)          (prior)
    q(z_l | x, z_<l, c) = N(μ_q(h_l, e_l), σ_q(h_l, e_l)²) (posterior, e_l the encoder features)
    h_l ← block(h_l + proj(z_l))

and after the last level the state is upsampled to the image and mapped to logits. The
:class:`LadderDecoder` runs the walk in three modes: sampling z_l from q (training), taking z_l
from q's mean or a draw and returning the prior-standardised noise ε_l = (z_l − μ_p) / σ_p
(abduction), or building z_l = μ_p + σ_p ε_l from given noise (generation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ShapeError
from .images import IMAGE_SIZES

__all__ = ["LadderDecoder", "LadderEncoder", "LevelStats", "default_levels", "level_noise"]


def default_levels(size: int, latent: int = 16) -> tuple[tuple[int, int], ...]:
    """Latent levels ``((resolution, channels), ...)`` from coarse to fine for side ``size``:
    a ``latent``-vector at 1×1, 4 channels at side/4, 1 channel at side/2."""
    return ((1, latent), (size // 4, 4), (size // 2, 1))


class _Block(nn.Module):
    """A residual 3×3 convolution block, its last layer zero-initialised."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


def _check(size: int, channels: int, levels: Sequence[tuple[int, int]]) -> None:
    if size not in IMAGE_SIZES:
        raise ShapeError(f"the ladder networks take images of side {IMAGE_SIZES}, not {size}")
    if channels < 1:
        raise ShapeError(f"images need at least one channel, got {channels}")
    allowed = (1, size // 4, size // 2, size)
    res = [r for r, _ in levels]
    if not levels or any(r not in allowed or c < 1 for r, c in levels) or res != sorted(res):
        raise ShapeError(
            f"latent levels must be (resolution in {allowed}, channels >= 1) pairs from coarse "
            f"to fine, got {tuple(levels)}"
        )


class LadderEncoder(nn.Module):
    """Bottom-up features: ``(B, C, S, S), (B, k) | None -> {resolution: (B, width, r, r)}``
    for r in (S, S/2, S/4, 1). The context is ignored (the posterior sees the parents through the
    top-down state)."""

    def __init__(self, size: int = 28, channels: int = 1, width: int = 32):
        super().__init__()
        _check(size, channels, default_levels(size))
        self.size = size
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList([_Block(width) for _ in range(2)])
        self.downs = nn.ModuleList(
            [nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in range(2)]
        )
        self.top = nn.Linear(width * (size // 4) ** 2, width)

    def forward(self, x: Tensor, context: Tensor | None = None) -> dict[int, Tensor]:
        """Features per resolution."""
        s = self.size
        h = self.stem(x)
        feats = {s: h}
        h = self.blocks[0](self.downs[0](F.silu(h)))
        feats[s // 2] = h
        h = self.blocks[1](self.downs[1](F.silu(h)))
        feats[s // 4] = h
        feats[1] = self.top(F.silu(h).flatten(1))[:, :, None, None]
        return feats


@dataclass
class LevelStats:
    """What the top-down walk saw at one level: prior and posterior (None in generation)
    locations and scales, and the latent z, each ``(B, channels, r, r)``."""

    p_loc: Tensor
    p_scale: Tensor
    z: Tensor
    q_loc: Tensor | None = None
    q_scale: Tensor | None = None

    def kl(self) -> Tensor:
        """KL(q ‖ p) summed over the level, ``(B,)``."""
        assert self.q_loc is not None and self.q_scale is not None
        vq, vp = self.q_scale.square(), self.p_scale.square()
        kl = 0.5 * ((vq + (self.q_loc - self.p_loc).square()) / vp - 1.0 + vp.log() - vq.log())
        return kl.flatten(1).sum(-1)


def _scale(log_scale: Tensor) -> Tensor:
    return log_scale.clamp(-8.0, 4.0).exp()


class LadderDecoder(nn.Module):
    """Top-down decoder with latent ``levels`` and the parents injected at every level.

    Args:
        size: image side (28 or 32).
        channels: image channels.
        context: size of the parents' context k (0: unconditional).
        width: channels of the top-down state.
        levels: ``((resolution, latent channels), ...)`` from coarse to fine; default
            :func:`default_levels`.
    """

    def __init__(
        self,
        size: int = 28,
        channels: int = 1,
        context: int = 0,
        width: int = 32,
        levels: Sequence[tuple[int, int]] | None = None,
    ):
        super().__init__()
        levels = tuple(tuple(map(int, lv)) for lv in (levels or default_levels(size)))
        _check(size, channels, levels)
        self.size, self.channels, self.width = size, channels, width
        self.levels = levels
        self.context_features = context
        self.h0 = nn.Parameter(torch.zeros(1, width, 1, 1))
        k = max(context, 1)
        self.inject = nn.ModuleList([nn.Linear(k, width) for _ in levels])
        self.prior = nn.ModuleList([nn.Conv2d(width, 2 * c, 1) for _, c in levels])
        self.posterior = nn.ModuleList(
            [nn.Conv2d(2 * width, 2 * c, 3 if r > 1 else 1, padding=int(r > 1)) for r, c in levels]
        )
        self.proj = nn.ModuleList([nn.Conv2d(c, width, 1) for _, c in levels])
        self.blocks = nn.ModuleList([_Block(width) for _ in levels])
        for p in self.prior:  # start from the standard normal prior
            nn.init.zeros_(p.weight)
            nn.init.zeros_(p.bias)
        self.out_inject = nn.Linear(k, width)
        self.up = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    @property
    def latent_features(self) -> int:
        """Size of all the levels' latents, flattened."""
        return sum(c * r * r for r, c in self.levels)

    def split(self, u: Tensor) -> list[Tensor]:
        """Flat latents ``(B, latent_features)`` -> per level ``(B, channels, r, r)``."""
        sizes = [c * r * r for r, c in self.levels]
        parts = u.split(sizes, dim=-1)
        return [p.reshape(-1, c, r, r) for p, (r, c) in zip(parts, self.levels, strict=True)]

    def _context(self, inject: nn.Module, context: Tensor | None, like: Tensor) -> Tensor:
        if context is None:
            return like.new_zeros(like.shape[0], self.width, 1, 1)
        return inject(context)[:, :, None, None]

    def forward(
        self,
        context: Tensor | None,
        *,
        features: dict[int, Tensor] | None = None,
        noise: Tensor | None = None,
        posterior: str = "sample",
        batch: int | None = None,
    ) -> tuple[Tensor, list[LevelStats]]:
        """Walk the levels; returns logits ``(B, C, S, S)`` and each level's statistics.

        With ``features`` (the encoder's), z_l comes from the posterior, as a draw
        (``posterior="sample"``) or its mean (``"mean"``); else from ``noise``
        ``(B, latent_features)`` through the prior, z_l = μ_p + σ_p ε_l.
        """
        if features is None and noise is None:
            raise ShapeError("the ladder decoder needs encoder features or noise")
        if batch is None:
            batch = (noise if noise is not None else features[1]).shape[0]
        eps = self.split(noise) if noise is not None else None
        h = self.h0.expand(batch, -1, -1, -1)
        if context is not None:
            context = context.to(h)
        stats = []
        for i, (r, _) in enumerate(self.levels):
            if h.shape[-1] != r:
                h = F.interpolate(h, size=(r, r), mode="nearest")
            h = h + self._context(self.inject[i], context, h)
            p_loc, p_log = self.prior[i](h).chunk(2, dim=1)
            p_scale = _scale(p_log)
            if features is not None:
                e = features[r]
                q_loc, q_log = self.posterior[i](torch.cat([h, e.expand_as(h)], 1)).chunk(2, 1)
                q_scale = _scale(q_log)
                z = q_loc if posterior == "mean" else q_loc + q_scale * torch.randn_like(q_loc)
                stats.append(LevelStats(p_loc, p_scale, z, q_loc, q_scale))
            else:
                z = p_loc + p_scale * eps[i]
                stats.append(LevelStats(p_loc, p_scale, z))
            h = self.blocks[i](h + self.proj[i](z))
        h = h + self._context(self.out_inject, context, h)
        if h.shape[-1] == self.size // 2:
            h = self.up(F.silu(h))
        elif h.shape[-1] != self.size:
            h = F.interpolate(h, size=(self.size, self.size), mode="nearest")
        return self.out(F.silu(h)), stats


def level_noise(stats: Sequence[LevelStats]) -> Tensor:
    """Prior-standardised noise ε_l = (z_l − μ_p) / σ_p of every level, flat ``(B, L)``."""
    return torch.cat([((s.z - s.p_loc) / s.p_scale).flatten(1) for s in stats], dim=-1)
