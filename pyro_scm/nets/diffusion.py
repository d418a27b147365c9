"""Time-conditioned networks for diffusion mechanisms: ε-networks and anti-causal predictors.

Every network is called as ``net(x_t, t, context=None)`` with ``x_t`` ``(B, *event)``, ``t``
``(B,)`` float timestep indices in ``[0, T)`` and ``context`` ``(B, C)`` or None (no parents, or a
classifier-free guidance drop); it returns ``(B, *event)`` (ε-networks) or ``(B, out)``
(predictors). Time enters through a sinusoidal embedding (Vaswani et al. 2017); the UNet puts it
into each residual block with adaptive group normalisation (Nichol & Dhariwal 2021), as in the
Diff-SCM paper's Appendix E, at CPU scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["TimeMLP", "UNet", "UNetClassifier", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of timesteps: ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.to(freqs.dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2)).to(t.dtype if t.is_floating_point() else emb.dtype)


def _with_flag(context: Tensor | None, features: int, like: Tensor) -> Tensor | None:
    """``[context, 1]``, or ``[0, 0]`` when the context is dropped (None): ``(B, features + 1)``."""
    if features == 0:
        return None
    batch = like.shape[0]
    if context is None:
        return like.new_zeros(batch, features + 1)
    return torch.cat([context, context.new_ones(batch, 1)], dim=-1)


class TimeMLP(nn.Module):
    """An MLP ``(x_t, t[, context]) -> out`` for vector nodes (ε-network or predictor).

    Args:
        features: size of ``x_t`` ``(B, features)``.
        out_features: output size (default ``features``: an ε-network).
        context: size of the parents' context (0: unconditional). A context may be None at call
            time (it is then dropped, for classifier-free guidance).
        hidden: hidden layer sizes.
        time_dim: size of the timestep embedding.
    """

    def __init__(
        self,
        features: int,
        out_features: int | None = None,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        time_dim: int = 32,
    ):
        super().__init__()
        self.features, self.context_features, self.time_dim = features, context, time_dim
        extra = context + 1 if context else 0
        self.net = MLP(features + time_dim + extra, out_features or features, hidden)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, features)``, ``(B,)``, ``(B, context)`` -> ``(B, out_features)``."""
        parts = [x, timestep_embedding(t, self.time_dim).to(x)]
        flagged = _with_flag(context, self.context_features, x)
        if flagged is not None:
            parts.append(flagged)
        return self.net(torch.cat(parts, dim=-1))


class _ResBlock(nn.Module):
    """Conv residual block with adaptive group norm: ``GN(h) · (1 + scale(e)) + shift(e)``."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(math.gcd(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class _Encoder(nn.Module):
    """The UNet's downsampling half: residual blocks at each resolution, stride-2 convs between."""

    def __init__(self, channels: int, base: int, mults: Sequence[int], emb_dim: int, groups: int):
        super().__init__()
        self.stem = nn.Conv2d(channels, base, 3, padding=1)
        self.blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        self.widths = [base * m for m in mults]
        cin = base
        for i, w in enumerate(self.widths):
            self.blocks.append(_ResBlock(cin, w, emb_dim, groups))
            last = i == len(self.widths) - 1
            self.downs.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            cin = w

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        h, skips = self.stem(x), []
        for block, down in zip(self.blocks, self.downs, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        return h, skips


class _TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t followed by an MLP, plus a linear embedding of the context."""

    def __init__(self, base: int, context: int):
        super().__init__()
        self.base, self.context_features = base, context
        dim = 4 * base
        self.time = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.context = nn.Linear(context + 1, dim) if context else None
        self.dim = dim

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        emb = self.time(timestep_embedding(t, self.base).to(x))
        flagged = _with_flag(context, self.context_features, x)
        if self.context is not None and flagged is not None:
            emb = emb + self.context(flagged)
        return F.silu(emb)


class UNet(nn.Module):
    """A small UNet ε-network for images ``(B, C, H, W)`` (H, W divisible by 2^(levels-1)).

    Args:
        channels: image channels C.
        base: channels of the first level.
        mults: channel multiplier of each level (one residual block per level).
        context: size of the parents' context, embedded and added to the time embedding
            (0: unconditional; None at call time drops it, for classifier-free guidance).
        groups: group-norm groups.
    """

    def __init__(
        self,
        channels: int = 1,
        base: int = 16,
        mults: Sequence[int] = (1, 2),
        context: int = 0,
        groups: int = 8,
    ):
        super().__init__()
        self.context_features = context
        self.embed = _TimeEmbedding(base, context)
        self.encoder = _Encoder(channels, base, mults, self.embed.dim, groups)
        widths = self.encoder.widths
        self.mid = _ResBlock(widths[-1], widths[-1], self.embed.dim, groups)
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        cin = widths[-1]
        for i in reversed(range(len(widths))):
            self.dec.append(_ResBlock(cin + widths[i], widths[i], self.embed.dim, groups))
            first = i == 0
            self.ups.append(
                nn.Identity() if first else nn.ConvTranspose2d(widths[i], widths[i - 1], 4, 2, 1)
            )
            cin = widths[i - 1] if not first else widths[i]
        self.out = nn.Sequential(
            nn.GroupNorm(math.gcd(groups, widths[0]), widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], channels, 3, padding=1),
        )

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, C, H, W)``, ``(B,)``, ``(B, context)`` -> ε ``(B, C, H, W)``."""
        emb = self.embed(x, t, context)
        h, skips = self.encoder(x, emb)
        h = self.mid(h, emb)
        for block, up, skip in zip(self.dec, self.ups, reversed(skips), strict=True):
            h = up(block(torch.cat([h, skip], dim=1), emb))
        return self.out(h)


class UNetClassifier(nn.Module):
    """Time-dependent anti-causal predictor for images: the UNet's encoder, pooling, a linear head.

    ``(B, C, H, W)``, ``(B,)`` -> ``(B, outputs)`` (logits of a class, or Gaussian parameters).
    """

    def __init__(
        self,
        channels: int = 1,
        outputs: int = 10,
        base: int = 16,
        mults: Sequence[int] = (1, 2),
        groups: int = 8,
    ):
        super().__init__()
        self.embed = _TimeEmbedding(base, 0)
        self.encoder = _Encoder(channels, base, mults, self.embed.dim, groups)
        self.head = nn.Linear(self.encoder.widths[-1], outputs)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, C, H, W)``, ``(B,)`` -> ``(B, outputs)``; ``context`` is ignored."""
        h, _ = self.encoder(x, self.embed(x, t, None))
        return self.head(F.silu(h).mean(dim=(-2, -1)))
