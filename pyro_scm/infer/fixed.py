"""Fixed parameters while a sampler runs the program many times.

:func:`fixed_parameters` enters the ``fixed_parameters()`` context of every mechanism of a model
that has one (flow mechanisms build a root node's transform once instead of at every run).
Samplers of backtracking need gradients in the latents only, never in the weights, and change no
weight, so the results are the same; only the cost of a model run drops.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import nn

from ..errors import ArgumentError

__all__ = ["fixed_parameters"]


@contextmanager
def fixed_parameters(model: nn.Module) -> Iterator[None]:
    """Treat the parameters of ``model``'s mechanisms as constants within the block.

    Raises:
        ArgumentError: ``model`` is not a ``torch.nn.Module`` (an SCM or a mechanism).
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(
            f"fixed_parameters needs an SCM or another torch.nn.Module, got {type(model).__name__}"
        )
    with ExitStack() as stack:
        for module in model.modules():
            enter = getattr(module, "fixed_parameters", None)
            if callable(enter) and module is not model:
                stack.enter_context(enter())
        yield
