"""Example SCMs with known structural equations, shared by the tests."""

import pyro
import torch
import zuko

import pyro_scm as ps

A, B, C, D, E = 1.5, 0.5, -0.8, 0.7, 0.3


class Linear(ps.SCM):
    """x = u_x; y = A x + B u_y; z = C y + D x + E u_z (a skip edge x -> z)."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.y = ps.LocScaleMechanism(loc=lambda x: A * x, scale=B)
        self.z = ps.LocScaleMechanism(loc=lambda y, x: C * y + D * x, scale=E)

    def model(self):
        x = pyro.sample("x", self.x())
        y = pyro.sample("y", self.y(x))
        pyro.sample("z", self.z(y, x))

    @staticmethod
    def closed_form(x, y, z, x_star):
        """Closed form of do(x = x_star) given factual (x, y, z)."""
        u_y, u_z = (y - A * x) / B, (z - C * y - D * x) / E
        y_star = A * x_star + B * u_y
        return y_star, C * y_star + D * x_star + E * u_z


class Heteroscedastic(ps.SCM):
    """x = u_x; y = sin(2x) + exp(x / 2) u_y: non-linear, heteroscedastic, invertible."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.y = ps.LocScaleMechanism(
            loc=lambda x: torch.sin(2 * x), scale=lambda x: torch.exp(x / 2)
        )

    def model(self):
        x = pyro.sample("x", self.x())
        pyro.sample("y", self.y(x))

    @staticmethod
    def closed_form(x, y, x_star):
        u = (y - torch.sin(2 * x)) / torch.exp(x / 2)
        return torch.sin(2 * x_star) + torch.exp(x_star / 2) * u


class Flows(ps.SCM):
    """An untrained four-node flow SCM with a vector node: a, b -> c (2-d) -> d."""

    def __init__(self):
        super().__init__()
        self.a = ps.FlowMechanism(zuko.flows.NSF(features=1, context=0))
        self.b = ps.FlowMechanism(zuko.flows.MAF(features=1, context=1))
        self.c = ps.FlowMechanism(zuko.flows.NSF(features=2, context=2))
        self.d = ps.FlowMechanism(zuko.flows.MAF(features=1, context=2))
        self.mark_fitted()  # random weights on purpose: the tests check shapes and laws

    def model(self):
        a = pyro.sample("a", self.a())
        b = pyro.sample("b", self.b(a))
        c = pyro.sample("c", self.c(a, b))
        pyro.sample("d", self.d(c))


class GumbelChild(ps.SCM):
    """x ~ N(0, 1); c = Gumbel-max over logits (0, 2x); y = 3 c_1 + x + u_y / 2."""

    def __init__(self):
        super().__init__()
        self.x = ps.LocScaleMechanism()
        self.c = ps.CategoricalMechanism(2, context=1)
        self.c.net = _Logits()  # known logits (0, 2x): class 1 grows likelier with x
        self.y = ps.LocScaleMechanism(loc=lambda c, x: 3 * c[..., 1] + x, scale=0.5)

    def model(self):
        x = pyro.sample("x", self.x())
        c = pyro.sample("c", self.c(x))
        pyro.sample("y", self.y(c, x))


class _Logits(torch.nn.Module):
    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 2 * x], -1)
