"""VAE mechanisms: network shapes, abduction round trips, the ELBO in fit, and typed errors."""

import pyro
import pytest
import torch
import zuko

import pyro_scm as ps
from pyro_scm.errors import DataError, MechanismError, NonFiniteError, ShapeError
from pyro_scm.mechanisms.vae import VAEDistribution, VAEMechanism
from pyro_scm.nets.images import ConvDecoder, ConvEncoder


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_conv_networks_shapes(size, channels):
    enc = ConvEncoder(6, size=size, channels=channels, context=2, width=4, hidden=16)
    dec = ConvDecoder(6, size=size, channels=channels, context=2, width=4, hidden=16)
    x, c = torch.rand(5, channels, size, size), torch.randn(5, 2)
    assert enc(x, c).shape == (5, 12)
    assert dec(torch.randn(5, 6), c).shape == (5, channels, size, size)
    root = ConvEncoder(6, size=size, channels=channels, width=4, hidden=16)
    assert root(x, None).shape == (5, 12)


def _small(size=28, channels=1, **kw):
    return VAEMechanism.conv(size, channels, latent_dim=4, width=4, hidden=16, **kw)


@pytest.mark.parametrize("size", [28, 32])
def test_round_trip_is_exact_with_the_residual(size, device):
    vae = _small(size, 3, context=3, residual=True).to(device)
    # batch (samples, units) against parents broadcast from (units,) and (units, 2)
    d = vae(torch.randn(7, device=device), torch.randn(7, 2, device=device))
    x = torch.rand(2, 7, 3, size, size, device=device)
    u = d.abduct(x)
    assert u.shape == (2, 7, 4 + 3 * size * size)
    assert u.device.type == device.type
    torch.testing.assert_close(d.generate(u), x, atol=1e-5, rtol=0)
    z, eps = d.split_noise(u)
    assert z.shape == (2, 7, 4) and eps.shape == (2, 7, 3, size, size)


def test_encoder_mean_abduction_without_residual():
    vae = _small(context=1)
    d = vae(torch.randn(6))
    x = torch.rand(6, 1, 28, 28)
    u = d.abduct(x)
    assert u.shape == (6, 4)
    torch.testing.assert_close(u, d.encode(x)[0])  # the encoder mean: deterministic
    torch.testing.assert_close(d.abduct(x), u)
    assert d.deterministic_abduction
    recon = d.generate(u)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    assert d.noise.event_shape == (4,) and d.noise.batch_shape == (6,)


def test_stochastic_abduction_draws_from_q():
    vae = _small(context=1, abduction="sample", residual=True)
    d = vae(torch.randn(4))
    assert not d.deterministic_abduction
    x = torch.rand(4, 1, 28, 28)
    u1, u2 = d.abduct(x), d.abduct(x)
    assert not torch.allclose(u1[..., :4], u2[..., :4])
    torch.testing.assert_close(d.generate(u2), x, atol=1e-5, rtol=0)  # still exact


def test_mlp_vae_round_trip_and_gradients():
    vae = VAEMechanism.mlp(3, latent_dim=2, context=1, residual=True)
    d = vae(torch.randn(10))
    x = 5 * torch.randn(10, 3)  # real vectors: no range check
    torch.testing.assert_close(d.generate(d.abduct(x)), x, atol=1e-5, rtol=1e-5)
    u = d.noise.sample().requires_grad_()
    d.generate(u).sum().backward()
    assert u.grad is not None and u.grad[..., :2].abs().sum() > 0  # differentiable in z


def test_generate_is_differentiable_in_the_latent():
    d = _small(context=1)(torch.randn(3))
    u = torch.randn(3, 4, requires_grad=True)
    d.generate(u).sum().backward()
    assert u.grad.abs().sum() > 0


def test_loss_is_the_negative_elbo_per_unit():
    vae = _small(context=1, beta=0.0)
    d = vae(torch.randn(5))
    x = torch.rand(5, 1, 28, 28)
    loss = d.loss(x)
    assert loss.shape == (5,) and torch.isfinite(loss).all()
    # beta = 0: the loss is the reconstruction, at least the entropy of x per pixel
    entropy = -(x * x.log() + (1 - x) * (1 - x).log()).sum((1, 2, 3))
    assert (loss >= entropy - 1e-3).all()
    with pytest.raises(MechanismError, match="intractable"):
        d.log_prob(x)


