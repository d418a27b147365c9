"""Up-front checks of ``backtrack``'s arguments: every one is validated before the model runs."""

from __future__ import annotations

import math
from numbers import Integral, Real

from ..errors import ArgumentError
from .kernels import MAX_LEAPFROG

__all__ = ["MAX_TREE_DEPTH", "check_arguments"]

MAX_TREE_DEPTH = 10
"""The cap on NUTS's tree depth: at most 2^10 − 1 = 1023 leapfrog steps per draw."""


def _int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ArgumentError(f"{name} must be {bound}, got {value}")


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and value > 0):
        raise ArgumentError(f"{name} must be positive and finite, got {value!r}")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")


def check_arguments(
    *,
    method: object,
    methods: tuple[str, ...],
    solver: object,
    solvers: tuple[str, ...],
    sparse: object,
    prior: object,
    num_samples: object,
    num_chains: object,
    warmup: object,
    sigma: object,
    anneal: object,
    step_size: object,
    num_steps: object,
    max_tree_depth: object,
    temperature: object,
    max_iter: object,
    tol: object,
    lr: object,
    penalty: object,
    progress: object,
) -> None:
    """Raise :class:`~pyro_scm.errors.ArgumentError` naming the first invalid argument.

    Counts are ints (``num_samples``, ``num_chains``, ``num_steps``, ``max_tree_depth``,
    ``max_iter``, ``sparse`` >= 1; ``warmup`` >= 0); ``num_steps`` <= :data:`MAX_LEAPFROG` and
    ``max_tree_depth`` <= :data:`MAX_TREE_DEPTH` bound the work per draw; scales (``sigma``,
    ``anneal``, ``step_size``, ``temperature``, ``tol``, ``lr``, ``penalty``) are finite and
    positive; ``prior`` and ``progress`` are bools.
    """
    if not isinstance(method, str) or method not in methods:
        raise ArgumentError(f"unknown backtracking method {method!r}; use one of {methods}")
    if not isinstance(solver, str) or solver not in solvers:
        raise ArgumentError(f"unknown solver {solver!r}; use one of {solvers}")
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains)):
        _int(name, value, 1)
    _int("warmup", warmup, 0)
    if num_steps is not None:
        _int("num_steps", num_steps, 1, MAX_LEAPFROG)
    _int("max_tree_depth", max_tree_depth, 1, MAX_TREE_DEPTH)
    if max_iter is not None:
        _int("max_iter", max_iter, 1)
    if sparse is not None:
        _int("sparse", sparse, 1)
    for name, value in (
        ("sigma", sigma),
        ("temperature", temperature),
        ("tol", tol),
        ("lr", lr),
        ("penalty", penalty),
    ):
        _positive(name, value)
    for name, value in (("anneal", anneal), ("step_size", step_size)):
        if value is not None:
            _positive(name, value)
    _bool("prior", prior)
    _bool("progress", progress)
