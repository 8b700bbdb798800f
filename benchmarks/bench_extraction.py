"""End-to-end extraction throughput vs pure-forward throughput, and peak memory vs image count.

End to end = ``repalign.extract_embeddings`` on image *files* (every image decoded from
disk on every run; decode + preprocess + forward), with the cache off, for each loader of
``--workers``: ``auto`` is the engine's default (for numpy models such as TFLite on a
multi-core CPU: a prefetch thread, and one interpreter thread fewer), a number is that many
DataLoader worker processes (0: decoded in the main process). Pure forward = the same
handle's ``forward`` on batches that are already preprocessed and collated, same batch
size, same number of images; for handles that choose their thread count (TFLite's
``compute_threads``) every thread count from 1 to all cores is timed in each pair and the
fastest is the baseline, so the baseline is always the best forward configuration. Both run in this process as ``--repeats`` back-to-back pairs in alternating
order. Printed: the best rate of each side and their ratio, and the median of the per-pair
ratios (robust when other processes share the machine: a busy phase slows both runs of a
pair).

The images are the 120 Peterson animal PNGs (300x300 RGBA) from the data mirror, repeated
to ``--n`` images.

``cpu bound``: the best ratio any schedule can reach when the pure forward pass already
keeps every core busy (as it does on CPU): ``forward / (forward + prep)`` CPU time per image
(preprocessing measured on one thread, as in a worker; forward on all threads). CPU times
are also far less sensitive than wall times to other processes sharing the machine.

Peak memory: a fresh child process extracts N and then 4N images (cache off) and reports
its peak resident set size (main process and, separately, its DataLoader workers). With
streaming extraction the peak does not grow with the number of images; decoding them all
up front would add ~0.26 MB per image (300x300x3 bytes).

``--study``: a study's extraction, model after model, with the preprocessed-input cache
(``repalign.embed.inputs``) in a fresh cache folder and the embedding cache off. Models run in
the order a study runs them (``order_by_preprocessing``: models sharing a preprocessing
configuration one after another) over the images a quick-start study embeds: Peterson
animals, fruits and vegetables (files, decoded from disk) and the few-shot images of
configs/quickstart.toml (MNIST and Fashion-MNIST, the images its splits use). For each model:
its total extraction time over all image sets (``extract_embeddings``; model loading is not
counted) against the sum of its pure forward passes on the same ready inputs (the cached
arrays, batched outside the timing, same batch size and thread settings), and, with
``--uncached`` (default on), the extraction time without the input cache, as before. The
first model of each configuration decodes and preprocesses (and records the inputs); the
others read them. The last line is JSON: ``ratio_study`` (all models), ``ratio_after_first``
(models after the first of their configuration), ``n_models``, and the same ratios without
the input cache.

Usage::

    REPALIGN_MIRROR=../shared/data .venv/bin/python benchmarks/bench_extraction.py
    .venv/bin/python benchmarks/bench_extraction.py --models timm:resnet18@random --n 240 --workers auto 1 2
    REPALIGN_MIRROR=../shared/data .venv/bin/python benchmarks/bench_extraction.py --study
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

from repalign.models import OFFLINE_PRESET

DEFAULT_MODELS = ("timm:resnet18@random", "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor")
#: --study: the six TFLite models, then CIFAR ResNets and untrained timm models (small ones that
#: share timm's most common configuration, so a 2-core machine runs the study in minutes)
STUDY_MODELS = (
    *(model for model in OFFLINE_PRESET if model.startswith("tflite:")),  # the mirror's TFLite models
    "cifar_resnet:resnet20",
    "cifar_resnet:resnet32",
    "cifar_resnet:resnet44",
    "timm:lcnet_050@random",
    "timm:mobilenetv3_small_050@random",
)
STUDY_HUMAN = ("peterson:animals", "peterson:fruits", "peterson:vegetables")


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


def forward_thread_counts(handle) -> list[int | None]:
    """Thread counts to try for the pure forward pass: 1 .. all cores for handles that set their
    own (TFLite's ``compute_threads``), else the handle's default (None)."""
    if getattr(handle, "compute_threads", None) is None:
        return [None]
    return list(range(1, (os.cpu_count() or 1) + 1))


def time_pure_forward(handle, batches, threads: int | None = None) -> float:
    if threads is not None:
        with handle.compute_threads(threads):
            return time_pure_forward(handle, batches)
    start = time.perf_counter()
    for batch in batches:
        handle.forward(batch)
    return time.perf_counter() - start


def time_best_forward(handle, batches, thread_counts: list[int | None], record: dict) -> float:
    """The fastest pure forward over ``thread_counts`` (each timed once, in turn): the baseline
    is the best forward configuration, never one chosen to flatter the end-to-end side."""
    times = {}
    for threads in thread_counts:
        times[threads] = time_pure_forward(handle, batches, threads)
        record.setdefault(threads, []).append(times[threads])
    return min(times.values())


def cpu_costs(handle, images, batches, n_prep: int = 40) -> tuple[float, float]:
    """(decode + preprocess CPU ms per image on one thread, forward CPU ms per image, all threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        start = time.process_time()
        for i in range(min(n_prep, len(images))):
            handle.transform(images.load(i))
        prep = (time.process_time() - start) / min(n_prep, len(images))
    finally:
        torch.set_num_threads(threads)
    start = time.process_time()
    count = 0
    for batch in batches[:3]:
        handle.forward(batch)
        count += len(batch)
    forward = (time.process_time() - start) / count
    return prep * 1e3, forward * 1e3


def time_end_to_end(handle, images, batch_size: int, workers: int | None) -> float:
    """One extraction from the image files (every image decoded from disk), cache off.
    ``workers`` None: the engine's default loader (the prefetch thread for numpy models)."""
    from repalign.embed import extract_embeddings

    start = time.perf_counter()
    extract_embeddings(handle, images, batch_size=batch_size, num_workers=workers, cache=False)
    return time.perf_counter() - start


def throughput_table(
    model: str, n: int, batch_size: int | None, workers_list: list[int | None], repeats: int
) -> tuple[list[dict], dict]:
    from repalign.models import load_model

    handle = load_model(model, device="cpu")
    batch_size = batch_size or handle.default_batch_size
    images = peterson_images(n)
    batches = ready_batches(handle, images, batch_size, n)
    thread_counts = forward_thread_counts(handle)
    for threads in thread_counts:  # warm-up: lazy initialisation, allocator, thread pools
        time_pure_forward(handle, batches[:1], threads)
    for workers in workers_list:
        time_end_to_end(handle, peterson_images(batch_size * 2), batch_size, workers)
    rows = []
    forward_times: list[float] = []
    by_threads: dict = {}
    e2e_times: dict = {w: [] for w in workers_list}
    for repeat in range(repeats):
        # Paired runs, back to back, in alternating order: a busy phase of the machine
        # (other processes) hits both sides of a pair, and the median pair ratio ignores it.
        forward_first = repeat % 2 == 0
        if forward_first:
            forward_times.append(time_best_forward(handle, batches, thread_counts, by_threads))
        for workers in workers_list:
            e2e_times[workers].append(time_end_to_end(handle, images, batch_size, workers))
        if not forward_first:
            forward_times.append(time_best_forward(handle, batches, thread_counts, by_threads))
    prep_ms, forward_ms = cpu_costs(handle, images, batches)
    # When the pure forward pass already keeps every core busy, end to end must spend
    # prep + forward CPU time per image on the same cores: no schedule beats this ratio.
    cpu_bound = forward_ms / (forward_ms + prep_ms)
    forward_rate = n / min(forward_times)
    for workers in workers_list:
        pair_ratios = [f / e for f, e in zip(forward_times, e2e_times[workers], strict=True)]
        rows.append(
            {
                "model": model,
                "batch": batch_size,
                "workers": "auto" if workers is None else str(workers),
                "pure_forward_img_s": forward_rate,
                "end_to_end_img_s": n / min(e2e_times[workers]),
                "ratio_of_best": (n / min(e2e_times[workers])) / forward_rate,
                "median_pair_ratio": statistics.median(pair_ratios),
                "prep_cpu_ms": prep_ms,
                "forward_cpu_ms": forward_ms,
                "bound": cpu_bound,
            }
        )
    forward_by_threads = {threads: n / statistics.median(times) for threads, times in by_threads.items()}
    return rows, forward_by_threads


def child_peak_memory(model: str, n: int, batch_size: int | None, workers: int) -> dict:
    """Run one extraction of ``n`` images in a fresh process (``--child-memory``); its peaks in MiB."""
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--child-memory",
        model,
        str(n),
        str(batch_size or 0),
        "auto" if workers is None else str(workers),
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _status_mib(pid: str | int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory field (VmHWM: peak RSS, reset by exec; VmRSS: current)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the worker just exited
        pass
    return 0.0


def _worker_pids() -> list[str]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                pids.extend(handle.read().split())
        except OSError:
            pass
    return pids


def child_memory_main(model: str, n: int, batch_size: int, workers: int) -> None:
    """In the fresh process: extract, sampling the workers' total RSS every 20 ms meanwhile.

    ``main_peak_mib`` is this process's VmHWM (peak resident set, which on Linux -- unlike
    ``ru_maxrss`` -- is not inherited from the parent across exec); ``python_peak_mib`` the
    tracemalloc peak (Python and numpy allocations) during the extraction itself.
    """
    import threading
    import tracemalloc

    from repalign.embed import extract_embeddings

    images = peterson_images(n)
    worker_peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal worker_peak
        while not done.wait(0.02):
            worker_peak = max(worker_peak, sum(_status_mib(pid, "VmRSS") for pid in _worker_pids()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    x = extract_embeddings(model, images, batch_size=batch_size or None, num_workers=workers, cache=False)
    _, python_peak = tracemalloc.get_traced_memory()
    done.set()
    sampler.join()
    print(
        json.dumps(
            {
                "shape": list(x.shape),
                "main_peak_mib": _status_mib("self", "VmHWM"),
                "python_peak_mib": python_peak / 2**20,
                "workers_peak_mib": worker_peak,
            }
        )
    )


# ---------------------------------------------------------------------------------------
# --study
# ---------------------------------------------------------------------------------------
def study_image_sets(config_path: str) -> dict:
    """{name: ImageSet}: the Peterson domains with images and the few-shot images of the config."""
    from repalign.data.human import load_human
    from repalign.data.images import SubsetImageSet
    from repalign.study.config import load_config
    from repalign.study.plan import fewshot_inputs

    sets = {name: load_human(name)[0].images() for name in STUDY_HUMAN}
    config = load_config(config_path)
    for name in config.fewshot.datasets:
        data, splits = fewshot_inputs(name, config)
        sets[f"fewshot:{name}"] = SubsetImageSet(data.images, splits.used_indices())
    return sets


def study_ready_batches(handle, images, batch_size: int) -> list:
    """The handle's inputs of ``images`` from the input cache, batched (outside any timing)."""
    import numpy as np
    import torch

    from repalign.embed.arrays import array_batches
    from repalign.embed.engine import _input_entry

    plan = _array_plan(handle, images)
    if plan is not None:  # array sets are prepared in batches (repalign.embed.arrays), never recorded
        return list(array_batches(*plan, images, batch_size, str(handle.device)))
    store, key, _ = _input_entry(handle, images)
    ready = store.load(key)
    if ready is None:
        raise SystemExit(f"no cached inputs of {images.name} for {handle.spec.name}: is the input cache off?")
    batches = [np.array(ready[i : i + batch_size]) for i in range(0, len(ready), batch_size)]
    return [torch.from_numpy(b) for b in batches] if handle.uses_torch else batches


def _array_plan(handle, images):
    """The batched preparation extraction uses for an array set (MNIST), or None."""
    from repalign.embed.arrays import plan_for

    return plan_for(handle.transform, images)


def _has_inputs(handle, images) -> bool:
    from repalign.embed.engine import _input_entry

    if _array_plan(handle, images) is not None:
        return True  # ready without a first extraction: prepared in batches, as extraction does
    store, key, _ = _input_entry(handle, images)
    return store.load(key) is not None


def study_model(model: str, image_sets: dict, uncached: bool) -> dict:
    """One model's extraction time over every image set, its pure forward time, and (``uncached``)
    its extraction time without the input cache."""
    from repalign.embed import extract_embeddings
    from repalign.models import load_model

    handle = load_model(model, device="cpu")
    batch_size = handle.default_batch_size
    extract_s = forward_s = plain_s = 0.0
    n = 0
    warm = False
    for k, images in enumerate(image_sets.values()):
        recorded = _has_inputs(handle, images)
        # Forward first on every other image set once the inputs exist (a model after the first
        # of its configuration): neither side always runs on the warmer machine.
        forward_first = recorded and k % 2 == 1
        if not recorded:
            start = time.perf_counter()
            extract_embeddings(handle, images, cache=False, input_cache=True)
            extract_s += time.perf_counter() - start
        batches = study_ready_batches(handle, images, batch_size)
        if not warm:  # lazy initialisation (allocator, thread pools) counted on neither side
            handle.forward(batches[0])
            warm = True
        if recorded and not forward_first:
            start = time.perf_counter()
            extract_embeddings(handle, images, cache=False, input_cache=True)
            extract_s += time.perf_counter() - start
        start = time.perf_counter()
        for batch in batches:
            handle.forward(batch)
        forward_s += time.perf_counter() - start
        if forward_first:
            start = time.perf_counter()
            extract_embeddings(handle, images, cache=False, input_cache=True)
            extract_s += time.perf_counter() - start
        if uncached:
            start = time.perf_counter()
            extract_embeddings(handle, images, cache=False, input_cache=False)
            plain_s += time.perf_counter() - start
        n += len(images)
    return {"model": model, "n_images": n, "extract_s": extract_s, "forward_s": forward_s, "uncached_s": plain_s}


def study_main(models: list[str], config_path: str, uncached: bool) -> int:
    import tempfile

    from repalign.embed import order_by_preprocessing
    from repalign.embed.inputs import preprocessing_group

    os.environ["REPALIGN_CACHE_HOME"] = tempfile.mkdtemp(prefix="repalign-bench-study-")
    # the input cache is what this mode measures: on (4 GiB) unless the environment sets a limit
    os.environ.setdefault("REPALIGN_INPUT_CACHE_BYTES", str(4 << 30))
    image_sets = study_image_sets(config_path)
    for images in image_sets.values():
        images.fingerprint()  # a study computes it once per image set for the embedding cache
    ordered = order_by_preprocessing(models)
    groups = [preprocessing_group(m) for m in ordered]
    sizes = ", ".join(f"{name} {len(images)}" for name, images in image_sets.items())
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; images: {sizes}")
    print(
        f"{'model':55s} {'config':>6s} {'first':>5s} {'images':>6s} {'extract s':>9s} {'forward s':>9s} "
        f"{'ratio':>6s} | {'no input cache s':>16s} {'ratio':>6s}"
    )
    rows, seen = [], {}
    for model, group in zip(ordered, groups, strict=True):
        first = group not in seen
        seen.setdefault(group, len(seen) + 1)
        row = {**study_model(model, image_sets, uncached), "config": seen[group], "first": first}
        rows.append(row)
        plain = f"{row['uncached_s']:16.2f} {row['forward_s'] / row['uncached_s']:6.1%}" if uncached else f"{'-':>16s}"
        print(
            f"{model:55s} {row['config']:6d} {'yes' if first else '':>5s} {row['n_images']:6d} "
            f"{row['extract_s']:9.2f} {row['forward_s']:9.2f} {row['forward_s'] / row['extract_s']:6.1%} | {plain}"
        )

    def ratio(selected: list[dict], key: str) -> float | None:
        spent = sum(r[key] for r in selected)
        return sum(r["forward_s"] for r in selected) / spent if selected and spent > 0 else None

    after = [r for r in rows if not r["first"]]
    summary = {
        "ratio_study": ratio(rows, "extract_s"),
        "ratio_after_first": ratio(after, "extract_s"),
        "n_models": len(rows),
        "n_configs": len(seen),
        "ratio_study_no_input_cache": ratio(rows, "uncached_s") if uncached else None,
        "ratio_after_first_no_input_cache": ratio(after, "uncached_s") if uncached else None,
        "load_average_end": os.getloadavg()[0],
    }
    print(
        f"study: forward / extraction {summary['ratio_study']:.1%} over {len(rows)} models in {len(seen)} "
        f"configurations; models after the first of their configuration: "
        + (f"{summary['ratio_after_first']:.1%}" if after else "none")
    )
    print(json.dumps(summary))
    return 0


def _workers_arg(text: str) -> int | None:
    return None if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--n", type=int, default=128, help="images per throughput run (default 128)")
    parser.add_argument("--batch-size", type=int, help="default: each model's default batch size")
    parser.add_argument(
        "--workers",
        type=_workers_arg,
        nargs="+",
        help="loaders to compare: 'auto' (the engine's default) or a DataLoader worker count (default: auto 0 2)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="paired forward / end-to-end runs (default 7)")
    parser.add_argument("--memory-n", type=int, default=120, help="N for the memory check (N and 4N images)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--study", action="store_true", help="a study's extraction with the input cache (see above)")
    parser.add_argument("--config", default="configs/quickstart.toml", help="--study: the few-shot settings")
    parser.add_argument(
        "--no-uncached", action="store_true", help="--study: skip the extraction without the input cache"
    )
    parser.add_argument("--child-memory", nargs=4, metavar=("MODEL", "N", "BATCH", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, also in a pipe
    if args.child_memory:
        model, n, batch, workers = args.child_memory
        child_memory_main(model, int(n), int(batch), _workers_arg(workers))
        return 0
    if args.study:
        models = args.models if args.models != list(DEFAULT_MODELS) else list(STUDY_MODELS)
        return study_main(models, args.config, not args.no_uncached)

    import torch

    workers_list = args.workers or [None, 0, 2]
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, images: {args.n}")
    print(
        f"{'model':58s} {'batch':>5s} {'workers':>7s} {'forward img/s':>13s} {'end-to-end img/s':>16s} "
        f"{'ratio':>6s} {'median pair ratio':>17s}"
        f" | {'prep cpu ms/img':>15s} {'fwd cpu ms/img':>14s} {'cpu bound':>9s}"
    )
    forward_notes = []
    for model in args.models:
        rows, forward_by_threads = throughput_table(model, args.n, args.batch_size, workers_list, args.repeats)
        if forward_by_threads.keys() != {None}:
            shown = ", ".join(f"{t} threads {rate:.1f}" for t, rate in forward_by_threads.items())
            forward_notes.append(f"{model}: median pure forward img/s by interpreter threads: {shown}")
        for row in rows:
            print(
                f"{row['model']:58s} {row['batch']:5d} {row['workers']:>7s} {row['pure_forward_img_s']:13.1f} "
                f"{row['end_to_end_img_s']:16.1f} {row['ratio_of_best']:6.1%} {row['median_pair_ratio']:17.1%}"
                f" | {row['prep_cpu_ms']:15.2f} {row['forward_cpu_ms']:14.2f} {row['bound']:9.1%}"
            )
    for note in forward_notes:
        print(note)
    print("forward img/s: the fastest of each pair's forward runs over those thread counts")
    if not args.skip_memory:
        print("\nPeak memory of one extraction in a fresh process (MiB), cache off:")
        print(
            f"{'model':58s} {'workers':>7s} {'images':>6s} {'main peak RSS':>13s} "
            f"{'python peak':>11s} {'workers RSS':>11s}"
        )
        for model in args.models:
            for workers in dict.fromkeys([w for w in workers_list if w is None] + [workers_list[-1]]):
                for n in (args.memory_n, 4 * args.memory_n):
                    peak = child_peak_memory(model, n, args.batch_size, workers)
                    label = "auto" if workers is None else str(workers)
                    print(
                        f"{model:58s} {label:>7s} {n:6d} {peak['main_peak_mib']:13.0f} "
                        f"{peak['python_peak_mib']:11.1f} {peak['workers_peak_mib']:11.0f}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
