"""pyro_scm: deep structural causal models as Pyro programs.

Write an SCM as a Pyro program over neural mechanisms; ask it observational, interventional
and counterfactual queries; analyse the answers in arviz and pandas.
"""

from . import distances, errors, extrapolation, infer, selection
from .builders import GraphSCM, from_graph
from .graph import plot_graph
from .mechanisms import (
    CategoricalMechanism,
    DiffusionMechanism,
    FlowMechanism,
    LocScaleMechanism,
    Mechanism,
    MechanismDistribution,
    VAEMechanism,
)
from .plotting import plot_image_grid, plot_scatter
from .results import QueryResult
from .scm import SCM, Intervened
from .selection import select_mechanisms

__version__ = "0.1.0"

__all__ = [
    "SCM",
    "CategoricalMechanism",
    "DiffusionMechanism",
    "FlowMechanism",
    "GraphSCM",
    "Intervened",
    "LocScaleMechanism",
    "Mechanism",
    "MechanismDistribution",
    "QueryResult",
    "VAEMechanism",
    "__version__",
    "distances",
    "errors",
    "extrapolation",
    "from_graph",
    "infer",
    "plot_graph",
    "plot_image_grid",
    "plot_scatter",
    "select_mechanisms",
    "selection",
]
