r"""The diffusion mechanism (Diff-SCM, Sanchez & Tsaftaris 2022): x = DDIM(u; pa) with u = x_T.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ...errors import MechanismError, ShapeError
from ..base import Mechanism, flatten_parents
from .ddim import ddim
from .distribution import DiffusionDistribution
from .schedule import (
    _check_steps,
    current_cfg_override,
    current_scale_override,
    current_steps_override,
    noise_schedule,
    timestep_sequence,
)

__all__ = ["DiffusionMechanism"]


class DiffusionMechanism(Mechanism):
    r"""A diffusion mechanism x = DDIM(u; pa), u = x_T ~ N(0, I).

    Args:
        eps_net: the ε-network ``(x_t (B, *event'), t (B,), context (B, C) | None) -> ε``, where
            ``event'`` is the node's event shape (``(1,)`` for a scalar node) and t holds float
            timestep indices; see :mod:`pyro_scm.nets.diffusion` for ready ones.
        event_shape: the node's event shape: ``()``, ``(d,)`` or ``(C, H, W)``.
        context: total size of the parents (0 for a root).
        conditional: whether ``eps_net`` takes the parents (default: when there are parents and
            no predictor).
        predictor: an anti-causal predictor ``(x_t, t) -> (B, K)`` logits (categorical) or
            ``(B, 2 C)`` mean and log-scale (gaussian) of the parents; trained in :meth:`loss`.
        predictor_kind: ``"categorical"`` (the parents are one one-hot vector) or ``"gaussian"``.
        guidance_scale: s of Algorithm 1 (needs a predictor when > 0).
        cfg_scale: classifier-free guidance weight w (needs a conditional ε-network and
            ``cond_drop > 0``).
        cond_drop: probability of dropping the parents in training (classifier-free guidance).
        timesteps: T of the diffusion.
        schedule: ``"linear"`` or ``"cosine"``.
        beta_start, beta_end: the linear schedule's end points.
        steps: DDIM steps used by ``generate``/``abduct`` (default T); overridden by
            :func:`sampling_steps`.
        weighted: weight the loss by 1 - ᾱ_t as the paper's Eq. 1 (default: L_simple).
        guided_abduction: abduct with the guided ε̂ under the factual parents, or (default)
            with the unguided ε_θ (Algorithm 1 verbatim). Classifier-free guidance is part of
            ε_θ and is always used.
        standardize: standardise the node's values with statistics learnt in ``prepare``
            (default: per feature for vectors, one scalar for images).
        checkpoint: recompute each ε evaluation in the backward pass (saves memory when
            differentiating through ``generate``).
        clip_denoised: clip each step's prediction of x₀ to the range of the training data, per
            feature for vectors, over all pixels for images, in generation (as image diffusion
            models do). It stabilises sampling from the prior with a weak ε-network, but breaks
            the round trip with abduction where it bites: use it for interventional sampling,
            not for counterfactuals (it is an attribute, settable at query time).
        progress: show a progress bar over DDIM steps.

    Example:
        >>> import torch
        >>> from pyro_scm.nets.diffusion import TimeMLP
        >>> mech = DiffusionMechanism(TimeMLP(2, context=1), event_shape=(2,), context=1)
        >>> d = mech(torch.randn(5))
        >>> d.generate(d.noise.sample()).shape
        torch.Size([5, 2])
    """

    #: the denoising loss is a noisy estimate even with its validation draws fixed
    #: (:meth:`DiffusionDistribution.loss`): on the non-additive DCM triangle a diffusion x3
    #: stopped by ``fit``'s patience of 5 scored counterfactual MSE (x100) 19-49 on do(x2),
    #: against 14-30 trained on (its validation loss still falling at epoch 190;
    #: ``docs/accuracy.md``).
    min_patience = 20
    #: training draws t and ε per unit (:meth:`DiffusionDistribution.loss`)
    random_loss = True

    def __init__(
        self,
        eps_net: nn.Module,
        event_shape: Sequence[int] = (),
        *,
        context: int = 0,
        conditional: bool | None = None,
        predictor: nn.Module | None = None,
        predictor_kind: Literal["categorical", "gaussian"] = "categorical",
        guidance_scale: float = 0.0,
        cfg_scale: float = 0.0,
        cond_drop: float = 0.0,
        timesteps: int = 100,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        steps: int | None = None,
        weighted: bool = False,
        guided_abduction: bool = False,
        standardize: bool = True,
        checkpoint: bool = False,
        clip_denoised: bool = False,
        progress: bool = False,
    ):
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        self.net_event = self.event_shape if self.event_shape else torch.Size([1])
        self.eps_net, self.predictor = eps_net, predictor
        self.context_features = int(context)
        if conditional is None:
            conditional = self.context_features > 0 and predictor is None
        self.conditional = bool(conditional)
        self.predictor_kind = predictor_kind
        self.guidance_scale, self.cfg_scale, self.cond_drop = guidance_scale, cfg_scale, cond_drop
        self.timesteps, self.weighted = int(timesteps), weighted
        self.guided_abduction, self.checkpoint, self.progress = (
            guided_abduction,
            checkpoint,
            progress,
        )
        self._check_config()
        self.steps = steps
        betas = noise_schedule(schedule, self.timesteps, beta_start, beta_end)
        abar = torch.cumprod(1 - betas, 0).to(torch.get_default_dtype())
        self.register_buffer("alphas_cumprod", abar)
        self.standardize = standardize
        std_shape = self.net_event if len(self.net_event) == 1 else torch.Size()
        self.register_buffer("x_loc", torch.zeros(std_shape))
        self.register_buffer("x_scale", torch.ones(std_shape))
        self.clip_denoised = clip_denoised
        self.register_buffer("x_min", torch.full(std_shape, -math.inf))
        self.register_buffer("x_max", torch.full(std_shape, math.inf))
        self.register_buffer("c_loc", torch.zeros(max(self.context_features, 1)))
        self.register_buffer("c_scale", torch.ones(max(self.context_features, 1)))

    def _check_config(self) -> None:
        if self.predictor_kind not in ("categorical", "gaussian"):
            raise MechanismError(
                f"predictor_kind must be 'categorical' or 'gaussian', got {self.predictor_kind!r}"
            )
        if self.guidance_scale < 0 or self.cfg_scale < 0 or not 0 <= self.cond_drop < 1:
            raise MechanismError("guidance_scale and cfg_scale must be >= 0, cond_drop in [0, 1)")
        if self.predictor is None and self.guidance_scale > 0:
            raise MechanismError(
                "guidance_scale > 0 needs an anti-causal predictor; pass predictor=..."
            )
        if self.context_features == 0 and (self.predictor is not None or self.conditional):
            raise MechanismError("a root diffusion mechanism (context=0) takes no predictor")
        if self.context_features > 0 and not self.conditional and self.predictor is None:
            raise MechanismError(
                "the mechanism would ignore its parents: pass conditional=True or a predictor"
            )
        if self.cfg_scale > 0 and not (self.conditional and self.cond_drop > 0):
            raise MechanismError(
                "classifier-free guidance needs conditional=True and cond_drop > 0 in training"
            )

    @property
    def steps(self) -> int | None:
        """DDIM steps of ``generate``/``abduct`` (None: every timestep)."""
        return self._steps

    @steps.setter
    def steps(self, k: int | None) -> None:
        if k is not None:
            _check_steps(k)
            timestep_sequence(self.timesteps, k)
        self._steps = k

    def current_steps(self) -> int:
        """The steps in force: :func:`sampling_steps`, else ``steps``, else T."""
        k = current_steps_override() or self._steps or self.timesteps
        timestep_sequence(self.timesteps, k)  # checks k <= T
        return k

    def current_scale(self) -> float:
        """The guidance scale in force: :func:`guidance_scale`, else ``guidance_scale``."""
        override = current_scale_override()
        if override is not None and self.predictor is not None:
            return override
        return self.guidance_scale

    def current_cfg(self) -> float:
        """The classifier-free guidance weight in force: :func:`cfg_scale` (when the mechanism
        was trained for it), else ``cfg_scale``."""
        override = current_cfg_override()
        if override is not None and self.conditional and self.cond_drop > 0:
            return override
        return self.cfg_scale

    @torch.no_grad()
    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        """Learn the standardisation of the node ``(n, *event)`` and of its context."""
        if self.standardize:
            x = value.reshape(-1, *self.net_event).to(self.x_loc)
            dims = 0 if self.x_loc.dim() == 1 else None
            loc = x.mean(dims) if dims is not None else x.mean()
            scale = x.std(dims) if dims is not None else x.std()
            self.x_loc.copy_(loc)
            self.x_scale.copy_(torch.where(scale > 0, scale, torch.ones_like(scale)))
        z = self.to_net(value.to(self.x_loc)).reshape(-1, *self.net_event)
        per_feature = self.x_min.dim() == 1
        self.x_min.copy_(z.amin(0) if per_feature else z.min())
        self.x_max.copy_(z.amax(0) if per_feature else z.max())
        context, _ = flatten_parents(parents, self.context_features or None)
        if context is not None:
            c = context.reshape(-1, self.context_features).to(self.c_loc)
            std = c.std(0) if c.shape[0] > 1 else torch.ones_like(self.c_loc)
            self.c_loc.copy_(c.mean(0))
            self.c_scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, *parents: Tensor) -> DiffusionDistribution:
        """The node's distribution given its parents' values."""
        context, batch_shape = flatten_parents(parents, self.context_features or None)
        if (context is None) != (self.context_features == 0):
            raise ShapeError(
                f"the diffusion mechanism expects {self.context_features} context features, "
                f"got parents of shapes {[tuple(torch.as_tensor(p).shape) for p in parents]}"
            )
        return DiffusionDistribution(self, context, batch_shape)

    # -- the pieces the distribution composes -------------------------------------------------

    def eps(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        """ε_θ of the standardised ``x`` ``(B, *event')`` at timesteps ``t`` ``(B,)``."""
        c = context if self.conditional else None
        if self.checkpoint and torch.is_grad_enabled():
            return checkpoint(self.eps_net, x, t, c, use_reentrant=False)
        return self.eps_net(x, t, c)

    def log_predictor(self, x: Tensor, t: Tensor, target: Tensor) -> Tensor:
        """log p_φ(pa | x_t, t) per unit ``(B,)``.

        ``target``: ``(B, C)``, the one-hot parents (categorical) or the standardised ones
        (gaussian).
        """
        out = self.predictor(x, t)
        if self.predictor_kind == "categorical":
            if out.shape[-1] != target.shape[-1]:
                raise ShapeError(
                    f"the predictor gives {out.shape[-1]} logits for {target.shape[-1]} classes"
                )
            return (F.log_softmax(out, -1) * target).sum(-1)
        mean, log_scale = out.chunk(2, dim=-1)
        z = (target - mean) * torch.exp(-log_scale)
        return (-0.5 * z.square() - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)

    def guided_eps(
        self, x: Tensor, t: Tensor, context: Tensor | None, target: Tensor | None, guided: bool
    ) -> Tensor:
        """ε̂ of Algorithm 1 (and classifier-free guidance): ``(B, *event')``."""
        eps = self.eps(x, t, context)
        w = self.current_cfg()
        if self.conditional and w > 0 and context is not None:
            eps = (1 + w) * eps - w * self.eps(x, t, None)
        s = self.current_scale()
        if not guided or s == 0 or self.predictor is None:
            return eps
        abar = self.alphas_cumprod[t.long()].reshape(-1, *[1] * len(self.net_event))
        return eps - s * (1 - abar).sqrt() * self._grad_log_p(x, t, target)

    def _grad_log_p(self, x: Tensor, t: Tensor, target: Tensor) -> Tensor:
        """∇_x log p_φ(target | x, t), differentiable when the caller needs gradients."""
        outer = torch.is_grad_enabled() and x.requires_grad
        with torch.enable_grad():
            xg = x if outer else x.detach().requires_grad_(True)
            log_p = self.log_predictor(xg, t, target).sum()
            (grad,) = torch.autograd.grad(log_p, xg, create_graph=outer)
        return grad

    def ddim(
        self,
        x: Tensor,
        context: Tensor | None,
        target: Tensor | None,
        *,
        invert: bool,
        guided: bool = True,
    ) -> Tensor:
        """Run DDIM on standardised ``x`` ``(B, *event')``: x_T -> x_0, or x_0 -> x_T if ``invert``.

        ``context`` is the standardised context ``(B, C)``, ``target`` the raw parents.
        """
        seq = timestep_sequence(self.timesteps, self.current_steps())
        return ddim(
            lambda x_t, t: self.guided_eps(x_t, t, context, target, guided),
            x,
            self.alphas_cumprod,
            seq,
            invert=invert,
            clip=(self.x_min, self.x_max) if self.clip_denoised else None,
            progress=self.progress,
        )

    def to_net(self, x: Tensor) -> Tensor:
        """Standardise node values ``(*batch, *event)`` -> ``(*batch, *event')``."""
        x = x.reshape(*x.shape[: x.dim() - len(self.event_shape)], *self.net_event)
        return (x - self.x_loc) / self.x_scale if self.standardize else x

    def from_net(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_net`."""
        x = z * self.x_scale + self.x_loc if self.standardize else z
        return x.reshape(*x.shape[: x.dim() - len(self.net_event)], *self.event_shape)
