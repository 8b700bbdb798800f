"""End-to-end extraction throughput vs pure-forward throughput, and peak memory vs image count.

End to end = ``repalign.extract_embeddings`` on image *files* (decode + preprocess in
DataLoader workers + forward), with the cache off. Pure forward = the same handle's
``forward`` on batches that are already preprocessed and collated, same batch size, same
number of images. Both run in this process, interleaved, best of ``--repeats`` (other
processes on the machine add noise; the best run is the least disturbed one).

The images are the 120 Peterson animal PNGs (300x300 RGBA) from the data mirror, repeated
to ``--n`` images.

Peak memory: a fresh child process extracts N and then 4N images (cache off) and reports
its peak resident set size (main process and, separately, its DataLoader workers). With
streaming extraction the peak does not grow with the number of images; decoding them all
up front would add ~0.26 MB per image (300x300x3 bytes).

Usage::

    REPALIGN_MIRROR=../shared/data .venv/bin/python benchmarks/bench_extraction.py
    .venv/bin/python benchmarks/bench_extraction.py --models timm:resnet18@random --n 240 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

DEFAULT_MODELS = ("timm:resnet18@random", "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor")


def peterson_images(n: int):
    """The Peterson animal images as files, repeated (in order) to ``n`` images."""
    from repalign.data.human import load_human
    from repalign.data.images import FileImageSet

    base = load_human("peterson:animals")[0].images()
    paths = list(base.paths)
    repeated = (paths * math.ceil(n / len(paths)))[:n]
    return FileImageSet(repeated, name=f"peterson-animals-x{n}")


def ready_batches(handle, images, batch_size: int, n: int) -> list:
    """Preprocessed, collated batches covering ``n`` images (decoded once, outside timing)."""
    import numpy as np
    import torch

    transform = handle.transform
    first = [transform(images.load(i)) for i in range(min(batch_size, len(images)))]
    if handle.uses_torch:
        batch = torch.stack(first)
    else:
        batch = np.stack([np.asarray(x) for x in first])
    batches = []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        batches.append(batch if size == len(batch) else batch[:size])
    return batches


def time_pure_forward(handle, batches) -> float:
    start = time.perf_counter()
    for batch in batches:
        handle.forward(batch)
    return time.perf_counter() - start


def time_end_to_end(handle, images, batch_size: int, workers: int) -> float:
    from repalign.embed import extract_embeddings

    start = time.perf_counter()
    extract_embeddings(handle, images, batch_size=batch_size, num_workers=workers, cache=False)
    return time.perf_counter() - start


def throughput_table(model: str, n: int, batch_size: int | None, workers_list: list[int], repeats: int) -> list[dict]:
    from repalign.models import load_model

    handle = load_model(model, device="cpu")
    batch_size = batch_size or handle.default_batch_size
    images = peterson_images(n)
    batches = ready_batches(handle, images, batch_size, n)
    handle.forward(batches[0])  # warm-up: lazy initialisation, allocator, thread pools
    rows = []
    best_forward = math.inf
    best_e2e = {w: math.inf for w in workers_list}
    for _ in range(repeats):  # interleaved, so slow phases of the machine hit both sides
        best_forward = min(best_forward, time_pure_forward(handle, batches))
        for workers in workers_list:
            best_e2e[workers] = min(best_e2e[workers], time_end_to_end(handle, images, batch_size, workers))
    for workers in workers_list:
        forward_rate = n / best_forward
        e2e_rate = n / best_e2e[workers]
        rows.append(
            {
                "model": model,
                "batch": batch_size,
                "workers": workers,
                "pure_forward_img_s": forward_rate,
                "end_to_end_img_s": e2e_rate,
                "ratio": e2e_rate / forward_rate,
            }
        )
    return rows


def child_peak_memory(model: str, n: int, batch_size: int | None, workers: int) -> dict:
    """Run one extraction of ``n`` images in a fresh process; its peak RSS in MiB."""
    code = (
        "import json, resource, sys; sys.path.insert(0, %r);"
        "import bench_extraction as b;"
        "from repalign.embed import extract_embeddings;"
        "x = extract_embeddings(%r, b.peterson_images(%d), batch_size=%r, num_workers=%d, cache=False);"
        "main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        "workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024;"
        "print(json.dumps({'shape': list(x.shape), 'main_mib': main, 'worker_mib': workers}))"
    ) % (os.path.dirname(os.path.abspath(__file__)), model, n, batch_size, workers)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--n", type=int, default=240, help="images per throughput run (default 240)")
    parser.add_argument("--batch-size", type=int, help="default: each model's default batch size")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to compare (default: the engine's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-n", type=int, default=120, help="N for the memory check (N and 4N images)")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from repalign.embed import default_num_workers

    workers_list = args.workers or [default_num_workers(args.n, 1)]
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, images: {args.n}")
    print(f"{'model':58s} {'batch':>5s} {'workers':>7s} {'forward img/s':>13s} {'end-to-end img/s':>16s} {'ratio':>6s}")
    for model in args.models:
        for row in throughput_table(model, args.n, args.batch_size, workers_list, args.repeats):
            print(
                f"{row['model']:58s} {row['batch']:5d} {row['workers']:7d} {row['pure_forward_img_s']:13.1f} "
                f"{row['end_to_end_img_s']:16.1f} {row['ratio']:6.1%}"
            )
    if not args.skip_memory:
        print(f"\nPeak memory of a fresh process (MiB), cache off, workers {workers_list[0]}:")
        print(f"{'model':58s} {'images':>6s} {'main RSS':>9s} {'worker RSS':>10s}")
        for model in args.models:
            for n in (args.memory_n, 4 * args.memory_n):
                peak = child_peak_memory(model, n, args.batch_size, workers_list[0])
                print(f"{model:58s} {n:6d} {peak['main_mib']:9.0f} {peak['worker_mib']:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
