r"""Diffusion mechanisms (Diff-SCM, Sanchez & Tsaftaris 2022): x = DDIM(u; pa), u = x_T.

Generation runs the DDIM ODE from u under the parents; abduction inverts it under the factual
parents (the maths and the two ways parents enter are in :mod:`.mechanism`).

The package: :mod:`.schedule` (noise schedules, timestep sequences, query-time settings),
:mod:`.ddim` (the DDIM ODE), :mod:`.mechanism` (the module) and :mod:`.distribution` (what it
returns under fixed parents).
"""

from .ddim import ddim
from .distribution import DiffusionDistribution
from .mechanism import DiffusionMechanism
from .schedule import cfg_scale, guidance_scale, noise_schedule, sampling_steps, timestep_sequence

__all__ = [
    "DiffusionDistribution",
    "DiffusionMechanism",
    "cfg_scale",
    "ddim",
    "guidance_scale",
    "noise_schedule",
    "sampling_steps",
    "timestep_sequence",
]
