"""Metrics: distances between samples, counterfactual errors, and query-specific scores.

One module per family: :mod:`~pyro_scm.metrics.tabular` (MMD, counterfactual and ATE errors,
held-out likelihood), :mod:`~pyro_scm.metrics.images` (image counterfactuals: effectiveness,
composition, realism, latent divergence), :mod:`~pyro_scm.metrics.backtracking`
(DeepBC's plausible, obs and causal metrics), :mod:`~pyro_scm.metrics.diffusion` (Diff-SCM's
CLD, IM1 and IM2).
"""

from .backtracking import *  # noqa: F403
from .backtracking import __all__ as _backtracking
from .diffusion import *  # noqa: F403
from .diffusion import __all__ as _diffusion
from .images import *  # noqa: F403
from .images import __all__ as _images
from .tabular import *  # noqa: F403
from .tabular import __all__ as _tabular

__all__ = [*_tabular, *_images, *_backtracking, *_diffusion]
