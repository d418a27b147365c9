"""The main job: a deep SCM of Morpho-MNIST answering all three kinds of query.

Trains :class:`pyro_scm.models.morpho_mnist.MorphoMNIST` (spline flows for thickness and
intensity, a Gumbel-max digit, a conditional VAE for the image) on real MNIST digits made
thicker or thinner by the true Morpho-MNIST equations, then, on held-out digits, answers

- an interventional query, do(thickness = thick), sampled;
- an interventional counterfactual, do(intensity = dim): the digit's thickness stays, only the
  image's intensity changes;
- a backtracking counterfactual with the antecedent intensity = dim, by mode DeepBC and by a
  sampler (``method="auto"`` by default: constrained HMC on the antecedent manifold; the
  relaxed MALA adapts to steps of 10⁻⁴-10⁻² there and its chains barely move): the intensity is
  explained by changing its cause, so thickness moves.

The image mechanism is the best by ``benchmarks/image_benchmark.py`` unless ``--image`` says
otherwise. With ``+res``, counterfactual images are decoded with the VAE's residual (deepscm
style), so they keep the factual digit's detail; interventional samples are decoder means.

It writes one arviz netcdf per query, figures (graph, image grids, the thickness-intensity
scatter, the sampler's trace) and ``summary.md`` with the measured attributes of the images.

Run: ``python -m pyro_scm.inference.morpho_demo [--quick] [--out results] [--device cpu]``;
``--devices N`` trains on N devices with Lightning's DDP (``--lightning``: on a Trainer, one
device).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
from pyro_scm.inference import _common

import pyro_scm as ps
from pyro_scm.extrapolation import ALPHA

SAMPLERS = ("langevin", "mala", "hmc", "nuts", "chmc", "cmala", "auto")
IMAGE_CHOICES = ("vae", "vae+res", "hvae", "hvae+res", "diffusion")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the main job."""
    parser = _common.parser(__doc__, "small model and data (about 1 min)")
    parser.add_argument("--units", type=int, default=8, help="held-out digits to query")
    parser.add_argument("--sampler", choices=SAMPLERS, default="auto", help="stochastic DeepBC")
    parser.add_argument("--intensity", type=float, default=110.0, help="the antecedent/do value")
    parser.add_argument("--thickness", type=float, default=4.0, help="do(thickness) value")
    parser.add_argument(
        "--devices", type=int, default=1, help="train on N devices with Lightning (DDP if N > 1)"
    )
    parser.add_argument("--lightning", action="store_true", help="train with a Lightning Trainer")
    # -- the image mechanism (issue 14): the image benchmark's best by default
    parser.add_argument(
        "--image",
        choices=IMAGE_CHOICES,
        default=None,
        help="image mechanism (default: the best by benchmarks/image_benchmark.py)",
    )
    args = _common.check(parser, parser.parse_args(argv))
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    if args.units < 1:
        parser.error("--units must be at least 1")
    if not 0 < args.intensity <= 255:
        parser.error("--intensity must lie in (0, 255]")
    if not 0 < args.thickness <= 10:
        parser.error("--thickness must lie in (0, 10]")
    return args


