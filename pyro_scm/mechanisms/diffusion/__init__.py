r"""Diffusion mechanisms (Diff-SCM, Sanchez & Tsaftaris 2022): x = DDIM(u; pa) with u = x_T.

A denoising network ε_θ(x_t, t[, pa]) is trained with the DDPM loss (the paper's Eq. 1)

    E_{t, x_0, ε} w_t ‖ε_θ(√ᾱ_t x_0 + √(1 - ᾱ_t) ε, t) - ε‖²

(w_t = 1, Ho et al.'s L_simple, by default; ``weighted=True`` uses the paper's w_t = 1 - ᾱ_t).
The exogenous noise is the DDIM latent u = x_T ~ N(0, I) of the node's event shape:

- ``generate(u)``: DDIM sampling (Algorithm 2) from x_T = u under the parents;
- ``abduct(x)``: DDIM inversion (Algorithm 3) from x_0 = x under the factual parents.

Both run the deterministic DDIM ODE on ``k`` sub-sampled timesteps, chosen at query time
(``mechanism.steps``, or ``with sampling_steps(k):`` for every diffusion mechanism at once).

Parents enter in one or both of two ways:

(a) a conditional ε-network ε_θ(x_t, t, pa), with optional classifier-free guidance
    ε̂ = (1 + w) ε_θ(x_t, t, pa) - w ε_θ(x_t, t, ∅) (``cfg_scale`` w, trained by dropping the
    parents with probability ``cond_drop``);
(b) an unconditional ε-network guided by a time-dependent anti-causal predictor p_φ(pa | x_t, t),
    trained in the same loss: ε̂ = ε_θ(x_t, t) - s √(1 - ᾱ_t) ∇_{x_t} log p_φ(pa | x_t, t)
    (Algorithm 1, scale ``guidance_scale`` s). Categorical parents (one-hot) use a softmax
    predictor, continuous ones a Gaussian predictor of the standardised parents.

Abduction inverts the unguided ODE, exactly as the paper's Algorithm 1, so a counterfactual
with s = 0 reconstructs the factual; ``guided_abduction=True`` inverts the guided ODE under the
factual parents instead, so that generate(abduct(x)) ≈ x under the factual parents for any s.

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
