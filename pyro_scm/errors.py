"""Typed errors of pyro_scm: every bad input raises one of these, naming the node at fault.

All errors derive from :class:`SCMError`, so ``except ps.errors.SCMError`` catches them all; each
also derives from the built-in exception a user would expect (``KeyError``, ``ValueError``, ...).
"""

from __future__ import annotations


class SCMError(Exception):
    """Base class of every error raised by pyro_scm."""


class UnknownNodeError(SCMError, KeyError):
    """A query names a node that the program does not sample."""

    def __init__(self, node: str, known: list[str] | tuple[str, ...], where: str = "query"):
        self.node = node
        super().__init__(f"unknown node {node!r} in {where}; the model's nodes are {sorted(known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class MissingNodeError(SCMError, KeyError):
    """A value is required for a node but none was given."""

    def __init__(self, node: str, where: str = "factual"):
        self.node = node
        super().__init__(f"no value for node {node!r} in {where}; every node needs one")

    def __str__(self) -> str:
        return self.args[0]


class ShapeError(SCMError, ValueError):
    """A value has the wrong shape for its node."""


class NonFiniteError(SCMError, ValueError):
    """A value contains NaN or infinity."""


class GraphError(SCMError, ValueError):
    """The causal graph is invalid (cyclic) or does not match the program."""


class MechanismError(SCMError, TypeError):
    """A sample site is not a mechanism, or a mechanism cannot do what a query asks."""


class InterventionError(SCMError, ValueError):
    """An intervention cannot be applied (wrong shape, wrong type)."""


class NotFittedError(SCMError, RuntimeError):
    """A query needs a fitted mechanism but the SCM was never fitted."""


class FitWarning(UserWarning):
    """A fit's result needs a second look; the warning names the node: its training diverged
    (best weights kept), the selection's ``budget_s`` cut training or skipped work, or a chosen
    flow's counterfactuals depend on its initial weights (spread above ``instability``)."""


class PersistenceError(SCMError, ValueError):
    """A saved model is corrupt or does not match the model it is loaded into."""


class DataError(SCMError, ValueError):
    """Training or factual data are malformed (wrong type, empty, inconsistent lengths)."""


class DistanceError(SCMError, TypeError):
    """A backtracking distance is not a ``Distance`` or a callable."""


class ArgumentError(SCMError, ValueError):
    """An argument of a query or of fit has an invalid value or type."""
