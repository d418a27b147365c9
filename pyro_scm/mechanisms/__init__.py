"""Mechanisms: modules that return, given their parents, a distribution over their node."""

from .base import Mechanism, MechanismDistribution, TransformedMechanismDistribution
from .categorical import CategoricalMechanism, GumbelMaxDistribution
from .flow import FlowDistribution, FlowMechanism
from .locscale import LocScaleMechanism
from .vae import VAEDistribution, VAEMechanism

__all__ = [
    "CategoricalMechanism",
    "FlowDistribution",
    "FlowMechanism",
    "GumbelMaxDistribution",
    "LocScaleMechanism",
    "Mechanism",
    "MechanismDistribution",
    "TransformedMechanismDistribution",
    "VAEDistribution",
    "VAEMechanism",
]
