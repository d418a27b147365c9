"""Morpho-MNIST image counterfactuals with the VAE image mechanism: a table of effectiveness,
composition, realism and minimality for do(thickness), do(intensity) and do(digit), with the
encoder-mean abduction (DeepBC) and with the decoder residual (deepscm), and an image grid.

    python benchmarks/morpho_mnist.py --quick        # about a minute on CPU
    python benchmarks/morpho_mnist.py                # a few minutes

Writes ``results.json``, ``table.md`` and ``grid.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from pyro_scm.models.morpho_mnist import train

from pyro_scm.datasets.morpho_mnist import load_morpho_mnist
from pyro_scm.metrics import images as im

COLUMNS = [
    "thickness_mae",
    "intensity_mae",
    "digit_accuracy",
    "frechet",
    "cld",
]


def _interventions(test: dict, seed: int) -> dict[str, dict]:
    """do(thickness), do(intensity): each unit gets another unit's value; do(digit): another
    digit."""
    g = torch.Generator().manual_seed(seed)
    n = test["thickness"].shape[0]
    perm = torch.randperm(n, generator=g)
    shift = torch.randint(1, 10, (n,), generator=g)
    return {
        "do(thickness)": {"thickness": test["thickness"][perm]},
        "do(intensity)": {"intensity": test["intensity"][perm]},
        "do(digit)": {"digit": (test["digit"] + shift) % 10},
    }


def evaluate(
    scm, test, classifier, reference_vae, reference, reference_labels, seed: int
) -> dict[str, dict]:
    """Metrics per intervention for the model's current abduction setting."""
    rows = {}
    for name, do in _interventions(test, seed).items():
        cf = scm.counterfactual(test, do=do)
        x = cf["image"][0]
        intended = {
            "thickness": cf["thickness"][0],
            "intensity": cf["intensity"][0],
            "digit": cf["digit"][0],
        }
        row = im.effectiveness(x, intended, classifier=classifier)
        row["frechet"] = im.realism(classifier, x, reference)
        row["cld"] = (
            im.counterfactual_latent_divergence(
                reference_vae,
                test["image"],
                x,
                test["digit"],
                do["digit"],
                reference,
                reference_labels,
            )
            if name == "do(digit)"
            else float("nan")
        )
        rows[name] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/out/morpho_mnist")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_test = args.n_test or (64 if args.quick else 200)

    start = time.perf_counter()
    scm, data, history = train(quick=args.quick, seed=args.seed, progress=False)
    train_seconds = history.attrs["seconds"]
    data_seconds = time.perf_counter() - start - train_seconds
    test = load_morpho_mnist(n=n_test, seed=args.seed + 1000).to_dict()
    reference, reference_labels = data.images, data.digit
    t0 = time.perf_counter()
    classifier = im.train_digit_classifier(reference, reference_labels, epochs=8, lr=3e-3)
    reference_vae = im.train_reference_vae(reference, epochs=3 if args.quick else 6)
    oracle_seconds = time.perf_counter() - t0

    floor = im.effectiveness(
        test["image"],
        {k: test[k] for k in ("thickness", "intensity", "digit")},
        classifier=classifier,
    )
    floor["frechet"] = im.realism(classifier, test["image"], reference)
    results = {"real test images": {"": floor}}
    timings = {}
    for mode in ("mean", "residual"):
        scm.image.residual = mode == "residual"
        t0 = time.perf_counter()
        rows = evaluate(
            scm, test, classifier, reference_vae, reference, reference_labels, args.seed
        )
        timings[mode] = time.perf_counter() - t0
        comp = im.composition(scm, test, "image", cycles=10)
        for row in rows.values():
            row.update(comp)
        results[f"abduction={mode}"] = rows
    scm.image.residual = False

    header = ["model", "intervention", *COLUMNS, "l1_1", "l1_10"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, rows in results.items():
        for name, row in rows.items():
            cells = [f"{row.get(c, float('nan')):.3f}" for c in header[2:]]
            lines.append("| " + " | ".join([model, name, *cells]) + " |")
    table = "\n".join(lines)
    summary = {
        "quick": args.quick,
        "n_train": len(data),
        "n_test": n_test,
        "seconds": {
            "data": data_seconds,
            "fit": train_seconds,
            "classifier_and_reference_vae": oracle_seconds,
            "queries": timings,
        },
        "epochs": int(history.epoch.max()) + 1,
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text(table + "\n")
    _grid(scm, test, out / "grid.png")
    print(table)
    print(json.dumps(summary["seconds"], indent=2))


def _grid(scm, test: dict, path: Path, units: int = 8) -> None:
    """Rows: factual, do(thickness = 1.5), do(thickness = 4.5), do(intensity = 90),
    do(intensity = 250), do(digit = d + 1); columns: units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factual = {k: v[:units] for k, v in test.items()}
    rows = {"factual": factual["image"]}
    for label, do in {
        "t=1.5": {"thickness": 1.5},
        "t=4.5": {"thickness": 4.5},
        "i=90": {"intensity": 90.0},
        "i=250": {"intensity": 250.0},
        "digit+1": {"digit": (factual["digit"] + 1) % 10},
    }.items():
        rows[label] = scm.counterfactual(factual, do=do)["image"][0]
    fig, axes = plt.subplots(len(rows), units, figsize=(units, len(rows) + 0.3))
    for r, (label, images) in enumerate(rows.items()):
        for c in range(units):
            ax = axes[r, c]
            ax.imshow(images[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
