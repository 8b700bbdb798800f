"""Array image sets: batched preprocessing on the model's device vs one PIL call per image.

MNIST digits (the real test split, from the data mirror) through real model transforms, in
the same process, two ways:

- baseline: the per-image path, the model's own transform on ``images.load(i)`` (a PIL image),
  as the extraction engine's DataLoader runs it;
- ours: :mod:`repalign.embed.arrays` -- the used digits uploaded once, each batch resized
  (Pillow's arithmetic as two exact float64 matrix products), cropped and normalised.

For each transform it prints both times per image, the ratio, and whether the inputs are
identical (they must be, bit for bit). Then the whole extraction (``extract_embeddings``,
cache off) of one model both ways, with the features compared.

TFLite models (numpy, on the CPU; ``--tflite``): the MNIST digits a quick-start study embeds
(the images its few-shot splits use, 1,687 with configs/quickstart.toml), extracted both ways
with the engine's defaults (per-image: a prefetch thread decodes while the interpreter runs on
the other cores; batched: the inputs prepared here, then the forward pass on every core), and
the pure forward pass on the same inputs ready in memory; the three take turns, best of
``--repeats``. The last line is JSON.

    python benchmarks/bench_array_inputs.py
    python benchmarks/bench_array_inputs.py --images 2000 --threads 2 --device cuda
    python benchmarks/bench_array_inputs.py --tflite   # the two default TFLite models, or name them
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np


def transforms():
    from timm.data import create_transform
    from torchvision import transforms as T

    imagenet = {"input_size": (3, 224, 224), "is_training": False}
    return {
        "timm bicubic crop 0.95 (resnet50.a1_in1k)": create_transform(
            **imagenet, interpolation="bicubic", crop_pct=0.95
        ),
        "timm bilinear crop 0.875 (resnet18)": create_transform(**imagenet, interpolation="bilinear", crop_pct=0.875),
        "cifar_resnet (32x32, normalise)": T.Compose(
            [
                T.Resize((32, 32), interpolation=T.InterpolationMode.BILINEAR),
                T.ToTensor(),
                T.Normalize((0.5,) * 3, (0.25,) * 3),
            ]
        ),
    }


TFLITE_MODELS = ("tflite:mobilenet_v1_1.0_224_quant_embedding_extractor", "tflite:mobilenet_v1_0.25_128_quant")


def quickstart_mnist(config_path: str):
    """The MNIST images a study of ``config_path`` embeds (those its few-shot splits use)."""
    from repalign.data.images import SubsetImageSet
    from repalign.study.config import load_config
    from repalign.study.plan import fewshot_inputs

    data, splits = fewshot_inputs("mnist", load_config(config_path))
    return SubsetImageSet(data.images, splits.used_indices())


def tflite_rows(models: list[str], config_path: str, repeats: int) -> None:
    """Per TFLite model: extraction with and without batched arrays, and the pure forward pass,
    measured in turn ``repeats`` times (the best of each kept: the load of a shared machine
    changes between runs, and taking turns exposes all three to it alike)."""
    from repalign.embed import extract_embeddings
    from repalign.embed.arrays import array_batches, plan_for
    from repalign.models import load_model

    images = quickstart_mnist(config_path)
    print(f"{len(images)} MNIST digits of {config_path}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    rows = {}
    for model in models:
        handle = load_model(model)
        batch_size = handle.default_batch_size
        plan = plan_for(handle.transform, images)
        prep_s, ready = best_of(repeats, lambda: list(array_batches(*plan, images, batch_size, "cpu")))
        handle.forward(ready[0])  # the interpreter built and warm before any timing
        options = {"cache": False, "input_cache": False}
        runs = {
            "forward": lambda: [handle.forward(batch) for batch in ready],
            "per_image": lambda: extract_embeddings(handle, images, batched_arrays=False, **options),
            "batched": lambda: extract_embeddings(handle, images, batched_arrays=True, **options),
        }
        times = {name: math.inf for name in runs}
        results = {}
        for _ in range(repeats):
            for name, run in runs.items():
                seconds, results[name] = best_of(1, run)
                times[name] = min(times[name], seconds)
        same = bool(np.array_equal(results["per_image"], results["batched"]))
        ratio = times["per_image"] / times["batched"]
        rows[model] = {f"{name}_s": round(t, 2) for name, t in times.items()}
        rows[model].update({"batched_prep_s": round(prep_s, 2), "ratio": round(ratio, 3), "identical": same})
        print(
            f"  {model}: extraction per-image {times['per_image']:.2f} s, batched arrays {times['batched']:.2f} s "
            f"(ratio {ratio:.2f}x; batched preparation alone {prep_s:.2f} s), "
            f"pure forward {times['forward']:.2f} s, identical features: {same}"
        )
    print(json.dumps({"n_images": len(images), "load": round(os.getloadavg()[0], 2), "tflite": rows}))


def best_of(repeats: int, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="MNIST test digits (every k-th; default 500)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a DataLoader worker)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="timm:resnet18@random", help="model of the end-to-end comparison")
    parser.add_argument("--extract-images", type=int, default=160, help="digits of the end-to-end comparison")
    parser.add_argument(
        "--tflite", nargs="*", default=None, metavar="MODEL", help=f"TFLite models instead (default {TFLITE_MODELS})"
    )
    parser.add_argument("--config", default="configs/quickstart.toml", help="--tflite: the study whose MNIST images")
    args = parser.parse_args()
    if args.tflite is not None:
        tflite_rows(args.tflite or list(TFLITE_MODELS), args.config, args.repeats)
        return

    import torch

    from repalign.data.fewshot_datasets import load_fewshot_dataset
    from repalign.data.images import SubsetImageSet
    from repalign.embed import extract_embeddings
    from repalign.embed.arrays import array_batches, plan_for

    torch.set_num_threads(args.threads)
    data = load_fewshot_dataset("mnist")
    step = max(1, len(data) // args.images)
    images = SubsetImageSet(data.images, np.arange(0, len(data), step)[: args.images])
    n = len(images)
    print(f"{n} MNIST test digits, batch {args.batch_size}, {args.threads} torch thread(s), device {args.device}")
    results = {}
    for name, transform in transforms().items():
        plan = plan_for(transform, images)
        per_image, expected = best_of(
            args.repeats, lambda t=transform: torch.stack([t(images.load(i)) for i in range(n)])
        )

        def batched(plan=plan):
            out = torch.cat(list(array_batches(*plan, images, args.batch_size, args.device)))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        ours, got = best_of(args.repeats, batched)
        identical = bool(torch.equal(got.cpu(), expected))
        results[name] = {"per_image_ms": 1e3 * per_image / n, "batched_ms": 1e3 * ours / n, "identical": identical}
        print(
            f"  {name:42s} per-image PIL {1e3 * per_image / n:6.3f} ms/image   batched {1e3 * ours / n:6.3f} ms/image"
            f"   ratio {per_image / ours:5.2f}x   identical inputs: {identical}"
        )

    images = SubsetImageSet(images, np.arange(min(n, args.extract_images)))
    options = {"cache": False, "batch_size": args.batch_size, "num_workers": 0, "device": args.device}
    extract_embeddings(args.model, SubsetImageSet(images, [0]), **options)  # load once: weights, imports
    t_ref, ref = best_of(1, lambda: extract_embeddings(args.model, images, batched_arrays=False, **options))
    t_ours, ours = best_of(1, lambda: extract_embeddings(args.model, images, batched_arrays=True, **options))
    same = bool(np.array_equal(ref, ours))
    print(
        f"  extraction of {args.model} ({len(images)} digits): per-image path {t_ref:.2f} s, batched arrays {t_ours:.2f} s, "
        f"ratio {t_ref / t_ours:.2f}x, identical features: {same}"
    )
    print(
        json.dumps(
            {
                "n_images": n,
                "preprocess_ratio": {k: round(v["per_image_ms"] / v["batched_ms"], 3) for k, v in results.items()},
                "inputs_identical": all(v["identical"] for v in results.values()),
                "extraction_ratio": round(t_ref / t_ours, 3),
                "features_identical": same,
            }
        )
    )


if __name__ == "__main__":
    main()
