"""Few-shot grid: batched heads vs the straightforward loop of independent fits.

For each problem, fits the full grid (shots x heads x seeds, from cached features) with our
batched heads and with per-fit loops, side by side in the same process, head by head:

- ours: ``repalign.fewshot.evaluate_fewshot`` (all seeds of a shots value trained as one
  batched tensor program per head; the linear head by batched L-BFGS);
- the linear head's loop: scikit-learn ``LogisticRegression`` per fit (same C, lbfgs with
  the same tol and max_iter, StandardScaler on the training shots);
- the MLP heads' loops, one small torch training loop per fit, two ways:
  - ``modules``: as one would write it, ``torch.nn`` Dropout / Linear / ReLU and
    ``torch.optim.AdamW`` with its defaults (same initial weights and minibatches as ours;
    dropout from torch's own generator, so accuracies differ by training noise);
  - ``same-draws``: the same algorithm fed exactly our random draws (per-fit generator,
    dense masks built from our kept positions), so accuracies must agree up to rounding
    (and bfloat16 products, where ours uses them). It also uses our fast dropout sampler,
    which makes it faster than the ``modules`` loop: the stricter baseline.

It prints the time of each, the ratio, and the largest difference in accuracy (per seed
and of the mean over seeds), in percentage points, then the full-grid ratios.

Problems: ``mnist`` (raw pixels of the 10k test images, 784-d; needs the data mirror or a
download) and ``cifar100-synthetic`` (100 classes x 100 images, 2048-d non-negative features,
the size of CIFAR-100's test split embedded by a ResNet-50).

    python benchmarks/bench_fewshot.py                      # both problems, full grid
    python benchmarks/bench_fewshot.py --problems mnist --seeds 2 --shots 1,10
    python benchmarks/bench_fewshot.py --quick --threads 1 --loops same-draws

``--models N`` times instead the grid of N models on the same splits (CIFAR-100-sized
synthetic features, different per model, the same labels), three ways side by side, head
by head: ``evaluate_fewshot_many`` (the fits of all models batched together), our per-model
path (``evaluate_fewshot`` once per model), and the straightforward loops (scikit-learn for
the linear head, the ``modules`` torch.nn loop for the MLP heads). The loops' time is linear
in the number of models; ``--loop-models K`` runs them on the first K models only and
scales their time by N/K (said in the output):

    python benchmarks/bench_fewshot.py --models 10 --shots 1,10,80 --loop-models 2

With ``--models`` the defaults are smaller (shots 1 and 10, 2 seeds, 512-d features like a
ResNet-18's, loops on 1 model): minutes on 2 busy cores. The last line is JSON (ratios, accuracy differences in points).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import numpy as np
import pandas as pd


def mnist_pixels():
    from repalign.data.fewshot_datasets import load_fewshot_dataset

    data = load_fewshot_dataset("mnist")
    return data.images.images.reshape(len(data), -1).astype(np.float32) / 255.0, data.labels


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
    features = np.maximum(latent @ mixing + 0.5 * rng.normal(size=(len(labels), dim)), 0.0)
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


# ------------------------------------------------------------------------------- baseline


def baseline_linear(features, labels, split, settings) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[split.train])
    model = LogisticRegression(C=settings.C, tol=settings.tol, max_iter=settings.max_iter)
    model.fit(scaler.transform(features[split.train]), labels[split.train])
    return float(model.score(scaler.transform(features[split.eval]), labels[split.eval]))


def standardized_split(features, labels, split):
    """Training features and labels, and evaluation features, as torch tensors, standardized
    with the training rows' statistics (columns constant there are zeroed), as ours does."""
    import torch

    x = torch.as_tensor(features[split.train])
    mean, std = x.mean(0), x.std(0, unbiased=False)
    inv = torch.where(x.amax(0) == x.amin(0), torch.zeros_like(std), 1.0 / std.clamp_min(1e-30))
    x_eval = (torch.as_tensor(features[split.eval]) - mean) * inv
    return (x - mean) * inv, torch.as_tensor(labels[split.train]), x_eval