def _trainer(args: argparse.Namespace):
    """The Lightning Trainer of ``--devices`` / ``--lightning`` (see docs/scaling.md)."""
    import lightning as L
    from pyro_scm.models.morpho_mnist import DEFAULT, QUICK

    return L.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs or (QUICK if args.quick else DEFAULT).epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=not args.no_progress,
        default_root_dir=str(args.out),
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the main job; returns the metrics written to ``summary.md``."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pyro_scm.models.morpho_mnist import BEST_IMAGE, morpho_mnist_data, train

    from pyro_scm.datasets import measure_intensity, measure_thickness
    from pyro_scm.graph import plot_graph
    from pyro_scm.plotting import plot_image_grid, plot_scatter

    args = parse_args(argv)
    progress = not args.no_progress
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    n_train = 600 if args.quick else 2000
    data = morpho_mnist_data(n_train + 4 * args.units, seed=args.seed)
    train_data, test_data = data.split(test_fraction=4 * args.units / len(data.digit))
    image = args.image or BEST_IMAGE
    kind, keep_residual = image.removesuffix("+res"), image.endswith("+res")
    start = time.perf_counter()
    trainer = _trainer(args) if args.devices > 1 or args.lightning else None
    scm, _, history = train(
        quick=args.quick,
        epochs=args.epochs,
        seed=args.seed,
        data=train_data,
        progress=progress,
        trainer=trainer,
        image=kind,
    )
    fit_seconds = time.perf_counter() - start
    if trainer is not None and not trainer.is_global_zero:
        return {}  # the other DDP ranks only train; rank 0 answers the queries
    scm = scm.to(device)
    history.to_csv(out / "history.csv", index=False)
    print(scm)

    units = min(args.units, len(test_data.digit))
    factual = {k: v[:units].to(device) for k, v in test_data.to_dict().items()}
    thick, dim = args.thickness, args.intensity

    def measured(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = 255 * images.reshape(-1, *images.shape[-3:]).cpu()
        return measure_thickness(pixels), measure_intensity(pixels)

    start = time.perf_counter()
    interventional = scm.do({"thickness": thick}).sample(16)
    # counterfactual images keep the factual image's detail through the decoder residual (+res)
    if kind != "diffusion":
        scm.image.residual = keep_residual
    counterfactual = scm.counterfactual(factual, do={"intensity": dim})
    mode = scm.backtrack(factual, antecedent={"intensity": dim}, method="mode")
    quick = args.quick
    # stochastic DeepBC redraws non-ancestor latents from P_B(u* | u_F) = N(u_F, I/2): without the
    # residual those are the VAE's latent code only, not 784 pixel noises
    if kind != "diffusion":
        scm.image.residual = False
    with warnings.catch_warnings(record=True) as caught:  # reported in summary.md
        warnings.simplefilter("always", ps.infer.BacktrackingWarning)
        sampled = scm.backtrack(
            factual,
            antecedent={"intensity": dim},
            method=args.sampler,
            num_samples=50 if quick else 100,
            num_chains=2,
            warmup=50 if quick else 100,
            sigma=2.0,  # the antecedent's tolerance, in intensity units (0-255)
            progress=progress,
        )
    sampler_warnings = [
        str(w.message) for w in caught if issubclass(w.category, ps.infer.BacktrackingWarning)
    ]
    for w in caught:
        if not issubclass(w.category, ps.infer.BacktrackingWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    query_seconds = time.perf_counter() - start
    results = {
        "interventional": interventional,
        "counterfactual": counterfactual,
        "backtrack_mode": mode,
        f"backtrack_{args.sampler}": sampled,
    }
    for name, result in results.items():
        result.to_arviz().to_netcdf(str(out / f"{name}.nc"))

    # figures
    fig = plot_graph(scm.graph, intervened=["intensity"])
    fig.savefig(out / "graph.png", dpi=100)
    plt.close(fig)
    fig = plot_image_grid({f"do(thickness={thick:g})": interventional["image"][:, 0]})
    fig.savefig(out / "interventional.png", dpi=100)
    plt.close(fig)
    grid = {
        "factual": factual["image"],
        f"do(i={dim:g})": counterfactual["image"][0],
        "backtrack mode": mode["image"][0],
        f"{args.sampler} draw": sampled["image"][-1],
    }
    fig = plot_image_grid(grid)
    fig.savefig(out / "counterfactuals.png", dpi=100)
    plt.close(fig)
    fig = plot_scatter(
        {
            "factual": (factual["thickness"], factual["intensity"]),
            "interventional CF": (counterfactual["thickness"][0], counterfactual["intensity"][0]),
            "backtracking (mode)": (mode["thickness"][0], mode["intensity"][0]),
            f"backtracking ({args.sampler})": (sampled["thickness"], sampled["intensity"]),
        },
        "thickness",
        "intensity",
        f"antecedent intensity = {dim:g}",
    )
    fig.savefig(out / "scatter.png", dpi=100)
    plt.close(fig)
    axes = az.plot_trace(sampled.to_arviz(), var_names=["thickness"], compact=True)
    axes.ravel()[0].figure.savefig(out / "trace.png", dpi=100)
    plt.close("all")

    # metrics: what the images show, measured by the Morpho-MNIST oracle
    metrics = {"fit_seconds": fit_seconds, "query_seconds": query_seconds, "image": image}
    rows = []
    for label, result in (("interventional CF", counterfactual), ("backtracking (mode)", mode)):
        t_img, i_img = measured(result["image"])
        dt = (result["thickness"][0] - factual["thickness"]).abs().mean().item()
        metrics[f"{label}: intensity error"] = (i_img - dim).abs().mean().item()
        metrics[f"{label}: |thickness change|"] = dt
        rows.append(
            f"| {label} | {(i_img - dim).abs().mean():.1f} | {dt:.3f} | {t_img.mean():.2f} |"
        )
    t_s, _ = measured(sampled["image"])
    dt_s = (sampled["thickness"] - factual["thickness"]).abs().mean().item()
    metrics[f"backtracking ({args.sampler}): |thickness change|"] = dt_s
    rows.append(f"| backtracking ({args.sampler}) | - | {dt_s:.3f} | {t_s.mean():.2f} |")
    t_int, _ = measured(interventional["image"][:, 0])
    metrics["interventional: measured thickness"] = t_int.mean().item()
    with warnings.catch_warnings():  # R-hat of a chain that barely moves divides by ~0
        warnings.simplefilter("ignore", RuntimeWarning)
        summary = az.summary(sampled.to_arviz(), var_names=["thickness"], kind="diagnostics")
    metrics["sampler max r_hat"] = float(summary["r_hat"].max())
    flagged = _flagged_line(counterfactual)
    metrics["interventional CF: units flagged"] = float(flagged[0])
    lines = [
        "# pyro_scm main job: Morpho-MNIST",
        "",
        f"Image mechanism: **{image}**"
        + (
            " (the best by the image benchmark, docs/image-benchmark.md)"
            if image == BEST_IMAGE
            else ""
        )
        + ".",
        "",
        f"Trained on {len(train_data.digit)} digits in {fit_seconds:.0f} s on {device}; "
        f"queries on {units} held-out digits took {query_seconds:.1f} s.",
        "",
        f"## Interventional: do(thickness = {thick:g})",
        "",
        f"Mean measured thickness of 16 sampled images: {t_int.mean():.2f} "
        f"(intended {thick:g}); see `interventional.png`.",
        "",
        f"## Counterfactual and backtracking: intensity = {dim:g}",
        "",
        "| query | measured intensity error | mean abs. thickness change | measured thickness |",
        "|---|---|---|---|",
        *rows,
        "",
        "The interventional counterfactual keeps thickness (intensity's cause); backtracking",
        "explains the new intensity by changing thickness. See `counterfactuals.png`,",
        f"`scatter.png`, and `trace.png` (max R-hat {metrics['sampler max r_hat']:.2f}).",
        "",
        "## Diagnostics",
        "",
        flagged[1],
        *_common.diagnostics("backtracking (mode)", mode),
        *_common.diagnostics(f"backtracking ({args.sampler})", sampled),
        f"Sampler diagnostics ({args.sampler}): "
        + ("; ".join(sampler_warnings) if sampler_warnings else "no warnings."),
        "",
        "Files: " + ", ".join(f"`{name}.nc`" for name in results) + ", `graph.png`, "
        "`interventional.png`, `counterfactuals.png`, `scatter.png`, `trace.png`, `history.csv`.",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return metrics


def _flagged_line(result) -> tuple[int, str]:
    """Units of a counterfactual flagged as extrapolations, and a summary line naming the nodes."""
    count = _common.flagged_units(result)
    nodes = [
        k.removeprefix("extrapolation_")
        for k, p in result.sample_stats.items()
        if k.startswith("extrapolation_") and bool((p <= ALPHA).any())
    ]
    where = f" (parents off the training support at: {', '.join(nodes)})" if nodes else ""
    return count, (
        f"- interventional CF: {count} of {result.num_units} units flagged as extrapolations"
        f"{where}; `result.sample_stats['extrapolated']`"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
