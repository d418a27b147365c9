"""Image counterfactual metrics (Monteiro et al. 2023; Diff-SCM § 5): effectiveness,
composition, minimality (CLD) and realism (a Fréchet distance).

- effectiveness: the counterfactual image measured by an oracle (Morpho-MNIST's thickness and
  intensity, a digit classifier) against the value the intervention asked for;
- composition: the null intervention x → f(f⁻¹(x); pa) applied once and ten times, L1 to x;
- minimality: the counterfactual latent divergence (CLD, Diff-SCM eq. 10) in the latent space of
  a reference VAE trained on the images;
- realism: the Fréchet distance between classifier features of counterfactual and real images.

Images are ``(n, C, H, W)`` in [0, 1] (extra leading sample dimensions are flattened).
"""

from __future__ import annotations

import numpy as np
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import to_node_tensors
from ..errors import DataError, ShapeError, UnknownNodeError
from ..handlers import as_mechanism
from ..nets.metrics import DigitClassifier

__all__ = [
    "DigitClassifier",
    "composition",
    "counterfactual_latent_divergence",
    "digit_accuracy",
    "effectiveness",
    "frechet_distance",
    "realism",
    "train_digit_classifier",
    "train_reference_vae",
]


def _images(images: Tensor, name: str = "images") -> Tensor:
    """``(..., C, H, W)`` in [0, 1] as ``(n, C, H, W)``."""
    x = torch.as_tensor(images)
    if x.dim() < 4:
        raise ShapeError(f"{name}: expected (n, C, H, W) images, got shape {tuple(x.shape)}")
    x = x.reshape(-1, *x.shape[-3:])
    if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise DataError(f"{name}: pixel values must be in [0, 1]; divide 0-255 images by 255")
    return x


def _labels(labels: Tensor, n: int, name: str = "labels") -> Tensor:
    """Class indices ``(n,)`` from indices or one-hot ``(..., K)``."""
    y = torch.as_tensor(labels)
    if y.is_floating_point() and y.dim() >= 2:
        y = y.argmax(-1)
    y = y.reshape(-1).long()
    if y.numel() != n:
        raise ShapeError(f"{name}: expected {n} labels, got {y.numel()}")
    return y


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