def baseline_mlp(head, features, labels, split, seed, shots, n_classes, settings) -> float:
    """One fit, the plain way: its own tensors, modules-free forward, torch.optim.AdamW."""
    import torch
    import torch.nn.functional as F

    from repalign.fewshot._heads import task_generator_seed
    from repalign.fewshot._mlp import TaskDraws, dropout_multipliers, init_mlp

    x, y, x_eval = standardized_split(features, labels, split)
    generator = torch.Generator().manual_seed(task_generator_seed(seed, shots, head))
    layers = init_mlp(head, x.shape[1], n_classes, settings, generator, x.device)
    params = [p.clone().requires_grad_(True) for layer in layers for p in layer]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    def forward(h):
        for j in range(0, len(params), 2):
            h = torch.addmm(params[j + 1], h, params[j])
            if j + 2 < len(params):
                h = torch.relu(h)
        return h

    draws = TaskDraws(generator, len(x), x.shape[1], settings, x.device)
    for _ in range(settings.n_steps):
        picked, kept = draws.next()
        xb, yb = (x, y) if picked is None else (x[picked], y[picked])
        keep = dropout_multipliers(kept, len(xb), x.shape[1], settings)
        loss = F.cross_entropy(forward(xb * keep), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = forward(x_eval).argmax(1).numpy()
    return float(np.mean(predicted == labels[split.eval]))


def baseline_mlp_modules(head, features, labels, split, seed, shots, n_classes, settings) -> float:
    """One fit as one would write it: torch.nn modules (Dropout, Linear, ReLU), minibatches by
    randint, torch.optim.AdamW. Same initial weights as ours (taken from the task's generator);
    the dropout masks come from torch's global generator, seeded per task, so accuracies
    differ from ours by training noise, not only by rounding."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from repalign.fewshot._heads import task_generator_seed
    from repalign.fewshot._mlp import init_mlp

    x, y, x_eval = standardized_split(features, labels, split)
    task_seed = task_generator_seed(seed, shots, head)
    generator = torch.Generator().manual_seed(task_seed)
    modules: list = [nn.Dropout(settings.dropout)]
    for i, (weight, bias) in enumerate(init_mlp(head, x.shape[1], n_classes, settings, generator, x.device)):
        if i:
            modules.append(nn.ReLU())
        linear = nn.Linear(*weight.shape)
        with torch.no_grad():
            linear.weight.copy_(weight.T)
            linear.bias.copy_(bias)
        modules.append(linear)
    model = nn.Sequential(*modules)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    torch.manual_seed(task_seed % 2**63)
    for _ in range(settings.n_steps):
        if len(x) > settings.batch_size:
            picked = torch.randint(len(x), (settings.batch_size,), generator=generator)
            xb, yb = x[picked], y[picked]
        else:
            xb, yb = x, y
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(x_eval).argmax(1).numpy()
    return float(np.mean(predicted == labels[split.eval]))


#: The per-fit loops ours is compared with. The linear head's loop is scikit-learn in both.
LOOPS = {"same-draws": baseline_mlp, "modules": baseline_mlp_modules}


def run_baseline_head(features, labels, manifest, head, settings, loop="same-draws"):
    n_classes = len(np.unique(labels))
    rows = []
    start = time.perf_counter()
    for (seed, shots), split in sorted(manifest.splits.items()):
        if head == "linear":
            accuracy = baseline_linear(features, labels, split, settings)
        else:
            accuracy = LOOPS[loop](head, features, labels, split, seed, shots, n_classes, settings)
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
    seconds = time.perf_counter() - start
    return frame.rename(columns={"value": "accuracy"}), seconds  # the baselines' column name


def warm_up(features, labels, heads, settings, loops=("same-draws",)):
    """Run both sides once on a tiny grid, so that neither timing includes first-call costs
    (imports of scikit-learn, scipy.stats and torch's lazily loaded modules, numba caches)."""
    import dataclasses

    from repalign.fewshot import make_splits

    tiny = make_splits(labels, shots=(1,), seeds=1, max_eval_per_class=2)
    quick = dataclasses.replace(settings, n_steps=2, max_iter=5)
    # Five iterations do not converge: silence both sides' warnings about it.
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for head in heads:
                run_ours_head(features, labels, tiny, head, quick)
                for loop in loops:
                    run_baseline_head(features, labels, tiny, head, quick, loop)
    finally:
        logging.disable(logging.NOTSET)


def compare(name, features, labels, shots, seeds, heads, settings, loops):
    from repalign.fewshot import make_splits

    warm_up(features, labels, heads, settings, loops)
    manifest = make_splits(labels, shots=shots, seeds=seeds, dataset=name)
    print(
        f"\n== {name}: {features.shape[0]} examples x {features.shape[1]} features, "
        f"{len(np.unique(labels))} classes; grid {len(manifest.shots)} shots x {len(heads)} heads x "
        f"{len(manifest.seeds)} seeds = {len(manifest.splits) * len(heads)} fits",
        flush=True,
    )
    # Side by side, head by head, so that changes in machine load hit all alike.
    parts: dict[str, list] = {"ours": [], **{loop: [] for loop in loops}}
    times: dict[str, dict] = {key: {} for key in parts}
    for head in heads:
        frame, times["ours"][head] = run_ours_head(features, labels, manifest, head, settings)
        parts["ours"].append(frame)
        for i, loop in enumerate(loops):
            if head == "linear" and i:  # the same scikit-learn loop: reuse it
                frame, times[loop][head] = parts[loops[0]][-1], times[loops[0]][head]
            else:
                frame, times[loop][head] = run_baseline_head(features, labels, manifest, head, settings, loop)
            parts[loop].append(frame)
        print(
            f"  {head}: ours {times['ours'][head]:.2f}s, "
            + ", ".join(f"{loop} loop {times[loop][head]:.2f}s" for loop in loops),
            flush=True,
        )
    ours = pd.concat(parts["ours"], ignore_index=True)
    ratios = {}
    for loop in loops:
        base = pd.concat(parts[loop], ignore_index=True)
        ratios[loop] = report(ours, base, times["ours"], times[loop], heads, loop)
    return ratios


def report(ours, base, ours_times, base_times, heads, loop):
    """Print the time, speedup and accuracy differences against one loop; return the total ratio."""
    merged = ours.merge(base, on=["head", "shots", "seed"], suffixes=("_ours", "_base"))
    print(f"-- against the {loop} loop (linear: scikit-learn)")
    print(
        f"{'head':8s} {'ours_s':>9s} {'loop_s':>9s} {'speedup':>8s} {'max|d acc| seed (pts)':>22s} "
        f"{'max|d acc| mean (pts)':>22s}"
    )
    for head in heads:
        part = merged[merged["head"] == head]
        per_seed = 100 * (part.accuracy_ours - part.accuracy_base).abs().max()
        means = part.groupby("shots")[["accuracy_ours", "accuracy_base"]].mean()
        per_mean = 100 * (means.accuracy_ours - means.accuracy_base).abs().max()
        print(
            f"{head:8s} {ours_times[head]:9.2f} {base_times[head]:9.2f} "
            f"{base_times[head] / ours_times[head]:7.2f}x {per_seed:22.2f} {per_mean:22.2f}"
        )
    total_ours, total_base = sum(ours_times.values()), sum(base_times.values())
    per_seed = 100 * (merged.accuracy_ours - merged.accuracy_base).abs().max()
    means = merged.groupby(["head", "shots"])[["accuracy_ours", "accuracy_base"]].mean()
    per_mean = 100 * (means.accuracy_ours - means.accuracy_base).abs().max()
    print(
        f"{'total':8s} {total_ours:9.2f} {total_base:9.2f} {total_base / total_ours:7.2f}x "
        f"{per_seed:22.2f} {per_mean:22.2f}"
    )
    print("mean accuracy over seeds (%):")
    print(means.mul(100).round(2).unstack("head").to_string())
    return total_base / total_ours


def cifar100_synthetic_models(n_models: int, **options):
    """N models' features of the same examples: :func:`cifar100_synthetic` with seed m for model
    m (its own class means, mixing and noise), rows put in one common order so that all
    share the labels."""
    features, labels = {}, None
    order = np.random.default_rng(12345).permutation(len(cifar100_synthetic(0, **options)[1]))
    for m in range(n_models):
        x, y = cifar100_synthetic(m, **options)
        by_class = np.argsort(y, kind="stable")
        features[f"model{m}"] = x[by_class][order]
        if labels is None:
            labels = y[by_class][order]
    return features, labels


def compare_models(n_models, shots, seeds, heads, settings, loop_models=None, dim=2048):
    """The grid of ``n_models`` models three ways: batched across models, per model, loops."""
    from repalign.fewshot import evaluate_fewshot, evaluate_fewshot_many, make_splits

    features, labels = cifar100_synthetic_models(n_models, dim=dim)
    names = list(features)
    loop_names = names[: loop_models or n_models]
    warm_up(features[names[0]], labels, heads, settings, ("modules",))
    manifest = make_splits(labels, shots=shots, seeds=seeds, dataset="cifar100-synthetic")
    fits = len(manifest.splits) * len(heads)
    print(
        f"\n== {n_models} models x cifar100-synthetic ({len(labels)} examples x {dim} features, 100 classes); "
        f"grid {len(manifest.shots)} shots x {len(heads)} heads x {len(manifest.seeds)} seeds = {fits} fits per model, "
        f"{fits * n_models} in all; loops on {len(loop_names)} model(s)"
        + (f", time scaled by {n_models}/{len(loop_names)}" if len(loop_names) < n_models else ""),
        flush=True,
    )
    times = {way: {} for way in ("many", "per-model", "loops")}
    frames = {way: [] for way in times}
    for head in heads:
        start = time.perf_counter()
        many = evaluate_fewshot_many(
            features, labels, heads=head, splits=manifest, per_seed=True, device="cpu", settings=settings
        )
        times["many"][head] = time.perf_counter() - start
        frames["many"].append(many.rename(columns={"value": "accuracy"}))
        start = time.perf_counter()
        for name in names:
            one = evaluate_fewshot(
                features[name], labels, heads=head, splits=manifest, per_seed=True, device="cpu", settings=settings
            )
            frames["per-model"].append(one.rename(columns={"value": "accuracy"}).assign(model=name))
        times["per-model"][head] = time.perf_counter() - start
        loop_seconds = 0.0
        for name in loop_names:
            base, seconds = run_baseline_head(features[name], labels, manifest, head, settings, "modules")
            frames["loops"].append(base.assign(model=name))
            loop_seconds += seconds
        times["loops"][head] = loop_seconds * n_models / len(loop_names)
        print(
            f"  {head}: across models {times['many'][head]:.2f}s, per model {times['per-model'][head]:.2f}s, "
            f"loops {times['loops'][head]:.2f}s",
            flush=True,
        )
    keys = ["model", "head", "shots", "seed"]
    many = pd.concat(frames["many"], ignore_index=True)[[*keys, "accuracy"]]
    per_model = pd.concat(frames["per-model"], ignore_index=True)[[*keys, "accuracy"]]
    loops = pd.concat(frames["loops"], ignore_index=True)[[*keys, "accuracy"]]
    same = many.merge(per_model, on=keys, suffixes=("_many", "_one"))
    against = many.merge(loops, on=keys, suffixes=("_many", "_loop"))
    print(
        f"{'head':8s} {'many_s':>9s} {'per_model_s':>12s} {'loops_s':>9s} {'vs per-model':>13s} {'vs loops':>9s} "
        f"{'|d acc| vs per-model':>21s} {'|d acc| vs loop seed':>21s} {'|d acc| vs loop mean':>21s}"
    )
    ratios = {}
    for head in [*heads, "total"]:
        if head == "total":
            t = {way: sum(v.values()) for way, v in times.items()}
            part_same, part_against = same, against
        else:
            t = {way: v[head] for way, v in times.items()}
            part_same, part_against = same[same["head"] == head], against[against["head"] == head]
        d_same = 100 * (part_same.accuracy_many - part_same.accuracy_one).abs().max()
        d_seed = 100 * (part_against.accuracy_many - part_against.accuracy_loop).abs().max()
        means = part_against.groupby(["model", "head", "shots"])[["accuracy_many", "accuracy_loop"]].mean()
        d_mean = 100 * (means.accuracy_many - means.accuracy_loop).abs().max()
        ratios[head] = (t["per-model"] / t["many"], t["loops"] / t["many"])
        print(
            f"{head:8s} {t['many']:9.2f} {t['per-model']:12.2f} {t['loops']:9.2f} {ratios[head][0]:12.2f}x "
            f"{ratios[head][1]:8.2f}x {d_same:21.2f} {d_seed:21.2f} {d_mean:21.2f}"
        )
    print("(accuracy differences in percentage points: largest per seed, or of a mean over seeds)")
    print(
        f"\n== {n_models} models, full grid: across models {ratios['total'][1]:.2f}x the loops (target >= 5x), "
        f"{ratios['total'][0]:.2f}x our per-model path"
    )
    differences = {
        "max_abs_diff_vs_per_model_points": round(100 * (same.accuracy_many - same.accuracy_one).abs().max(), 3),
        "max_abs_diff_vs_loop_mean_points": round(
            100
            * (
                against.groupby(["model", "head", "shots"])[["accuracy_many", "accuracy_loop"]]
                .mean()
                .pipe(lambda m: m.accuracy_many - m.accuracy_loop)
                .abs()
                .max()
            ),
            3,
        ),
    }
    print(
        json.dumps(
            {
                "n_models": n_models,
                "ratio_vs_loops": round(ratios["total"][1], 3),
                "ratio_vs_per_model": round(ratios["total"][0], 3),
                **differences,
            }
        )
    )
    return ratios


def main(argv=None) -> None:
    import torch

    from repalign import _options as opt
    from repalign.fewshot import HeadSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="mnist,cifar100-synthetic")
    parser.add_argument("--shots", default=None, help="default: the study's shots (--models: 1,10,80)")
    parser.add_argument("--heads", default=",".join(opt.HEADS))
    parser.add_argument("--seeds", type=int, default=None, help="default: the study's seeds (--models: 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--loops",
        default="same-draws,modules",
        help="per-fit loops to compare with: same-draws (our random draws, so accuracies "
        "match up to rounding), modules (torch.nn Dropout/Linear, as one would write it)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="for iterating: shots 1,10,80 and 2 seeds (overrides --shots/--seeds)",
    )
    parser.add_argument(
        "--models",
        type=int,
        nargs="?",
        const=10,
        default=None,
        help="time the grid of N models (default 10) three ways: batched across models, per model, loops",
    )
    parser.add_argument(
        "--loop-models",
        type=int,
        default=None,
        help="with --models: run the loops on the first K models only and scale their time by N/K (default 1)",
    )
    parser.add_argument(
        "--dim", type=int, default=None, help="with --models: feature dimension of each model (default 512)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.shots, args.seeds = "1,10,80", 2
    if args.models is not None:  # a size that ends in minutes on 2 busy cores
        args.shots = args.shots or "1,10"
        args.seeds = args.seeds or 2
        args.loop_models = args.loop_models or 1
        args.dim = args.dim or 512
    args.shots = args.shots or ",".join(map(str, opt.DEFAULT_SHOTS))
    args.seeds = args.seeds or opt.DEFAULT_N_SEEDS
    # scikit-learn warns when a 1-shot problem has more classes than half its samples.
    warnings.filterwarnings("ignore", message="The number of unique classes")
    if args.threads:
        torch.set_num_threads(args.threads)
    shots = tuple(int(s) for s in args.shots.split(","))
    heads = tuple(args.heads.split(","))
    loops = tuple(args.loops.split(","))
    unknown = set(loops) - set(LOOPS)
    if unknown:
        parser.error(f"unknown loop(s) {sorted(unknown)}; choose from {sorted(LOOPS)}")
    settings = HeadSettings()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; settings {settings}")
    if args.models is not None:
        if args.models < 1 or (args.loop_models is not None and not 1 <= args.loop_models <= args.models):
            parser.error("--models must be >= 1 and --loop-models between 1 and --models")
        compare_models(args.models, shots, args.seeds, heads, settings, args.loop_models, dim=args.dim)
        return
    problems = {"mnist": mnist_pixels, "cifar100-synthetic": cifar100_synthetic}
    summary = {}
    for name in args.problems.split(","):
        features, labels = problems[name]()
        summary[name] = compare(name, features, labels, shots, args.seeds, heads, settings, loops)
    print("\n== speedup of the full grid (target >= 3x)")
    for name, ratios in summary.items():
        print(f"{name:20s} " + "  ".join(f"vs {loop} loop {r:.2f}x" for loop, r in ratios.items()))


if __name__ == "__main__":
    main()
