r"""VAE mechanisms: a node's structural equation as the decoder of a conditional β-VAE.

The encoder q(z | x, pa) = N(m(x, c), diag s(x, c)²) and the decoder p(x | z, pa) with location
μ(z, c), where c is the parents' standardised context. The structural equation is

    x = μ(z; c)                  u = z ~ N(0, I_L)                (default)
    x = clamp(μ(z; c) + σ ε)     u = (z, ε) ~ N(0, I_{L + |x|})   (``residual=True``)

Abduction takes the encoder mean ẑ = m(x, c) (DeepBC's approximation of p(z | x, pa)), or a draw
from q with ``abduction="sample"``; with the residual, ε = (x − μ(ẑ; c)) / σ is kept as well, so
``generate(abduct(x)) == x`` exactly (deepscm's choice) and a counterfactual changes only what the
new parents change in the decoder's mean. ``loss(x)`` is the negative ELBO with weight β on the
KL term; ``log_prob`` is intractable and raises.

Images are ``(C, H, W)`` events with values in [0, 1] (``bounded``): the decoder's output is a
logit, μ = sigmoid(logit), and the likelihood is Bernoulli (the usual continuous binary
cross-entropy) or Gaussian with a learnt scale σ. Vectors are real, Gaussian, μ = the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import Tensor, nn

from ..errors import DataError, MechanismError, NonFiniteError, ShapeError
from ..nets import Standardizer
from ..nets.images import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .base import Mechanism, MechanismDistribution, flatten_parents

__all__ = ["VAEDistribution", "VAEMechanism"]

_LIKELIHOODS = ("bernoulli", "gaussian")
_ABDUCTIONS = ("mean", "sample")
_RANGE_TOL = 1e-6
_EMPTY = torch.Size()


class VAEMechanism(Mechanism):
    r"""A conditional β-VAE as a mechanism: decoder x = μ(z; pa), encoder for abduction.

    Args:
        encoder: ``(x (B, *event), context (B, k) | None) -> (B, 2 * latent_dim)``: location and
            log-scale of q(z | x, pa).
        decoder: ``(z (B, latent_dim), context (B, k) | None) -> (B, *event)``: the likelihood's
            location, as a logit when ``bounded``.
        latent_dim: size L of z.
        event_shape: the node's event shape, ``(C, H, W)`` for an image.
        context: total size k of the parents (0 for a root).
        beta: weight of the KL term in the loss (β-VAE).
        likelihood: ``"bernoulli"`` (values in [0, 1]) or ``"gaussian"`` (learnt scale σ).
        bounded: values lie in [0, 1] (checked); default: True for 3-d events (images).
        residual: keep the decoder residual in the noise, so generate(abduct(x)) == x.
        abduction: ``"mean"`` (encoder mean, deterministic) or ``"sample"`` (a draw from q).
        residual_scale: σ of the residual under the Bernoulli likelihood (the Gaussian one learns
            it); only matters when fresh residual noise is sampled.
        name: the node's name, used in error messages.

    Example:
        >>> import torch
        >>> vae = VAEMechanism.conv(size=28, latent_dim=8, context=2, residual=True)
        >>> d = vae(torch.rand(5), torch.rand(5))
        >>> x = torch.rand(5, 1, 28, 28)
        >>> d.abduct(x).shape, bool((d.generate(d.abduct(x)) - x).abs().max() < 1e-5)
        (torch.Size([5, 792]), True)
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        event_shape: Sequence[int],
        *,
        context: int = 0,
        beta: float = 1.0,
        likelihood: str = "bernoulli",
        bounded: bool | None = None,
        residual: bool = False,
        abduction: str = "mean",
        residual_scale: float = 0.1,
        name: str | None = None,
    ):
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        self.bounded = len(self.event_shape) == 3 if bounded is None else bounded
        self.name = name
        if likelihood not in _LIKELIHOODS:
            raise MechanismError(f"{self._who()}: likelihood must be one of {_LIKELIHOODS}")
        if likelihood == "bernoulli" and not self.bounded:
            raise MechanismError(f"{self._who()}: a Bernoulli likelihood needs bounded values")
        if latent_dim < 1 or beta < 0 or residual_scale <= 0:
            raise MechanismError(
                f"{self._who()}: needs latent_dim >= 1, beta >= 0 and residual_scale > 0"
            )
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.context_features, self.beta = latent_dim, context, beta
        self.likelihood, self.residual = likelihood, residual
        self.abduction = abduction
        self.c_std = Standardizer(max(context, 1))
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))
        else:
            self.register_buffer("_residual_scale", torch.tensor(float(residual_scale)))

    # -- ready-made networks ----------------------------------------------------------------

    @classmethod
    def conv(
        cls,
        size: int = 28,
        channels: int = 1,
        latent_dim: int = 16,
        context: int = 0,
        *,
        width: int = 32,
        hidden: int = 256,
        **kwargs,
    ) -> VAEMechanism:
        """A VAE over ``(channels, size, size)`` images in [0, 1] (size 28 or 32) with the
        convolutional networks of :mod:`pyro_scm.nets.images`; ``kwargs`` go to the constructor."""
        _check_latent(latent_dim)
        net = {"size": size, "channels": channels, "context": context, "width": width}
        return cls(
            ConvEncoder(latent_dim, hidden=hidden, **net),
            ConvDecoder(latent_dim, hidden=hidden, **net),
            latent_dim,
            (channels, size, size),
            context=context,
            **kwargs,
        )

    @classmethod
    def mlp(
        cls,
        features: int,
        latent_dim: int = 4,
        context: int = 0,
        *,
        hidden: Sequence[int] = (64, 64),
        event_shape: Sequence[int] | None = None,
        **kwargs,
    ) -> VAEMechanism:
        """A VAE over real vectors ``(features,)`` (or ``event_shape``) with MLPs and a Gaussian
        likelihood; ``kwargs`` go to the constructor."""
        _check_latent(latent_dim)
        kwargs.setdefault("likelihood", "gaussian")
        kwargs.setdefault("bounded", False)
        return cls(
            MLPEncoder(features, latent_dim, context, hidden),
            MLPDecoder(features, latent_dim, context, hidden),
            latent_dim,
            (features,) if event_shape is None else event_shape,
            context=context,
            **kwargs,
        )

    # -- the mechanism protocol ---------------------------------------------------------------

    @property
    def abduction(self) -> str:
        """``"mean"`` or ``"sample"``: how :meth:`VAEDistribution.abduct` picks z."""
        return self._abduction

    @abduction.setter
    def abduction(self, value: str) -> None:
        if value not in _ABDUCTIONS:
            raise MechanismError(f"{self._who()}: abduction must be one of {_ABDUCTIONS}")
        self._abduction = value

    @property
    def noise_features(self) -> int:
        """Size of the noise vector u: L, plus the image's size with the residual."""
        return self.latent_dim + (self.event_shape.numel() if self.residual else 0)

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        """Check the training values ``(n, *event)`` and standardise the parents' context."""
        self.check_values(value)
        context, _ = flatten_parents(parents, self.context_features)
        if context is not None:
            self.c_std.fit(context)

    def forward(self, *parents: Tensor) -> VAEDistribution:
        """The node's distribution given its parents' values."""
        context, batch_shape = flatten_parents(parents, self.context_features)
        if context is not None:
            context = self.c_std(context)
        return VAEDistribution(self, context, batch_shape)

    def sigma(self) -> Tensor:
        """Scale of the residual: the learnt Gaussian σ, else ``residual_scale``."""
        if self.likelihood == "gaussian":
            return self.log_sigma.clamp(min=math.log(1e-3)).exp()
        return self._residual_scale

    def check_values(self, x: Tensor) -> None:
        """Raise a typed error if ``x`` is not ``(*batch, *event)`` or, when bounded, not in
        [0, 1].

        Raises:
            ShapeError: wrong trailing shape. NonFiniteError: NaN or infinity.
            DataError: a bounded value outside [0, 1].
        """
        n = len(self.event_shape)
        if not torch.is_tensor(x) or x.dim() < n or x.shape[x.dim() - n :] != self.event_shape:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            event = ", ".join(map(str, self.event_shape))
            raise ShapeError(f"{self._who()} expects values of shape (*batch, {event}), got {got}")
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{self._who()}: values contain NaN or infinity")
        if self.bounded and x.numel():
            low, high = float(x.min()), float(x.max())
            if low < -_RANGE_TOL or high > 1 + _RANGE_TOL:
                raise DataError(
                    f"{self._who()}: values must be in [0, 1], got [{low:.4g}, {high:.4g}]; "
                    "divide 0-255 images by 255"
                )

    def _who(self) -> str:
        return f"node {self.name!r} (vae)" if getattr(self, "name", None) else "the VAE mechanism"


