"""Backtracking (DeepBC) experiments: attribute SCM table, sampler step cost, Morpho-MNIST.

(a) An attribute SCM shaped like DeepBC's CelebA graph (age, gender -> beard; age, gender ->
    bald) with known equations. Antecedent: beard raised by ``--delta``. The paper's metrics
    (plausible = −log p under the true SCM, obs = Σ d(x*, x), causal = Σ d(u*, u), squared),
    averaged over units, for the interventional counterfactual do(beard), a non-causal tabular
    explanation (the nearest data point whose beard is within 0.1 of the antecedent, ignoring
    the graph; the nearest point in observation space itself is do(beard) here), DeepBC on a
    wrong graph (beard -> age reversed, bald a root; fitted), DeepBC and sparse DeepBC (k = 1).
(b) Cost of one gradient of the backtracking density as Langevin (our kernel) and HMC/NUTS
    (Pyro's potential) compute it, against hand-written torch forward + backward of the same
    reduced form, and of one MALA step; ratios from one run.
(c) Morpho-MNIST (the quick model): antecedent intensity -> ``--intensity`` by mode DeepBC and
    MALA against do(intensity): thickness moves under backtracking and stays under intervention;
    thickness-intensity scatter and image rows as PNG; the wrong graph (intensity a root, the
    thickness -> intensity edge removed) gives back the intervention.

Writes ``results.json``, ``results.md`` and PNGs into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import torch

import pyro_scm as ps
from pyro_scm.distances import SquaredL2
from pyro_scm.infer import LangevinKernel, ReducedForm
from pyro_scm.infer.stochastic import backtracking_model
from pyro_scm.metrics.backtracking import causal_metric, obs_metric, plausible_metric

# -- (a) the attribute SCM --------------------------------------------------------------------


class Attributes(ps.SCM):
    """age ~ N(0, 1); gender ~ Gumbel-max (0, 0); beard = 1.5 g_1 + 0.6 age + 0.5 u;
    bald = 1.2 g_1 + 0.8 age + 0.5 u (g_1: male)."""

    def __init__(self):
        super().__init__()
        self.age = ps.LocScaleMechanism()
        self.gender = ps.CategoricalMechanism(2)
        self.beard = ps.LocScaleMechanism(loc=lambda a, g: 1.5 * g[..., 1] + 0.6 * a, scale=0.5)
        self.bald = ps.LocScaleMechanism(loc=lambda a, g: 1.2 * g[..., 1] + 0.8 * a, scale=0.5)

    def model(self):
        a = pyro.sample("age", self.age())
        g = pyro.sample("gender", self.gender())
        pyro.sample("beard", self.beard(a, g))
        pyro.sample("bald", self.bald(a, g))


class WrongAttributes(ps.SCM):
    """The wrong graph: gender -> beard -> age; bald a root (fitted Gaussian mechanisms)."""

    def __init__(self):
        super().__init__()
        self.gender = ps.CategoricalMechanism(2)
        self.beard = ps.LocScaleMechanism.learned(2, hidden=(32,))
        self.age = ps.LocScaleMechanism.learned(1, hidden=(32,))
        self.bald = ps.LocScaleMechanism.learned(0, hidden=(32,))

    def model(self):
        g = pyro.sample("gender", self.gender())
        b = pyro.sample("beard", self.beard(g))
        pyro.sample("age", self.age(b))
        pyro.sample("bald", self.bald())


CONT = ["age", "beard", "bald"]


def _metrics(true_scm, cf: dict, f: dict) -> dict:
    cf = {k: v.detach() for k, v in cf.items()}
    same_gender = (cf["gender"].argmax(-1) == f["gender"].argmax(-1)).float().mean().item()
    return {
        "plausible": plausible_metric(true_scm, cf).mean().item(),
        "obs": obs_metric(cf, f, CONT).mean().item(),
        "causal": causal_metric(true_scm, cf, f, CONT).mean().item(),
        "gender kept": same_gender,
        "|Δ age|": (cf["age"] - f["age"]).abs().mean().item(),
        "|Δ bald|": (cf["bald"] - f["bald"]).abs().mean().item(),
    }


def attribute_table(units: int, delta: float, quick: bool) -> dict:
    """(a): metric rows per method."""
    torch.manual_seed(0)
    scm = Attributes()
    data = {k: v[:, 0] for k, v in scm.sample(4000).values.items()}
    f = {k: v[:units] for k, v in scm.sample(units).values.items()}
    f = {k: v[:, 0] for k, v in f.items()} if f["age"].dim() > 1 else f
    target = f["beard"] + delta
    rows = {}
    cf = scm.counterfactual(f, do={"beard": target})
    rows["interventional CF"] = _metrics(scm, {k: v[0] for k, v in cf.values.items()}, f)
    # non-causal: nearest data point (standardised attributes) with |beard − target| < 0.1
    x_f = torch.stack([f[n] for n in CONT] + [f["gender"][:, 1]], -1)
    x_d = torch.stack([data[n] for n in CONT] + [data["gender"][:, 1]], -1)
    d2 = torch.cdist(x_f, x_d).square()
    d2 = d2.masked_fill((data["beard"][None] - target[:, None]).abs() > 0.1, float("inf"))
    j = d2.argmin(-1)
    rows["nearest data point (non-causal)"] = _metrics(scm, {k: v[j] for k, v in data.items()}, f)
    wrong = WrongAttributes()
    t = time.perf_counter()
    wrong.fit(data, epochs=15 if quick else 40, batch_size=256, lr=3e-3, progress=False)
    fit_s = time.perf_counter() - t
    bt = wrong.backtrack(f, {"beard": target})
    rows["DeepBC, wrong graph"] = _metrics(scm, {k: v[0] for k, v in bt.values.items()}, f)
    t = time.perf_counter()
    bt = scm.backtrack(f, {"beard": target})
    mode_s = time.perf_counter() - t
    rows["DeepBC"] = _metrics(scm, {k: v[0] for k, v in bt.values.items()}, f)
    iters = bt.sample_stats["iterations"].float().median().item()
    bt = scm.backtrack(f, {"beard": target}, sparse=1)
    rows["sparse DeepBC (k=1)"] = _metrics(scm, {k: v[0] for k, v in bt.values.items()}, f)
    torch.manual_seed(1)
    bt = scm.backtrack(
        f, {"beard": target}, method="mala", num_chains=4, num_samples=25, warmup=150, sigma=0.05
    )
    rows["stochastic DeepBC (MALA, mean of draws)"] = {
        k: sum(
            _metrics(scm, {n: v[s] for n, v in bt.values.items()}, f)[k]
            for s in range(0, bt.num_samples, 10)
        )
        / len(range(0, bt.num_samples, 10))
        for k in rows["DeepBC"]
    }
    return {
        "units": units,
        "delta": delta,
        "rows": rows,
        "wrong_fit_seconds": fit_s,
        "mode_seconds": mode_s,
        "mode_iterations_median": iters,
    }


# -- (b) step cost ------------------------------------------------------------------------------


def step_cost(units: int, repeats: int) -> dict:
    """(b): seconds per gradient (and per MALA step) relative to hand-written torch."""
    torch.manual_seed(0)
    scm = Attributes()
    f = {k: v[:, 0] for k, v in scm.sample(units).values.items()}
    rf = ReducedForm(scm, f, {"beard": f["beard"] + 1.0})
    sigma = 0.05
    model = backtracking_model(rf, SquaredL2(), rf.nodes, 1, sigma, False)
    params = {f"noise_{n}": rf.u_factual[n][None].clone() for n in rf.nodes}
    u_f = {n: rf.u_factual[n][None] for n in rf.nodes}
    target = f["beard"] + 1.0

    def hand() -> None:
        u = {n: v.detach().requires_grad_(True) for n, v in params.items()}
        a, g = u["noise_age"], u["noise_gender"]
        soft = torch.softmax((torch.zeros(2) + g) / rf.temperature, -1)  # root logits 0
        beard = 1.5 * soft[..., 1] + 0.6 * a + 0.5 * u["noise_beard"]
        logp = -sum(
            (u[f"noise_{n}"] - u_f[n]).square().reshape(1, units, -1).sum(-1) for n in rf.nodes
        )
        logp = logp - 0.5 * ((beard - target) / sigma).square()
        torch.autograd.grad(logp.sum(), list(u.values()))

    kernel = LangevinKernel(model, step_size=1e-3, adjust=True, batch_ndims=2)
    kernel.initial_params = params
    kernel.setup(0)

    def langevin_grad() -> None:
        kernel.value_and_grad(params)

    def mala_step() -> None:
        kernel.clear_cache()
        kernel.sample(params)

    from pyro.infer.autoguide.initialization import InitMessenger, init_to_value
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad

    init_model = InitMessenger(init_to_value(values=params))(model)
    _, potential_fn, _, _ = initialize_model(init_model, initial_params=params)

    def hmc_grad() -> None:
        potential_grad(potential_fn, params)

    def timeit(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t) / repeats

    base = timeit(hand)
    rows = {
        "hand-written torch fwd+bwd": base,
        "Langevin/MALA gradient (pyro_scm kernel)": timeit(langevin_grad),
        "HMC/NUTS gradient (Pyro potential_fn)": timeit(hmc_grad),
        "one MALA step (2 gradients + MH)": timeit(mala_step),
    }
    return {"units": units, "seconds": rows, "ratio": {k: v / base for k, v in rows.items()}}


# -- (c) Morpho-MNIST ---------------------------------------------------------------------------


def morpho(units: int, intensity: float, out: Path, quick: bool, progress: bool) -> dict:
    """(c): backtracking vs intervention on the quick Morpho-MNIST model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pyro_scm.models.morpho_mnist import train

    t = time.perf_counter()
    scm, data, _ = train(quick=True, progress=progress)
    train_s = time.perf_counter() - t
    scm.eval()
    f = data.subset(range(units)).to_dict()
    cf = scm.counterfactual(f, do={"intensity": intensity})
    t = time.perf_counter()
    mode = scm.backtrack(f, {"intensity": intensity})
    mode_s = time.perf_counter() - t
    torch.manual_seed(0)
    t = time.perf_counter()
    chains, draws = 8, 25 if quick else 100
    mala = scm.backtrack(
        f,
        {"intensity": intensity},
        method="mala",
        num_chains=chains,
        num_samples=draws,
        warmup=150 if quick else 400,
        sigma=0.5,
        step_size=1e-3,
        progress=progress,
    )
    mala_s = time.perf_counter() - t
    d = {"thickness": 1, "intensity": 1}  # the free latents MALA samples per unit
    t_f = f["thickness"]
    res = {
        "units": units,
        "intensity": intensity,
        "train_seconds": train_s,
        "mode_seconds": mode_s,
        "mala_seconds": mala_s,
        "mala_state": {
            "per_unit_dim": sum(d.values()),
            "chains": chains,
            "units": units,
            "total_dim": sum(d.values()) * chains * units,
            "draws": draws,
        },
        "|Δ thickness| intervention": (cf["thickness"][0] - t_f).abs().mean().item(),
        "|Δ thickness| backtracking (mode)": (mode["thickness"][0] - t_f).abs().mean().item(),
        "|Δ thickness| backtracking (MALA)": (mala["thickness"] - t_f).abs().mean().item(),
        "max |intensity − antecedent| mode": (mode["intensity"][0] - intensity).abs().max().item(),
    }
    # wrong graph: intensity a root (the thickness -> intensity edge removed), same training
    wrong, _, _ = _train_wrong(data, progress)
    w = wrong.backtrack(f, {"intensity": intensity})
    res["|Δ thickness| backtracking, wrong graph (no t->i edge)"] = (
        (w["thickness"][0] - t_f).abs().mean().item()
    )
    # measured attributes of the images
    from pyro_scm.datasets.morpho_mnist import measure_intensity, measure_thickness

    def measure(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.detach() * 255  # the measurements take pixels in [0, 255]
        return measure_thickness(images), measure_intensity(images)

    meas = {
        "factual": measure(f["image"]),
        "intervention": measure(cf["image"][0]),
        "backtracking": measure(mode["image"][0]),
    }
    res["measured (thickness, intensity) means"] = {
        k: (v[0].float().mean().item(), v[1].float().mean().item()) for k, v in meas.items()
    }
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(t_f, f["intensity"], label="factual", s=18)
    ax.scatter(cf["thickness"][0], cf["intensity"][0], label="do(intensity)", s=18, marker="x")
    ax.scatter(mode["thickness"][0], mode["intensity"][0], label="DeepBC (mode)", s=18)
    ax.scatter(
        mala["thickness"].reshape(-1),
        mala["intensity"].reshape(-1),
        label="DeepBC (MALA)",
        s=3,
        alpha=0.2,
    )
    ax.set_xlabel("thickness")
    ax.set_ylabel("intensity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "morpho_scatter.png", dpi=120)
    plt.close(fig)
    rows = {
        "factual": f["image"],
        "do(intensity)": cf["image"][0],
        "DeepBC (mode)": mode["image"][0],
        "DeepBC wrong graph": w["image"][0],
    }
    n = min(units, 10)
    fig, axes = plt.subplots(len(rows), n, figsize=(n, len(rows) * 1.1))
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            axes[r, c].imshow(imgs[c, 0].detach(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(out / "morpho_rows.png", dpi=120)
    plt.close(fig)
    return res


def _train_wrong(data, progress: bool):
    import zuko
    from pyro_scm.models.morpho_mnist import QUICK, MorphoMNIST

    class NoEdge(MorphoMNIST):
        def __init__(self):
            super().__init__(latent_dim=QUICK.latent_dim, width=QUICK.width)
            self.intensity = ps.FlowMechanism(zuko.flows.NSF(features=1, context=0))

        def model(self):
            t = pyro.sample("thickness", self.thickness())
            i = pyro.sample("intensity", self.intensity())
            d = pyro.sample("digit", self.digit())
            pyro.sample("image", self.image(t, i, d))

    torch.manual_seed(0)
    scm = NoEdge()
    hist = scm.fit(
        data.to_dict(),
        epochs=QUICK.epochs,
        batch_size=QUICK.batch_size,
        lr=QUICK.lr,
        patience=5,
        seed=0,
        progress=progress,
    )
    return scm.eval(), data, hist


# -- driver ---------------------------------------------------------------------------------------


def _md_table(rows: dict) -> str:
    cols = list(next(iter(rows.values())))
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/out/backtracking")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--delta", type=float, default=1.5, help="beard increase (a)")
    parser.add_argument("--intensity", type=float, default=110.0, help="antecedent (c)")
    parser.add_argument("--skip-morpho", action="store_true")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    results["attributes"] = attribute_table(100 if args.quick else 500, args.delta, args.quick)
    results["step_cost"] = step_cost(256, 20 if args.quick else 100)
    if not args.skip_morpho:
        results["morpho"] = morpho(
            16 if args.quick else 64, args.intensity, out, args.quick, args.progress
        )
    md = [f"## (a) Attribute SCM, antecedent beard + {args.delta}", ""]
    md.append(_md_table(results["attributes"]["rows"]))
    md += ["", "## (b) Cost per gradient / step, ratio to hand-written torch", ""]
    md += ["| what | seconds | ratio |", "|---|---|---|"]
    sc = results["step_cost"]
    md += [f"| {k} | {v:.2e} | {sc['ratio'][k]:.1f} |" for k, v in sc["seconds"].items()]
    if "morpho" in results:
        md += ["", f"## (c) Morpho-MNIST, antecedent intensity = {args.intensity}", ""]
        md += [f"- {k}: {v}" for k, v in results["morpho"].items()]
    text = "\n".join(md)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
