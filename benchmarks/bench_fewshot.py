"""Few-shot grid: batched heads vs the straightforward loop of independent fits.

For each problem, fits the full grid (shots x heads x seeds, from cached features) twice,
side by side in the same process:

- ours: ``repalign.fewshot.evaluate_fewshot`` (all seeds of a shots value trained as one
  batched tensor program per head; the linear head by batched L-BFGS);
- baseline: a loop over (seed, shots) of scikit-learn ``LogisticRegression`` fits (same C,
  lbfgs with the same tol and max_iter, StandardScaler on the training shots) and of small per-fit torch training loops for
  the MLP heads (same algorithm, same per-task random generators, dense dropout masks built
  from the same draw of kept positions, ``torch.optim.AdamW`` with its defaults).

It prints the time of each, the ratio, and the largest difference in accuracy (per seed
and of the mean over seeds), in percentage points.

Problems: ``mnist`` (raw pixels of the 10k test images, 784-d; needs the data mirror or a
download) and ``cifar100-synthetic`` (100 classes x 100 images, 2048-d non-negative features,
the size of CIFAR-100's test split embedded by a ResNet-50).

    python benchmarks/bench_fewshot.py                      # both problems, full grid
    python benchmarks/bench_fewshot.py --problems mnist --seeds 2 --shots 1,10
    python benchmarks/bench_fewshot.py --quick --threads 1     # shots 1,10,80 x 2 seeds
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd


def mnist_pixels():
    from repalign.data.fewshot_datasets import load_fewshot_dataset

    data = load_fewshot_dataset("mnist")
    return data.images.images.reshape(len(data), -1).astype(
        np.float32
    ) / 255.0, data.labels


def cifar100_synthetic(
    seed: int = 0,
    *,
    n_classes: int = 100,
    per_class: int = 100,
    dim: int = 2048,
    scale: float = 0.45,
):
    """Non-negative features with class structure in a 64-d latent space (like pooled ReLU features)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, 64)) * scale
    labels = np.repeat(np.arange(n_classes), per_class)
    latent = means[labels] + rng.normal(size=(len(labels), 64))
    mixing = rng.normal(size=(64, dim)) / 8.0
    features = np.maximum(
        latent @ mixing + 0.5 * rng.normal(size=(len(labels), dim)), 0.0
    )
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


# ------------------------------------------------------------------------------- baseline


def baseline_linear(features, labels, split, settings) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[split.train])
    model = LogisticRegression(
        C=settings.C, tol=settings.tol, max_iter=settings.max_iter
    )
    model.fit(scaler.transform(features[split.train]), labels[split.train])
    return float(
        model.score(scaler.transform(features[split.eval]), labels[split.eval])
    )


