"""Building an SCM from a declared graph: one learned mechanism per node, in topological order.

The pieces live in the layers below (``pyro_scm.mechanisms.factory`` makes each node's mechanism,
``pyro_scm.scm`` holds :class:`GraphSCM` and :meth:`SCM.from_graph`); this module gathers them
under their historical import path. It imports ``scm``, never the other way round.
"""

from __future__ import annotations

from .mechanisms.factory import DEFAULT_HIDDEN, MechanismFactory, default_hidden, make_mechanism
from .scm import SCM, GraphSCM, from_graph

__all__ = [
    "DEFAULT_HIDDEN",
    "SCM",
    "GraphSCM",
    "MechanismFactory",
    "default_hidden",
    "from_graph",
    "make_mechanism",
]
