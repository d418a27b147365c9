"""Shared test options: ``--device`` runs the suite on another torch device; seeds are fixed."""

import pyro
import pytest
import torch

# Small models: one thread avoids the oversubscription that makes tiny ops slow on 2 cores.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the tests (cpu by default; cuda when present)",
    )


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return torch.device(name)


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