def _check_latent(latent_dim: int) -> None:
    if latent_dim < 1:
        raise MechanismError(f"a VAE mechanism needs latent_dim >= 1, got {latent_dim}")


class VAEDistribution(MechanismDistribution, dist.TorchDistribution):
    """The distribution a :class:`VAEMechanism` returns for fixed parents.

    Noise ``u`` is ``(*batch, noise_features)``: z first, then the flattened standardised
    residual when the mechanism keeps one (:meth:`split_noise` separates them).
    """

    has_rsample = True

    def __init__(self, mechanism: VAEMechanism, context: Tensor | None, batch_shape: torch.Size):
        self.mechanism, self.context = mechanism, context
        self.deterministic_abduction = mechanism.abduction == "mean"
        super().__init__(torch.Size(batch_shape), mechanism.event_shape, validate_args=False)

    @property
    def support(self):
        base = constraints.unit_interval if self.mechanism.bounded else constraints.real
        return constraints.independent(base, len(self.mechanism.event_shape))

    @property
    def noise(self) -> dist.Distribution:
        like = self.mechanism._anchor()
        zeros = torch.zeros((), dtype=like.dtype, device=like.device)
        shape = (*self.batch_shape, self.mechanism.noise_features)
        return dist.Normal(zeros, 1.0).expand(shape).to_event(1)

    # -- networks over arbitrary batch shapes -----------------------------------------------

    def _apply(self, net: nn.Module, a: Tensor, event_ndim: int) -> Tensor:
        """``net`` on ``a`` ``(*b, *e)`` with the context broadcast to ``*b``: ``(*b, *out)``."""
        a_batch = a.shape[: a.dim() - event_ndim]
        event = a.shape[a.dim() - event_ndim :]
        context = self.context
        batch = a_batch
        if context is not None:
            batch = torch.broadcast_shapes(a_batch, context.shape[:-1])
            context = context.expand(*batch, context.shape[-1]).reshape(-1, context.shape[-1])
        out = net(a.expand(*batch, *event).reshape(-1, *event), context)
        return out.reshape(*batch, *out.shape[1:])

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Location and scale of q(z | x, pa), each ``(*batch, L)``."""
        mech = self.mechanism
        out = self._apply(mech.encoder, x, len(mech.event_shape))
        if out.shape[-1] != 2 * mech.latent_dim:
            raise ShapeError(
                f"{mech._who()}: the encoder returned {out.shape[-1]} features per unit; "
                f"expected 2 * latent_dim = {2 * mech.latent_dim}"
            )
        loc, log_scale = out.chunk(2, dim=-1)
        return loc, log_scale.clamp(-10.0, 5.0).exp()

    def decode_logits(self, z: Tensor) -> Tensor:
        """The decoder's raw output ``(*batch, *event)`` for latents ``(*batch, L)``."""
        mech = self.mechanism
        out = self._apply(mech.decoder, z, 1)
        if out.shape[z.dim() - 1 :] != mech.event_shape:
            raise ShapeError(
                f"{mech._who()}: the decoder returned units of shape "
                f"{tuple(out.shape[z.dim() - 1 :])}; expected {tuple(mech.event_shape)}"
            )
        return out

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's mean μ(z; pa) ``(*batch, *event)``."""
        out = self.decode_logits(z)
        return torch.sigmoid(out) if self.mechanism.bounded else out

    # -- the protocol -------------------------------------------------------------------------

    def split_noise(self, u: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(z (*batch, L), ε (*batch, *event) or None)`` from the noise ``u``."""
        mech = self.mechanism
        if u.shape[-1] != mech.noise_features:
            raise ShapeError(
                f"{mech._who()}: noise must have {mech.noise_features} features, got {u.shape[-1]}"
            )
        z = u[..., : mech.latent_dim]
        if not mech.residual:
            return z, None
        return z, u[..., mech.latent_dim :].reshape(*u.shape[:-1], *mech.event_shape)

    def generate(self, u: Tensor) -> Tensor:
        """x = μ(z; pa) (+ σ ε, clamped to [0, 1] when bounded); differentiable in u."""
        z, eps = self.split_noise(u)
        x = self.decode(z)
        if eps is not None:
            x = x + self.mechanism.sigma() * eps
            if self.mechanism.bounded:
                x = x.clamp(0.0, 1.0)
        return x

    def abduct(self, x: Tensor) -> Tensor:
        """u = (encoder mean, or a draw from q) and, with the residual, (x − μ(z; pa)) / σ."""
        mech = self.mechanism
        mech.check_values(x)
        loc, scale = self.encode(x)
        z = loc if mech.abduction == "mean" else loc + scale * torch.randn_like(loc)
        if not mech.residual:
            return z
        eps = (x - self.decode(z)) / mech.sigma()
        return torch.cat([z, eps.reshape(*eps.shape[: z.dim() - 1], -1)], dim=-1)

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO per unit ``(*batch,)``: reconstruction + β · KL(q(z | x, pa) ‖ N(0, I))."""
        mech = self.mechanism
        mech.check_values(x)
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn_like(loc)
        out = self.decode_logits(z)
        x = x.expand(out.shape)
        dims = tuple(range(-len(mech.event_shape), 0))
        if mech.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            mean = torch.sigmoid(out) if mech.bounded else out
            sigma = mech.sigma()
            recon = 0.5 * ((x - mean) / sigma).square() + sigma.log() + 0.5 * math.log(2 * math.pi)
        recon = recon.sum(dims) if dims else recon
        kl = 0.5 * (loc.square() + scale.square() - 1.0 - 2.0 * scale.log()).sum(-1)
        return recon + mech.beta * kl

    def log_prob(self, x: Tensor) -> Tensor:
        """Intractable for a VAE: raises; ``-loss(x)`` is a lower bound (the ELBO)."""
        raise MechanismError(
            f"{self.mechanism._who()}: log p(x | pa) of a VAE is intractable; "
            "use -loss(x), the evidence lower bound"
        )

    def rsample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        """x = generate(u) for fresh noise ``(*sample_shape, *batch, noise_features)``."""
        return self.generate(self.noise.rsample(sample_shape))

    def sample(self, sample_shape: torch.Size = _EMPTY) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
