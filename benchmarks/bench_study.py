"""Benchmark of the study pipeline (`repalign run`), measured side by side in one process.

Prints:
1. quickstart: wall time of the first run (empty embedding cache) and of re-running the
   finished study; target: the re-run takes < 5% of the first run.
2. local workers: wall time of the same study with 1 and with 2 worker processes
   (fresh study directories, warm embedding cache), and the speedup.
3. Ray vs local: a small study through a real local Ray cluster and through local workers;
   every value must be identical.

Usage:
    REPALIGN_MIRROR=../shared/data .venv/bin/python benchmarks/bench_study.py [--skip-ray]
        [--config configs/quickstart.toml] [--speedup-include 'tflite:*']
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
KEY = ["model", "stage", "dataset", "metric", "head", "shots"]
VALUE_COLUMNS = ["value", "ci_low", "ci_high", "n", "status"]

SMALL_STUDY = """
[study]
name = "bench-ray"
report = false
[models]
include = ["pixels", "tflite:mobilenet_v1_0.25_128_quant", "cifar_resnet:resnet20"]
[alignment]
human = ["peterson:animals"]
n_bootstrap = 100
[fewshot]
datasets = ["mnist"]
shots = [1, 5, 10]
heads = ["linear", "mlp1", "mlp2"]
seeds = 3
max_eval_per_class = 20
[robustness]
source = "timm-2022-07-27"
[execution]
jobs = 2
threads = 1
"""


def _timed(label: str, func):
    start = time.perf_counter()
    result = func()
    elapsed = time.perf_counter() - start
    print(f"  {label:<44s} {elapsed:8.1f} s", flush=True)
    return result, elapsed


def _prefetch() -> None:
    """Copy the data the quickstart needs into the data home, outside the timings."""
    from repalign.data import fetch

    for name in (
        "peterson-similarity",
        "peterson-images-animals",
        "peterson-images-fruits",
        "mnist",
        "fashion_mnist",
        "timm-results-2022-07-27",
        "coral-tflite",
        "cifar10-resnet",
        "paper-models",
    ):
        try:
            fetch(name, progress=False)
        except Exception as exc:  # a dataset the registry names differently: the run fetches it
            print(f"  (prefetch {name}: {exc})")


def _sorted(frame):
    return frame.sort_values(KEY, na_position="first").reset_index(drop=True)


def bench_rerun(config, work: Path) -> float:
    from repalign.study.run import run_study

    print("\n1. quickstart: first run vs re-running the finished study")
    first, t_first = _timed(
        "first run (empty embedding cache)", lambda: run_study(config, output=work / "qs", live=False)
    )
    second, t_second = _timed("re-run of the finished study", lambda: run_study(config, output=work / "qs", live=False))
    print(
        f"  units: {first.n_units}, failed units: {first.n_failed_units}, re-run skipped {second.n_skipped}, ran {second.n_run}"
    )
    for failure in first.failures.to_dict(orient="records"):
        print(f"  failed: {failure['model']} {failure['stage']} {failure['dataset']}: {failure['error']}")
    if first.notes:
        print("  notes: " + "; ".join(first.notes))
    ratio = t_second / t_first
    print(f"  re-run / first run = {ratio:.2%}  (target < 5%: {'PASS' if ratio < 0.05 else 'FAIL'})")
    return t_first


def bench_speedup(config, work: Path, include: list[str]) -> None:
    from repalign.study.plan import expand_models
    from repalign.study.run import run_study

    config = config.replace("models", include=include, exclude=[]).replace("study", report=False)
    models = expand_models(config)
    print(f"\n2. local workers: {len(models)} models, warm embedding cache, fresh study directories")
    _, t1 = _timed("--jobs 1", lambda: run_study(config, jobs=1, output=work / "jobs1", live=False))
    _, t2 = _timed("--jobs 2", lambda: run_study(config, jobs=2, output=work / "jobs2", live=False))
    print(f"  speedup 1 -> 2 workers: {t1 / t2:.2f}x  (on {os.cpu_count()} cores)")


def bench_ray(work: Path) -> None:
    import numpy as np
    import pandas as pd

    from repalign.store import load_study
    from repalign.study.config import parse_config
    from repalign.study.run import run_study

    print("\n3. Ray (local cluster on 127.0.0.1) vs local workers: same study, same values?")
    config = parse_config(SMALL_STUDY)
    _timed("local, 2 workers", lambda: run_study(config, output=work / "local", live=False))
    _timed(
        "ray, local cluster (startup included)",
        lambda: run_study(config, executor="ray", output=work / "ray", live=False),
    )
    local = _sorted(load_study(work / "local").results)
    ray = _sorted(load_study(work / "ray").results)
    same_keys = local[KEY].astype(str).equals(ray[KEY].astype(str))
    identical = 0
    for column in VALUE_COLUMNS:
        a, b = local[column], ray[column]
        equal = (a == b) | (a.isna() & b.isna())
        identical += int(equal.fillna(False).sum())
    total = len(local) * len(VALUE_COLUMNS)
    diff = np.nanmax(np.abs(local["value"].to_numpy(float) - ray["value"].to_numpy(float))) if len(local) else 0.0
    print(f"  rows: local {len(local)}, ray {len(ray)}; same row keys: {same_keys}")
    print(f"  identical values: {identical}/{total}; max |local - ray| of value: {diff:.3g}")
    print(f"  Ray == local, value for value: {'PASS' if same_keys and identical == total else 'FAIL'}")
    pd.testing.assert_frame_equal(local[KEY + VALUE_COLUMNS], ray[KEY + VALUE_COLUMNS], check_exact=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(PROJECT / "configs" / "quickstart.toml"))
    parser.add_argument(
        "--speedup-include",
        nargs="+",
        default=["tflite:*"],
        help="models of the 1-vs-2 workers runs (default: the six TFLite models, similar in cost)",
    )
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary study and cache folders")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from repalign.study.progress import progress_log

    progress_log.disabled = True  # keep the benchmark's own lines readable

    from repalign.study.config import load_config

    work = Path(tempfile.mkdtemp(prefix="repalign-bench-study-"))
    # private data home and embedding cache: the first run really starts from nothing
    os.environ["REPALIGN_DATA_HOME"] = str(work / "data")
    os.environ["REPALIGN_CACHE_HOME"] = str(work / "embeddings")
    print(f"bench_study: {os.cpu_count()} cores, work folder {work}")
    _prefetch()
    config = load_config(args.config)
    start = time.perf_counter()
    bench_rerun(config, work)
    bench_speedup(config, work, args.speedup_include)
    if not args.skip_ray:
        bench_ray(work)
    print(f"\ntotal benchmark time: {time.perf_counter() - start:.0f} s")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
