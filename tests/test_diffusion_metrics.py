"""CLD, IM1 and IM2 on tiny two-class images."""

import math

import pytest
import torch

from pyro_scm.errors import DataError, NonFiniteError, ShapeError
from pyro_scm.metrics.diffusion import (
    cld,
    cld_per_unit,
    fit_class_autoencoders,
    fit_vae,
    gaussian_kl,
    im1,
    im2,
)


def _images(n: int, seed: int = 0):
    """Class 0: bright left half; class 1: bright right half; 4x4 images in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = 0.1 * torch.rand(n, 1, 4, 4, generator=gen)
    x[labels == 0, :, :, :2] += 0.8
    x[labels == 1, :, :, 2:] += 0.8
    return x, labels


class IdentityEncoder:
    """Latent mean = the flattened image, unit variance: KL = half the squared distance."""

    def encode(self, x):
        mu = x.flatten(1)
        return mu, torch.zeros_like(mu)


def test_gaussian_kl_matches_torch():
    mp, lp, mq, lq = (torch.randn(5, 3) for _ in range(4))
    p = torch.distributions.Normal(mp, (0.5 * lp).exp())
    q = torch.distributions.Normal(mq, (0.5 * lq).exp())
    expected = torch.distributions.kl_divergence(p, q).sum(-1)
    torch.testing.assert_close(gaussian_kl(mp, lp, mq, lq), expected)


def test_cld_of_the_factual_itself_and_of_a_target_class_sample():
    data, labels = _images(40)
    enc = IdentityEncoder()
    factual, fc = data[:2], labels[:2]  # one of each class
    target = 1 - fc
    same = cld_per_unit(enc, factual, factual, fc, target, data, labels)
    # div = 0: P(S_CF <= 0) = 0 and P(S_F >= 0) = 1
    torch.testing.assert_close(same, torch.full((2,), math.log(1 + math.e)))
    swapped = data[2:4].flip(0)  # a data point of the target class for each factual
    value = cld(enc, factual, swapped, fc, target, data, labels)
    assert math.log(2) <= value <= math.log(2) + 1
    # the counterfactual is far from the factual class: P(S_F >= div) = 0
    div = 0.5 * (swapped - factual).flatten(1).square().sum(-1)
    dist = 0.5 * (data[None] - factual[:, None]).flatten(2).square().sum(-1)
    p_cf = torch.stack([(dist[i][labels == target[i]] <= div[i]).float().mean() for i in range(2)])
    torch.testing.assert_close(
        cld_per_unit(enc, factual, swapped, fc, target, data, labels),
        torch.logaddexp(p_cf, 0 * p_cf),
    )


def test_cld_with_a_trained_vae_prefers_minimal_counterfactuals():
    torch.manual_seed(0)
    data, labels = _images(200)
    vae = fit_vae(data, latent=4, hidden=(32,), epochs=30, batch_size=50, lr=3e-3)
    mu, log_var = vae.encode(data[:3])
    assert mu.shape == (3, 4) and log_var.shape == (3, 4)
    factual, fc = data[labels == 0][:20], labels[labels == 0][:20]
    target = torch.ones(20, dtype=torch.long)
    unchanged = cld(vae, factual, factual, fc, target, data, labels)
    moved = cld(vae, factual, _images(40, seed=5)[0][1::2], fc, target, data, labels)
    assert moved < unchanged


def test_im1_and_im2_score_realistic_counterfactuals_lower():
    torch.manual_seed(0)
    data, labels = _images(200)
    aes = fit_class_autoencoders(
        data, labels, 2, latent=4, hidden=(32,), epochs=30, batch_size=50, lr=3e-3
    )
    test, test_labels = _images(40, seed=7)
    fc = torch.zeros(20, dtype=torch.long)
    target = torch.ones(20, dtype=torch.long)
    good = test[test_labels == 1]  # looks like the target class
    bad = test[test_labels == 0]  # still looks like the factual class
    assert im1(aes, good, fc, target) < 1 < im1(aes, bad, fc, target)
    assert im2(aes, good, target) < im2(aes, bad, target)
    per_unit = im1(aes, good, fc, target, reduce=False)
    assert per_unit.shape == (20,)
    one_hot = torch.eye(2)[target]
    assert im2(aes, good, one_hot) == pytest.approx(im2(aes, good, target))


def test_metric_errors():
    data, labels = _images(10)
    enc = IdentityEncoder()
    with pytest.raises(ShapeError, match="differ"):
        cld(enc, data[:2], data[:3], labels[:2], labels[:2], data, labels)
    with pytest.raises(ShapeError, match="class indices"):
        cld(enc, data[:2], data[:2], labels[:3], labels[:2], data, labels)
    with pytest.raises(DataError, match="lack"):
        cld(enc, data[:2], data[:2], labels[:2], labels[:2], data[labels == 0], labels[labels == 0])
    with pytest.raises(NonFiniteError):
        cld(enc, data[:2] * float("nan"), data[:2], labels[:2], labels[:2], data, labels)
    with pytest.raises(DataError, match="labels"):
        fit_class_autoencoders(data, labels + 5, 2, epochs=1)
    with pytest.raises(DataError, match="no training data"):
        fit_class_autoencoders(data, labels, 3, epochs=1)
    with pytest.raises(ShapeError, match="non-empty"):
        fit_vae(torch.zeros(0, 4))
