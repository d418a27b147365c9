"""Inference over exogenous noise: backtracking counterfactuals (mode and stochastic DeepBC).

- :func:`backtrack`: the query (``SCM.backtrack`` calls it);
- :class:`ReducedForm`: x = F(u) around a factual, with per-unit Jacobians;
- :func:`solve_linearized`, :func:`solve_gradient`: mode DeepBC solvers;
- :class:`LangevinKernel`, :func:`MALA`: Langevin kernels for ``pyro.infer.MCMC``;
- :func:`backtracking_model`: the Pyro model of stochastic DeepBC.
"""

from .backtrack import BacktrackingWarning, SamplerWarning, backtrack
from .kernels import MALA, HMCKernel, LangevinKernel
from .mode import ModeSolution, solve_gradient, solve_linearized
from .reduced_form import ReducedForm, Relax, RelaxedGumbelMax
from .stochastic import backtracking_model

__all__ = [
    "MALA",
    "BacktrackingWarning",
    "HMCKernel",
    "LangevinKernel",
    "ModeSolution",
    "ReducedForm",
    "Relax",
    "RelaxedGumbelMax",
    "SamplerWarning",
    "backtrack",
    "backtracking_model",
    "solve_gradient",
    "solve_linearized",
]
