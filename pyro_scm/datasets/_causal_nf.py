"""The SCMs of Causal-NF (Javaloy, Sánchez-Martín, Valera 2023), with their exact inverses.

Equations as in ``shared/benchmarks/SCMS.md`` and Causal-NF's ``sem_equations``. Every one is
invertible in its noise, so all these SCMs are counterfactually identifiable; noises are
``N(0, 1)`` except in large-backdoor (``U(1e-6, 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.functional import softplus

from ._scm import Equation, NoiseKind, SyntheticSCM, additive, general, root

Builder = Callable[[str, int, torch.dtype, torch.device | None], SyntheticSCM]

PROTOCOL_INTERVENTIONS: dict[str, list[str]] = {
    "cnf-chain-3": ["x1", "x2"],
    "cnf-chain-4": ["x1", "x2", "x3"],
    "cnf-chain-5": ["x1", "x2", "x3"],
    "cnf-collider": ["x2"],
    "cnf-fork": ["x2", "x3"],
    "cnf-triangle": ["x1", "x2"],
    "cnf-simpson": ["x1", "x2", "x3"],
    "cnf-large-backdoor": ["x1", "x2", "x3", "x5"],
}


def _chain3(variant: str) -> dict[str, Equation]:
    if variant == "lin":
        return {
            "x1": root(),
            "x2": additive(["x1"], lambda x1: 10 * x1, -1.0),
            "x3": additive(["x2"], lambda x2: 0.25 * x2, 2.0),
        }
    return {
        "x1": root(),
        "x2": additive(["x1"], lambda x1: torch.exp(x1 / 2), 0.25),
        "x3": additive(["x2"], lambda x2: (x2 - 5) ** 3 / 15, 1.0),
    }


def _chain4(variant: str) -> dict[str, Equation]:
    return {
        "x1": root(),
        "x2": additive(["x1"], lambda x1: 5 * x1, -1.0),
        "x3": additive(["x2"], lambda x2: -0.5 * x2, -1.5),
        "x4": additive(["x3"], lambda x3: x3, 1.0),
    }


def _chain5(variant: str) -> dict[str, Equation]:
    return {
        "x1": root(),
        "x2": additive(["x1"], lambda x1: 10 * x1, -1.0),
        "x3": additive(["x2"], lambda x2: 0.25 * x2, 2.0),
        "x4": additive(["x3"], lambda x3: x3, 1.0),
        "x5": additive(["x4"], lambda x4: -x4, 1.0),
    }


def _collider(variant: str) -> dict[str, Equation]:
    return {
        "x1": root(),
        "x2": root(2.0, -1.0),
        "x3": additive(["x1", "x2"], lambda x1, x2: 0.25 * x2 - 0.5 * x1, 0.5),
    }


def _fork(variant: str) -> dict[str, Equation]:
    if variant == "lin":
        return {
            "x1": root(),
            "x2": root(2.0, -1.0),
            "x3": additive(["x1", "x2"], lambda x1, x2: 0.25 * x2 - 1.5 * x1, 0.5),
            "x4": additive(["x3"], lambda x3: x3, 0.25),
        }
    return {
        "x1": root(),
        "x2": root(),
        "x3": additive(["x1", "x2"], lambda x1, x2: 4 * torch.sigmoid(x1 + x2) - x2**2, 0.5),
        "x4": additive(["x3"], lambda x3: 20 * torch.sigmoid(x3 - x3**2 / 2), 1.0),
    }


def _triangle(variant: str) -> dict[str, Equation]:
    if variant == "lin":
        return {
            "x1": root(1.0),
            "x2": additive(["x1"], lambda x1: 10 * x1, -1.0),
            "x3": additive(["x1", "x2"], lambda x1, x2: 0.5 * x2 + x1, 1.0),
        }
    return {
        "x1": root(),
        "x2": additive(["x1"], lambda x1: 2 * x1**2, 1.0),
        "x3": additive(["x1", "x2"], lambda x1, x2: 20 * torch.sigmoid(x2**2 - x1), 1.0),
    }


def _simpson(variant: str) -> dict[str, Equation]:
    if variant == "nlin":

        def x3_base(x1: Tensor, x2: Tensor) -> Tensor:
            return torch.tanh(2 * x2) + 1.5 * x1 - 1

        return {
            "x1": root(),
            "x2": additive(["x1"], lambda x1: softplus(1 - x1), math.sqrt(3 / 20)),
            "x3": general(
                ["x1", "x2"],
                lambda u, x1, x2: x3_base(x1, x2) + torch.tanh(u),
                lambda x, x1, x2: torch.atanh(x - x3_base(x1, x2)),
            ),
            "x4": additive(["x3"], lambda x3: (x3 - 4) / 5 + 3, 1 / math.sqrt(10)),
        }
    return {
        "x1": root(),
        "x2": additive(["x1"], lambda x1: 2 * torch.tanh(2 * x1), 1 / math.sqrt(10)),
        "x3": additive(["x1", "x2"], lambda x1, x2: 0.5 * x1 * x2, 1 / math.sqrt(2)),
        "x4": additive(["x1"], lambda x1: torch.tanh(1.5 * x1), math.sqrt(0.3)),
    }


def _layer(a: Tensor, b: Tensor | float) -> Tensor:
    """``L(a, b) = softplus(a + 1) + softplus(b + 0.5) - 3``."""
    return softplus(a + 1) + softplus(torch.as_tensor(b, dtype=a.dtype, device=a.device) + 0.5) - 3


def _inv_softplus(y: Tensor) -> Tensor:
    return torch.log(torch.expm1(y))


def _layer_equation(parent: str) -> Equation:
    """``x = L(parent, u)``; ``u = softplus^{-1}(x + 3 - softplus(parent + 1)) - 0.5``."""
    return general(
        [parent],
        lambda u, pa: _layer(pa, u),
        lambda x, pa: _inv_softplus(x + 3 - softplus(pa + 1)) - 0.5,
    )


def _laplace_loc(x7: Tensor, x8: Tensor) -> Tensor:
    return 2 - softplus((1.3 * x7 + x8) / 3 + 1)


def _laplace_icdf(u: Tensor, loc: Tensor, scale: float) -> Tensor:
    t = u - 0.5
    return loc - scale * t.sign() * torch.log1p(-2 * t.abs())


def _laplace_cdf(x: Tensor, loc: Tensor, scale: float) -> Tensor:
    d = x - loc
    return 0.5 - 0.5 * d.sign() * torch.expm1(-d.abs() / scale)


def _large_backdoor(variant: str) -> dict[str, Equation]:
    return {
        "x1": general(
            [],
            lambda u: softplus(1.8 * u) - 1,
            lambda x: _inv_softplus(x + 1) / 1.8,
        ),
        "x2": additive(["x1"], lambda x1: 1.5 * _layer(x1, 0.0), 0.25),
        "x3": _layer_equation("x1"),
        "x4": _layer_equation("x2"),
        "x5": _layer_equation("x3"),
        "x6": _layer_equation("x4"),
        "x7": _layer_equation("x5"),
        "x8": additive(["x6"], lambda x6: softplus(x6 + 1) - 1, 0.3),
        "x9": general(
            ["x7", "x8"],
            lambda u, x7, x8: _laplace_icdf(u, _laplace_loc(x7, x8), 0.6),
            lambda x, x7, x8: _laplace_cdf(x, _laplace_loc(x7, x8), 0.6),
        ),
    }


def _builder(
    name: str, equations: Callable[[str], dict[str, Equation]], noise: NoiseKind = "normal"
) -> Builder:
    def build(
        variant: str, seed: int, dtype: torch.dtype, device: torch.device | None
    ) -> SyntheticSCM:
        return SyntheticSCM(
            name,
            variant,
            equations(variant),
            noise=noise,
            intervention_nodes=PROTOCOL_INTERVENTIONS[name],
            protocol="causal-nf",
            seed=seed,
            dtype=dtype,
            device=device,
        )

    return build


CAUSAL_NF_SCMS: dict[str, tuple[tuple[str, ...], Builder]] = {
    "cnf-chain-3": (("lin", "nlin"), _builder("cnf-chain-3", _chain3)),
    "cnf-chain-4": (("lin",), _builder("cnf-chain-4", _chain4)),
    "cnf-chain-5": (("lin",), _builder("cnf-chain-5", _chain5)),
    "cnf-collider": (("lin",), _builder("cnf-collider", _collider)),
    "cnf-fork": (("lin", "nlin"), _builder("cnf-fork", _fork)),
    "cnf-triangle": (("lin", "nlin"), _builder("cnf-triangle", _triangle)),
    "cnf-simpson": (("nlin", "symprod"), _builder("cnf-simpson", _simpson)),
    "cnf-large-backdoor": (("nlin",), _builder("cnf-large-backdoor", _large_backdoor, "uniform")),
}
"""name -> (variants, builder(variant, seed, dtype, device))."""