class _Blobs(ps.SCM):
    """brightness b -> image: a 28×28 square whose value is sigmoid(b)."""

    def __init__(self):
        super().__init__()
        self.b = ps.FlowMechanism(zuko.flows.NSF(features=1, context=0, hidden_features=(8,)))
        self.image = _small(context=1, name="image")

    def model(self):
        b = pyro.sample("b", self.b())
        pyro.sample("image", self.image(b))


def _blobs(n=96):
    b = torch.randn(n)
    image = torch.zeros(n, 1, 28, 28)
    image[:, :, 8:20, 8:20] = torch.sigmoid(2 * b)[:, None, None, None]
    return {"b": b, "image": image}


def test_graph_and_fit_lower_the_loss():
    scm = _Blobs()
    assert sorted(scm.graph.edges) == [("b", "image")]
    assert scm.graph.nodes["image"]["mechanism"] == "vae"
    history = scm.fit(_blobs(256), epochs=5, batch_size=32, lr=1e-2, progress=False)
    image = history[history.node == "image"]
    assert image.train.iloc[-1] < 0.5 * image.train.iloc[0]  # seed 0: 454 -> 99
    cf = scm.counterfactual(_blobs(8), do={"b": 2.0}, num_samples=2)
    assert cf["image"].shape == (2, 8, 1, 28, 28)
    samples = scm.sample(5)
    assert samples["image"].shape == (5, 1, 1, 28, 28)


def test_wrong_image_shapes_and_values_raise():
    vae = _small(context=1, name="image")
    d = vae(torch.randn(2))
    with pytest.raises(ShapeError, match=r"'image'.*1, 28, 28"):
        d.abduct(torch.rand(2, 1, 32, 32))
    with pytest.raises(ShapeError):
        d.loss(torch.rand(2, 28, 28))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        d.abduct(torch.rand(2, 1, 28, 28) * 255)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        d.loss(-torch.rand(2, 1, 28, 28))
    with pytest.raises(NonFiniteError):
        d.abduct(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(DataError):  # fit checks the training images when preparing
        vae.prepare(torch.rand(2, 1, 28, 28) + 1, torch.randn(2))
    with pytest.raises(ShapeError, match="noise must have 4"):
        d.generate(torch.randn(2, 5))


def test_bad_configurations_raise():
    with pytest.raises(ShapeError, match="side"):
        VAEMechanism.conv(size=30)
    with pytest.raises(ShapeError, match="channel"):
        VAEMechanism.conv(channels=0)
    with pytest.raises(MechanismError, match="likelihood"):
        _small(likelihood="poisson")
    with pytest.raises(MechanismError, match="bounded"):
        VAEMechanism.mlp(3, likelihood="bernoulli")
    with pytest.raises(MechanismError, match="abduction"):
        _small(abduction="mode")
    with pytest.raises(MechanismError):
        VAEMechanism.mlp(3, latent_dim=0)
    with pytest.raises(MechanismError, match="beta"):
        _small(beta=-1.0)


def test_user_networks_with_wrong_outputs_raise():
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))  # 3 != 2 * 2
    dec = torch.nn.Linear(2, 4)
    vae = VAEMechanism(
        lambda x, c: enc(x), lambda z, c: dec(z), 2, (4,), likelihood="gaussian", bounded=False
    )
    d = vae()
    assert isinstance(d, VAEDistribution)
    with pytest.raises(ShapeError, match="encoder"):
        d.abduct(torch.randn(3, 4))
    bad = VAEMechanism(
        lambda x, c: torch.zeros(x.shape[0], 4),
        lambda z, c: torch.zeros(z.shape[0], 5),
        2,
        (4,),
        likelihood="gaussian",
        bounded=False,
    )
    with pytest.raises(ShapeError, match="decoder"):
        bad().generate(torch.randn(3, 2))
