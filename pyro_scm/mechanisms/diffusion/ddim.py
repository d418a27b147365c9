r"""The deterministic DDIM ODE (Song et al. 2021) between clean data and the latent x_T.

One step from level ``src`` to level ``dst`` (level −1 is clean data, ᾱ = 1):

    x̂_0 = (x − √(1 − ᾱ_src) ε̂) / √ᾱ_src,    x' = √ᾱ_dst x̂_0 + √(1 − ᾱ_dst) ε̂,

with ε̂ evaluated at ``src`` (at the first sub-sampled timestep for inversion's first step).
Generation runs the levels downwards (Algorithm 2 of Diff-SCM), inversion upwards (Algorithm 3).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["ddim"]


def ddim(
    eps: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    invert: bool,
    clip: tuple[Tensor, Tensor] | None = None,
    progress: bool = False,
) -> Tensor:
    """Run DDIM on ``x`` ``(B, *event)``: x_T -> x_0, or x_0 -> x_T if ``invert``.

    Args:
        eps: ε̂(x_t, t) with t ``(B,)`` float timestep indices.
        x: the start, ``(B, *event)``.
        alphas_cumprod: ᾱ ``(T,)``.
        timesteps: the increasing sub-sampled timesteps ``(k,)``.
        invert: run from data to latent.
        clip: ``(low, high)`` bounds for each step's x̂_0 in generation, or None.
        progress: show a progress bar over steps.
    """
    levels = [-1, *timesteps.tolist()]
    pairs = list(itertools.pairwise(levels))
    if not invert:
        pairs = [(b, a) for a, b in reversed(pairs)]
    for src, dst in tqdm(pairs, disable=not progress, leave=False, desc="ddim"):
        t_eval = src if src >= 0 else dst  # inversion's first step evaluates ε at τ_0
        t = torch.full((x.shape[0],), float(t_eval), dtype=x.dtype, device=x.device)
        e = eps(x, t)
        a_src, a_dst = _abar(alphas_cumprod, src, x), _abar(alphas_cumprod, dst, x)
        x0 = (x - (1 - a_src).sqrt() * e) / a_src.sqrt()
        if clip is not None and not invert:
            x0 = x0.clamp(*clip)
        x = a_dst.sqrt() * x0 + (1 - a_dst).sqrt() * e
    return x


def _abar(alphas_cumprod: Tensor, level: int, like: Tensor) -> Tensor:
    if level < 0:
        return like.new_ones(())
    return alphas_cumprod[level].to(like)
