"""pyro_scm: deep structural causal models as Pyro programs.

Write an SCM as a Pyro program over neural mechanisms; ask it observational, interventional
and counterfactual queries; analyse the answers in arviz and pandas.
"""

from . import _zuko  # noqa: F401, I001  (first: keeps torch's distribution validation setting)
from . import distances, errors, extrapolation, infer, selection, sharded
from .graph import plot_graph
from .mechanisms import (
    CategoricalMechanism,
    DiffusionMechanism,
    EquationMechanism,
    FlowMechanism,
    HVAEMechanism,
    LocScaleMechanism,
    Mechanism,
    MechanismDistribution,
    VAEMechanism,
)
from .plotting import plot_image_grid, plot_scatter
from .results import QueryResult
from .scm import SCM, GraphSCM, Intervened, from_graph
from .validation import constant
from .selection import select_mechanisms

__version__ = "0.1.0"

__all__ = [
    "SCM",
    "CategoricalMechanism",
    "DiffusionMechanism",
    "EquationMechanism",
    "FlowMechanism",
    "GraphSCM",
    "HVAEMechanism",
    "Intervened",
    "LocScaleMechanism",
    "Mechanism",
    "MechanismDistribution",
    "QueryResult",
    "VAEMechanism",
    "__version__",
    "constant",
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
    "sharded",
]


def __getattr__(name: str):
    """``pyro_scm.lightning`` on first use (it imports Lightning, an optional extra)."""
    if name == "lightning":
        import importlib

        return importlib.import_module(".lightning", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
