"""Noise schedules, DDIM timestep sequences, and the query-time settings of diffusion mechanisms.

:func:`sampling_steps`, :func:`guidance_scale` and :func:`cfg_scale` set, inside a ``with`` block,
the DDIM steps, the anti-causal guidance scale and the classifier-free guidance weight of every
diffusion mechanism at once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from ...errors import MechanismError

__all__ = [
    "cfg_scale",
    "current_cfg_override",
    "current_scale_override",
    "current_steps_override",
    "guidance_scale",
    "noise_schedule",
    "sampling_steps",
    "timestep_sequence",
]

_STEPS_OVERRIDE: list[int] = []
_SCALE_OVERRIDE: list[float] = []
_CFG_OVERRIDE: list[float] = []


@contextlib.contextmanager
def sampling_steps(k: int) -> Iterator[None]:
    """Run every diffusion mechanism's DDIM with ``k`` sub-sampled steps inside the block.

    Example:
        >>> with sampling_steps(10):
        ...     pass  # scm.counterfactual(...) here abducts and generates in 10 steps
    """
    _check_steps(k)
    _STEPS_OVERRIDE.append(int(k))
    try:
        yield
    finally:
        _STEPS_OVERRIDE.pop()


@contextlib.contextmanager
def guidance_scale(s: float) -> Iterator[None]:
    """Use the anti-causal guidance scale ``s`` for every guided diffusion mechanism."""
    if not s >= 0:
        raise MechanismError(f"the guidance scale must be >= 0, got {s}")
    _SCALE_OVERRIDE.append(float(s))
    try:
        yield
    finally:
        _SCALE_OVERRIDE.pop()


@contextlib.contextmanager
def cfg_scale(w: float) -> Iterator[None]:
    """Use the classifier-free guidance weight ``w`` for every diffusion mechanism trained for it
    (conditional, ``cond_drop > 0``) inside the block; others are unaffected. ``w = 0`` is the
    plain conditional ε-network.

    Example:
        >>> with cfg_scale(2.0):
        ...     pass  # scm.counterfactual(...) here abducts and generates with w = 2
    """
    if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0:
        raise MechanismError(
            f"the classifier-free guidance weight must be a number >= 0, got {w!r}"
        )
    _CFG_OVERRIDE.append(float(w))
    try:
        yield
    finally:
        _CFG_OVERRIDE.pop()


def _check_steps(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MechanismError(f"the number of DDIM steps must be an int >= 1, got {k!r}")


def noise_schedule(
    kind: Literal["linear", "cosine"],
    timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Tensor:
    """The betas ``(timesteps,)`` of a linear (Ho et al.) or cosine (Nichol & Dhariwal) schedule."""
    if timesteps < 1:
        raise MechanismError(f"a diffusion needs timesteps >= 1, got {timesteps}")
    if kind == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise MechanismError(
                f"a linear schedule needs 0 < beta_start <= beta_end < 1, "
                f"got {beta_start} and {beta_end}"
            )
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        grid = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
        abar = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise MechanismError(f"unknown noise schedule {kind!r}; use 'linear' or 'cosine'")


def timestep_sequence(timesteps: int, k: int) -> Tensor:
    """``k`` timesteps evenly spaced in ``[0, timesteps - 1]``, increasing, ending at
    ``timesteps - 1``: ``(k,)`` long."""
    _check_steps(k)
    if k > timesteps:
        raise MechanismError(f"{k} DDIM steps exceed the diffusion's {timesteps} timesteps")
    return torch.linspace(timesteps - 1, 0, k, dtype=torch.float64).round().long().flip(0)


def current_steps_override() -> int | None:
    """The DDIM steps set by the innermost :func:`sampling_steps` block, or None."""
    return _STEPS_OVERRIDE[-1] if _STEPS_OVERRIDE else None


def current_scale_override() -> float | None:
    """The guidance scale set by the innermost :func:`guidance_scale` block, or None."""
    return _SCALE_OVERRIDE[-1] if _SCALE_OVERRIDE else None


def current_cfg_override() -> float | None:
    """The classifier-free guidance weight set by the innermost :func:`cfg_scale` block, or None."""
    return _CFG_OVERRIDE[-1] if _CFG_OVERRIDE else None
