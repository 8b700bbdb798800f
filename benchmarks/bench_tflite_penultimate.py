"""TFLite penultimate features: rewritten graph + XNNPACK (ours) vs preserve_all_tensors.

Reading an intermediate tensor of a TFLite graph is usually done with
``experimental_preserve_all_tensors=True``, which only works with the delegate-free
reference kernels. ``repalign`` instead adds the penultimate tensor to the graph's outputs
(rewriting the flatbuffer in memory) and keeps the default XNNPACK delegate. This script
times both on the same preprocessed images, in this process, interleaved (best of
``--repeats``), and reports how closely the two sets of features agree (the delegate's
quantized kernels round differently from the reference kernels).

Usage::

    REPALIGN_MIRROR=../shared/data .venv/bin/python benchmarks/bench_tflite_penultimate.py
    .venv/bin/python benchmarks/bench_tflite_penultimate.py --models mobilenet_v2_1.0_224_quant --n 64
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _baseline_interpreter(path, num_threads):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        num_threads=num_threads,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return interpreter


def _baseline_features(interpreter, tensor_index, batch):
    """Per-image invoke, then read the preserved intermediate tensor and dequantize it."""
    from repalign.models.tflite_source import dequantize

    detail = next(d for d in interpreter.get_tensor_details() if d["index"] == tensor_index)
    index = interpreter.get_input_details()[0]["index"]
    rows = []
    for image in batch:
        interpreter.set_tensor(index, image[None])
        interpreter.invoke()
        rows.append(dequantize(interpreter.get_tensor(tensor_index), detail))
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v1_0.5_160_quant", "mobilenet_v2_1.0_224_quant"])
    parser.add_argument("--n", type=int, default=32, help="images (the Peterson animals, repeated)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: all cores)")
    args = parser.parse_args()

    import logging
    import os
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from repalign.data.human import load_human
    from repalign.models import load_model

    images = load_human("peterson:animals")[0].images()
    threads = args.threads or os.cpu_count()
    print(f"{args.n} images, {threads} threads, best of {args.repeats}")
    print(f"{'model':34s} {'ours ms/img':>11s} {'baseline ms/img':>15s} {'speed-up':>8s} {'feature corr':>12s}")
    for name in args.models:
        handle = load_model(f"tflite:{name}", num_threads=threads)
        batch = np.stack([handle.transform(images.load(i % len(images))) for i in range(args.n)])
        baseline = _baseline_interpreter(handle.path, threads)
        ours_s, base_s = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = handle.forward(batch)["penultimate"]
            ours_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference = _baseline_features(baseline, handle.penultimate_index, batch)
            base_s.append(time.perf_counter() - start)
        corr = np.corrcoef(ours.ravel(), reference.ravel())[0, 1]
        t_ours, t_base = 1000 * min(ours_s) / args.n, 1000 * min(base_s) / args.n
        print(f"{name:34s} {t_ours:11.1f} {t_base:15.1f} {t_base / t_ours:7.1f}x {corr:12.4f}")


if __name__ == "__main__":
    main()