def train_digit_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int = 10,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on ``images`` ``(n, C, H, W)`` in [0, 1] and labels
    (indices or one-hot); returns it in eval mode on the images' device."""
    x = _images(images)
    y = _labels(labels, x.shape[0])
    torch.manual_seed(seed)
    model = DigitClassifier(x.shape[1], num_classes).to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="classifier", disable=not progress, leave=False):
        for idx in _batches(x.shape[0], batch_size, generator):
            idx = idx.to(x.device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def digit_accuracy(classifier: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of ``images`` the classifier assigns to ``labels`` (indices or one-hot)."""
    x = _images(images)
    y = _labels(labels, x.shape[0]).to(x.device)
    return float((classifier(x).argmax(-1) == y).float().mean())


# --------------------------------------------------------------------------- effectiveness


def effectiveness(
    images: Tensor,
    intended: dict[str, Tensor],
    *,
    classifier: nn.Module | None = None,
) -> dict[str, float]:
    """How well counterfactual images show the attributes they were given.

    Args:
        images: counterfactual images ``(..., 1, H, W)`` in [0, 1].
        intended: any of ``"thickness"`` (pixels), ``"intensity"`` (0–255), each ``(n,)``, and
            ``"digit"`` (indices or one-hot), one per image.
        classifier: scores the digit (needed when ``"digit"`` is given).

    Returns:
        ``thickness_mae``, ``intensity_mae`` (mean absolute error of the Morpho-MNIST
        measurement against the intended value; blank images are skipped and counted in
        ``blank``), ``digit_accuracy``; only the keys asked for.
    """
    from ..datasets.morpho_mnist import measure_intensity, measure_thickness

    x = _images(images)
    out: dict[str, float] = {}
    measures = {"thickness": measure_thickness, "intensity": measure_intensity}
    for key, value in intended.items():
        if key in measures:
            target = torch.as_tensor(value, dtype=torch.float64).reshape(-1).cpu()
            if target.numel() != x.shape[0]:
                raise ShapeError(f"intended {key}: expected {x.shape[0]} values")
            measured = measures[key](255.0 * x.cpu().double())
            ok = ~measured.isnan()
            out[f"{key}_mae"] = float((measured[ok] - target[ok]).abs().mean())
            out["blank"] = float((~ok).sum())
        elif key == "digit":
            if classifier is None:
                raise DataError("digit effectiveness needs a classifier")
            out["digit_accuracy"] = digit_accuracy(classifier, x, value)
        else:
            raise UnknownNodeError(key, ["thickness", "intensity", "digit"], "effectiveness")
    return out


# --------------------------------------------------------------------------- composition


@torch.no_grad()
def composition(
    scm,
    factual: object,
    node: str = "image",
    cycles: int = 10,
    scale: float = 255.0,
    embed=None,
) -> dict[str, float]:
    """The null intervention on ``node``, x ← f(f⁻¹(x; pa); pa), once and ``cycles`` times.

    Args:
        scm: a fitted SCM.
        factual: every node's values, as :meth:`SCM.counterfactual` takes them.
        node: the image node.
        cycles: the number of repetitions of the second score.
        scale: multiplies the per-pixel L1 (255: pixel units).
        embed: optional ``images (n, C, H, W) -> (n, d)`` (a learned embedding, e.g. a reference
            VAE's encoder mean); adds ``emb_l1_1`` and ``emb_l1_<cycles>``, the mean absolute
            difference of the embeddings (Melistas et al. 2024 score both). Images are clamped
            to [0, 1] before embedding.

    Returns:
        ``{"l1_1": ..., "l1_<cycles>": ...}``: mean absolute per-pixel difference to the factual.
    """
    if node not in scm.specs:
        raise UnknownNodeError(node, scm.nodes, "composition")
    if cycles < 1:
        raise DataError(f"cycles must be >= 1, got {cycles}")
    values = to_node_tensors(factual, scm.specs, where="factual", like=scm._like())
    with poutine.trace() as tracer, poutine.condition(data=values):
        scm.model()
    fn = as_mechanism(tracer.trace.nodes[node])
    x0 = x = values[node]
    e0 = embed(x0.clamp(0, 1)) if embed is not None else None
    out = {}
    for k in range(1, cycles + 1):
        x = fn.generate(fn.abduct(x))
        if k in (1, cycles):
            out[f"l1_{k}"] = scale * float((x - x0).abs().mean())
            if embed is not None:
                out[f"emb_l1_{k}"] = float((embed(x.clamp(0, 1)) - e0).abs().mean())
    return out


# --------------------------------------------------------------------------- realism


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features ``a`` ``(n, d)`` and ``b``
    ``(m, d)``: ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½)."""
    from scipy import linalg

    a, b = (torch.as_tensor(v).double().cpu().numpy() for v in (a, b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ShapeError("frechet_distance needs two feature matrices (n >= 2, d) of equal d")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root)
    return float(max(value, 0.0))


@torch.no_grad()
def realism(classifier: DigitClassifier, images: Tensor, reference: Tensor) -> float:
    """Fréchet distance between the classifier features of ``images`` and of real
    ``reference`` images (lower: more realistic)."""
    return frechet_distance(
        classifier.features(_images(images)), classifier.features(_images(reference, "reference"))
    )


# --------------------------------------------------------------------------- minimality (CLD)


def train_reference_vae(
    images: Tensor,
    *,
    latent_dim: int = 16,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
):
    """An unconditional convolutional VAE on ``images`` ``(n, C, S, S)`` (S = 28 or 32): the
    latent space of :func:`counterfactual_latent_divergence`; returns the VAE mechanism."""
    from ..mechanisms.vae import VAEMechanism

    x = _images(images)
    torch.manual_seed(seed)
    vae = VAEMechanism.conv(x.shape[-1], x.shape[1], latent_dim, width=16).to(x.device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    for _ in tqdm(range(epochs), desc="reference VAE", disable=not progress, leave=False):
        for idx in _batches(x.shape[0], batch_size, generator):
            loss = vae().loss(x[idx.to(x.device)]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return vae.eval()


def _kl_matrix(loc_a: Tensor, scale_a: Tensor, loc_b: Tensor, scale_b: Tensor) -> Tensor:
    """KL(N(a_i) ‖ N(b_j)) for diagonal Gaussians: ``(n, L)`` × ``(m, L)`` -> ``(n, m)``."""
    va, vb = scale_a[:, None].square(), scale_b[None].square()
    diff = (loc_a[:, None] - loc_b[None]).square()
    return 0.5 * ((va + diff) / vb - 1.0 + vb.log() - va.log()).sum(-1)


@torch.no_grad()
def counterfactual_latent_divergence(
    reference_vae,
    factual: Tensor,
    counterfactual: Tensor,
    factual_labels: Tensor,
    counterfactual_labels: Tensor,
    data: Tensor,
    data_labels: Tensor,
) -> float:
    """Counterfactual latent divergence (Diff-SCM eq. 10), averaged over units (lower: better).

    div = KL(q(x_CF) ‖ q(x_F)) in the reference VAE's latent space; S_c are the divergences
    KL(q(x) ‖ q(x_F)) over the data of class c;
    CLD = log(exp P(S_CF ≤ div) + exp P(S_F ≥ div)), between log 2 ≈ 0.69 and 1 + log 2.

    Args:
        reference_vae: an unconditional VAE mechanism (:func:`train_reference_vae`).
        factual, counterfactual: images ``(n, C, H, W)`` in [0, 1].
        factual_labels, counterfactual_labels: classes of each (indices or one-hot).
        data, data_labels: the reference data set.
    """
    x_f, x_cf, x_d = _images(factual), _images(counterfactual), _images(data, "data")
    n = x_f.shape[0]
    if x_cf.shape[0] != n:
        raise ShapeError(f"{n} factual but {x_cf.shape[0]} counterfactual images")
    y_f, y_cf = _labels(factual_labels, n), _labels(counterfactual_labels, n)
    y_d = _labels(data_labels, x_d.shape[0], "data_labels")
    d = reference_vae()
    (mf, sf), (mc, sc), (md, sd) = (d.encode(x) for x in (x_f, x_cf, x_d))
    div = _kl_matrix(mc, sc, mf, sf).diagonal()  # (n,)
    to_data = _kl_matrix(md, sd, mf, sf).T  # (n, m): KL(q(x_j) || q(x_F,i))
    same_cf = (y_d[None] == y_cf[:, None]).float()
    same_f = (y_d[None] == y_f[:, None]).float()
    if (same_cf.sum(1) == 0).any() or (same_f.sum(1) == 0).any():
        raise DataError("the reference data lack a class that the factual or counterfactual has")
    p_cf = ((to_data <= div[:, None]).float() * same_cf).sum(1) / same_cf.sum(1)
    p_f = ((to_data >= div[:, None]).float() * same_f).sum(1) / same_f.sum(1)
    return float(torch.logaddexp(p_cf, p_f).mean())
