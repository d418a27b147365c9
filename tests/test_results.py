"""QueryResult: arviz and pandas conversions, summaries."""

import arviz as az
import numpy as np
import pytest
import torch
from scms import Flows, GumbelChild, Linear

import pyro_scm as ps


def _cf():
    scm = Flows()
    f = {k: v[:, 0] for k, v in scm.sample(6).values.items()}
    return scm.counterfactual(f, do={"a": 0.5}), f


def test_to_arviz_groups_dims_and_values():
    cf, f = _cf()
    idata = cf.to_arviz()
    post = idata.posterior
    assert post["c"].dims == ("chain", "draw", "unit", "c_dim_0")
    assert post["c"].shape == (1, 1, 6, 2)
    assert post["a"].dims == ("chain", "draw", "unit")
    np.testing.assert_allclose(post["d"].values[0], cf["d"].numpy())
    np.testing.assert_allclose(idata.observed_data["b"].values, f["b"].numpy())
    np.testing.assert_allclose(idata.constant_data["do_a"].values, np.full(6, 0.5))
    assert "noise_b" in post and "noise_a" not in post  # the abducted noise
    assert idata.attrs["query"] == "counterfactual"


def test_arviz_summary_of_samples():
    idata = Linear().do({"x": 1.0}).sample(400).to_arviz()
    summary = az.summary(idata, var_names=["y"], kind="stats")
    assert summary.loc["y[0]", "mean"] == pytest.approx(1.5, abs=0.1)
    assert idata.posterior["y"].shape == (1, 400, 1)


def test_to_arviz_netcdf_round_trip(tmp_path):
    cf, _ = _cf()
    path = tmp_path / "cf.nc"
    cf.to_arviz().to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_allclose(back.posterior["b"].values[0], cf["b"].numpy(), rtol=1e-6)


def test_to_arviz_with_chains():
    values = {"x": torch.arange(12.0).reshape(6, 2)}
    result = ps.QueryResult(values, num_chains=2, sample_stats={"accept": torch.ones(6, 2)})
    idata = result.to_arviz()
    assert idata.posterior["x"].shape == (2, 3, 2)
    np.testing.assert_allclose(idata.posterior["x"].values[1, 0], [6.0, 7.0])
    assert idata.sample_stats["accept"].shape == (2, 3, 2)
    frame = result.to_pandas()
    assert list(frame.columns) == ["chain", "draw", "unit", "x", "accept"]
    assert frame.attrs["sample_stats"] == ["accept"]
    assert frame["x"].tolist() == list(range(12))


def test_to_pandas_columns_vector_and_categorical():
    cf, _ = _cf()
    frame = cf.to_pandas()
    assert list(frame.columns) == ["draw", "unit", "a", "b", "c[0]", "c[1]", "d"]
    assert len(frame) == 6
    np.testing.assert_allclose(frame["c[1]"].to_numpy(), cf["c"][0, :, 1].numpy())
    s = GumbelChild().sample(50)
    frame = s.to_pandas()
    assert set(frame["c"].unique()) <= {0, 1}
    assert frame["c"].tolist() == s["c"][:, 0].argmax(-1).tolist()


def test_repr_and_mean():
    s = Linear().do({"x": 1.0}).sample(100)
    text = repr(s)
    assert "interventional" in text and "do: x=1" in text and "y" in text
    assert s.mean()["x"].shape == (1,)
    assert len(s) == 3 and set(s) == {"x", "y", "z"}
    assert "Linear(" in repr(Linear()) and "z: locscale, event (), parents (x, y)" in repr(Linear())


@pytest.mark.parametrize("num_samples", [1, 3])
def test_counterfactual_result_shapes(num_samples):
    scm = GumbelChild()
    f = {"x": torch.zeros(4), "c": torch.tensor([0, 1, 0, 1]), "y": torch.zeros(4)}
    cf = scm.counterfactual(f, do={"x": 1.0}, num_samples=num_samples)
    assert cf.num_samples == num_samples and cf.num_units == 4
    assert cf.to_arviz().posterior["c"].shape == (1, num_samples, 4, 2)


def test_to_arviz_speaks_the_arviz_1_interface(monkeypatch):
    """arviz >= 1.0 takes one dict of groups and global attrs under "/"."""
    calls = {}

    def from_dict(data, *, dims=None, coords=None, attrs=None):
        calls.update(data=data, dims=dims, coords=coords, attrs=attrs)
        return "tree"

    monkeypatch.setattr(az, "from_dict", from_dict)
    cf, _ = _cf()
    assert cf.to_arviz() == "tree"
    assert set(calls["data"]) == {"posterior", "observed_data", "constant_data"}
    assert calls["data"]["posterior"]["c"].shape == (1, 1, 6, 2)
    assert calls["dims"]["c"] == ["unit", "c_dim_0"]
    assert calls["attrs"]["/"]["query"] == "counterfactual"
