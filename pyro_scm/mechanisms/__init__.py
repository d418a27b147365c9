"""Mechanisms: modules that return, given their parents, a distribution over their node."""

from .base import Mechanism, MechanismDistribution, TransformedMechanismDistribution
from .categorical import CategoricalMechanism, GumbelMaxDistribution
from .diffusion import (
    DiffusionDistribution,
    DiffusionMechanism,
    cfg_scale,
    guidance_scale,
    sampling_steps,
)
from .equation import Equation, EquationDistribution, EquationMechanism
from .flow import FlowDistribution, FlowMechanism
from .hvae import HVAEDistribution, HVAEMechanism
from .locscale import LocScaleMechanism
from .vae import VAEDistribution, VAEMechanism

__all__ = [
    "CategoricalMechanism",
    "DiffusionDistribution",
    "DiffusionMechanism",
    "Equation",
    "EquationDistribution",
    "EquationMechanism",
    "FlowDistribution",
    "FlowMechanism",
    "GumbelMaxDistribution",
    "HVAEDistribution",
    "HVAEMechanism",
    "LocScaleMechanism",
    "Mechanism",
    "MechanismDistribution",
    "TransformedMechanismDistribution",
    "VAEDistribution",
    "VAEMechanism",
    "cfg_scale",
    "guidance_scale",
    "sampling_steps",
]