def baseline_mlp(
    head, features, labels, split, seed, shots, n_classes, settings
) -> float:
    """One fit, the plain way: its own tensors, modules-free forward, torch.optim.AdamW."""
    import torch
    import torch.nn.functional as F

    from repalign._fewshot_heads import (
        draw_dropout_keep,
        draw_minibatch,
        init_mlp,
        task_generator_seed,
    )

    x = torch.as_tensor(features[split.train])
    y = torch.as_tensor(labels[split.train])
    mean, std = x.mean(0), x.std(0, unbiased=False)
    inv = torch.where(
        x.amax(0) == x.amin(0), torch.zeros_like(std), 1.0 / std.clamp_min(1e-30)
    )
    x = (x - mean) * inv
    generator = torch.Generator().manual_seed(task_generator_seed(seed, shots, head))
    layers = init_mlp(head, x.shape[1], n_classes, settings, generator, x.device)
    params = [p.clone().requires_grad_(True) for layer in layers for p in layer]
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, weight_decay=settings.weight_decay
    )

    def forward(h):
        for j in range(0, len(params), 2):
            h = torch.addmm(params[j + 1], h, params[j])
            if j + 2 < len(params):
                h = torch.relu(h)
        return h

    for _ in range(settings.n_steps):
        picked = draw_minibatch(len(x), settings, generator, x.device)
        xb, yb = (x, y) if picked is None else (x[picked], y[picked])
        keep = draw_dropout_keep(len(xb), x.shape[1], settings, generator, x.device)
        loss = F.cross_entropy(forward(xb * keep), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x_eval = (torch.as_tensor(features[split.eval]) - mean) * inv
        predicted = forward(x_eval).argmax(1).numpy()
    return float(np.mean(predicted == labels[split.eval]))


def run_baseline_head(features, labels, manifest, head, settings):
    n_classes = len(np.unique(labels))
    rows = []
    start = time.perf_counter()
    for (seed, shots), split in sorted(manifest.splits.items()):
        if head == "linear":
            accuracy = baseline_linear(features, labels, split, settings)
        else:
            accuracy = baseline_mlp(
                head, features, labels, split, seed, shots, n_classes, settings
            )
        rows.append({"head": head, "shots": shots, "seed": seed, "accuracy": accuracy})
    return pd.DataFrame(rows), time.perf_counter() - start


def run_ours_head(features, labels, manifest, head, settings):
    from repalign.fewshot import evaluate_fewshot

    start = time.perf_counter()
    frame = evaluate_fewshot(
        features,
        labels,
        heads=head,
        splits=manifest,
        per_seed=True,
        device="cpu",
        settings=settings,
    )
    return frame, time.perf_counter() - start


def compare(name, features, labels, shots, seeds, heads, settings):
    from repalign.fewshot import make_splits

    manifest = make_splits(labels, shots=shots, seeds=seeds, dataset=name)
    print(f"\n== {name}: {features.shape[0]} examples x {features.shape[1]} features, "
          f"{len(np.unique(labels))} classes; grid {len(manifest.shots)} shots x {len(heads)} heads x "
          f"{len(manifest.seeds)} seeds = {len(manifest.splits) * len(heads)} fits", flush=True)  # fmt: skip
    # Side by side, head by head, so that changes in machine load hit both alike.
    ours_parts, base_parts, ours_times, base_times = [], [], {}, {}
    for head in heads:
        frame, ours_times[head] = run_ours_head(
            features, labels, manifest, head, settings
        )
        ours_parts.append(frame)
        frame, base_times[head] = run_baseline_head(
            features, labels, manifest, head, settings
        )
        base_parts.append(frame)
        print(
            f"  {head}: ours {ours_times[head]:.2f}s, loop {base_times[head]:.2f}s",
            flush=True,
        )
    ours, base = (
        pd.concat(ours_parts, ignore_index=True),
        pd.concat(base_parts, ignore_index=True),
    )
    merged = ours.merge(base, on=["head", "shots", "seed"], suffixes=("_ours", "_base"))
    print(f"{'head':8s} {'ours_s':>9s} {'loop_s':>9s} {'speedup':>8s} {'max|d acc| seed (pts)':>22s} "
          f"{'max|d acc| mean (pts)':>22s}")  # fmt: skip
    for head in heads:
        part = merged[merged["head"] == head]
        per_seed = 100 * (part.accuracy_ours - part.accuracy_base).abs().max()
        means = part.groupby("shots")[["accuracy_ours", "accuracy_base"]].mean()
        per_mean = 100 * (means.accuracy_ours - means.accuracy_base).abs().max()
        print(f"{head:8s} {ours_times[head]:9.2f} {base_times[head]:9.2f} "
              f"{base_times[head] / ours_times[head]:7.2f}x {per_seed:22.2f} {per_mean:22.2f}")  # fmt: skip
    total_ours, total_base = sum(ours_times.values()), sum(base_times.values())
    per_seed = 100 * (merged.accuracy_ours - merged.accuracy_base).abs().max()
    print(
        f"{'total':8s} {total_ours:9.2f} {total_base:9.2f} {total_base / total_ours:7.2f}x {per_seed:22.2f}"
    )
    table = (
        merged.groupby(["head", "shots"])[["accuracy_ours", "accuracy_base"]]
        .mean()
        .mul(100)
        .round(2)
    )
    print("mean accuracy over seeds (%):")
    print(table.unstack("head").to_string())
    return total_ours, total_base


def main(argv=None) -> None:
    import torch

    from repalign.fewshot import HeadSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="mnist,cifar100-synthetic")
    parser.add_argument("--shots", default="1,5,10,20,40,80")
    parser.add_argument("--heads", default="linear,mlp1,mlp2")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for iterating: shots 1,10,80 and 2 seeds (overrides --shots/--seeds)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.shots, args.seeds = "1,10,80", 2
    # scikit-learn warns when a 1-shot problem has more classes than half its samples.
    warnings.filterwarnings("ignore", message="The number of unique classes")
    if args.threads:
        torch.set_num_threads(args.threads)
    shots = tuple(int(s) for s in args.shots.split(","))
    heads = tuple(args.heads.split(","))
    settings = HeadSettings()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; settings {settings}"
    )
    problems = {"mnist": mnist_pixels, "cifar100-synthetic": cifar100_synthetic}
    for name in args.problems.split(","):
        features, labels = problems[name]()
        compare(name, features, labels, shots, args.seeds, heads, settings)


if __name__ == "__main__":
    main()
