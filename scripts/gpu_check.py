"""The one-command GPU check: does every CUDA path give the CPU's answers, and how fast is it?

Run through ``scripts/gpu_check.sh`` on a machine with a GPU (it also runs on a CPU, where the
comparisons are trivially equal: that is how the test suite exercises it). It writes one JSON:

* ``environment`` -- torch / CUDA versions and the device name;
* ``gpu_tests`` -- the pytest run of the ``gpu``-marked tests (counts and the tail of its output);
* ``agreement`` -- per model, alignment with Peterson animals computed from embeddings extracted
  on the device vs on the CPU (max |difference| over the metrics; limit 0.005), and few-shot
  accuracy on MNIST with the heads trained on the device vs the CPU (max |difference| of the
  mean accuracy, in points; limit 0.5);
* ``throughput`` -- images per second of untrained timm models of three sizes at the study's batch
  size: end to end (decode + preprocess + forward), from the input cache (a second extraction,
  reading the inputs the first recorded), and on ready input tensors (the forward alone);
* ``ok`` -- every agreement within its limit and no gpu test failed.

The data comes from ``$REPALIGN_MIRROR`` (or the data home), like everything else; the script
downloads nothing itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ALIGNMENT_LIMIT = 0.005
FEWSHOT_LIMIT_POINTS = 0.5
AGREEMENT_MODELS = ("cifar_resnet:resnet20", "timm:resnet18@random")
THROUGHPUT_MODELS = ("timm:resnet18@random", "timm:resnet50@random", "timm:vit_base_patch16_224@random")


def environment(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device.startswith("cuda"):
        info.update(cuda=torch.version.cuda, name=torch.cuda.get_device_name(0))
    return info


def gpu_tests(root: Path, quick: bool) -> dict:
    """The gpu-marked tests, in a subprocess (they skip themselves without CUDA)."""
    if quick:
        return {"skipped": "--quick"}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(root / "tests")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=root)
    tail = done.stdout.strip().splitlines()[-1:] or [done.stderr.strip()[-200:]]
    return {"returncode": done.returncode, "summary": tail[0]}


def _alignment(model: str, device: str) -> dict[str, float]:
    from repalign.alignment import compute_alignment
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    (animals,) = load_human("peterson:animals")
    embeddings = extract_embeddings(model, animals.images(), device=device, cache=False)
    table = compute_alignment(embeddings, animals, metrics=("pearson", "spearman", "triplet"), n_bootstrap=0)
    return dict(zip(table["metric"], table["value"].astype(float)))


def _fewshot(model: str, device: str, quick: bool) -> dict[str, float]:
    from repalign.fewshot import run_fewshot

    frame = run_fewshot(
        model,
        "mnist",
        shots=(1, 5) if quick else (1, 5, 10),
        heads=("linear",) if quick else ("linear", "mlp1", "mlp2"),
        seeds=2 if quick else 3,
        max_eval_per_class=10 if quick else 50,
        device=device,
    )
    return {f"{row.head}/{row.shots}": float(row.value) for row in frame.itertuples()}


def agreement(device: str, quick: bool) -> dict:
    out = {}
    for model in AGREEMENT_MODELS[:1] if quick else AGREEMENT_MODELS:
        cpu_align, dev_align = _alignment(model, "cpu"), _alignment(model, device)
        cpu_few, dev_few = _fewshot(model, "cpu", quick), _fewshot(model, device, quick)
        align_diff = max(abs(cpu_align[m] - dev_align[m]) for m in cpu_align)
        few_diff = 100 * max(abs(cpu_few[k] - dev_few[k]) for k in cpu_few)
        out[model] = {
            "alignment_cpu": cpu_align,
            "alignment_device": dev_align,
            "alignment_max_abs_diff": align_diff,
            "alignment_ok": align_diff <= ALIGNMENT_LIMIT,
            "fewshot_max_abs_diff_points": few_diff,
            "fewshot_ok": few_diff <= FEWSHOT_LIMIT_POINTS,
        }
    return out


def throughput(device: str, quick: bool) -> dict:
    import numpy as np
    import torch

    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings
    from repalign.models import PENULTIMATE, load_model

    (animals,) = load_human("peterson:animals")
    images = animals.images()
    out = {}
    for model in THROUGHPUT_MODELS[:1] if quick else THROUGHPUT_MODELS:
        handle = load_model(model, device=device)
        batch_size = handle.default_batch_size
        ready = torch.stack([handle.transform(images.load(i)) for i in range(min(batch_size, len(images)))])
        handle.forward(ready, layers=[PENULTIMATE])  # warm-up: kernels, autotuning, allocator
        repeats = 2 if quick else 10
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            handle.forward(ready, layers=[PENULTIMATE])
        _sync(device)
        forward_rate = repeats * len(ready) / (time.perf_counter() - start)
        start = time.perf_counter()
        features = extract_embeddings(handle, images, device=device, cache=False, batch_size=batch_size)
        end_to_end_rate = len(images) / (time.perf_counter() - start)
        # with the input cache: the first run records the inputs, the second reads them back
        extract_embeddings(handle, images, device=device, cache=False, input_cache=True, batch_size=batch_size)
        start = time.perf_counter()
        extract_embeddings(handle, images, device=device, cache=False, input_cache=True, batch_size=batch_size)
        input_cache_rate = len(images) / (time.perf_counter() - start)
        out[model] = {
            "batch_size": batch_size,
            "images_per_s_ready_inputs": forward_rate,
            "images_per_s_end_to_end": end_to_end_rate,
            "images_per_s_from_input_cache": input_cache_rate,
            "end_to_end_over_ready": end_to_end_rate / forward_rate,
            "input_cache_over_ready": input_cache_rate / forward_rate,
            "n_features": int(np.asarray(features).shape[1]),
        }
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the accelerator to check against the CPU (default: cuda)")
    parser.add_argument("--out", default="gpu_check.json", help="where the JSON goes")
    parser.add_argument("--quick", action="store_true", help="one model per part, small grids (the test suite)")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    started = time.perf_counter()
    result: dict = {"environment": environment(args.device)}
    result["gpu_tests"] = gpu_tests(root, args.quick)
    result["agreement"] = agreement(args.device, args.quick)
    result["throughput"] = throughput(args.device, args.quick)
    failed_tests = result["gpu_tests"].get("returncode", 0) not in (0, 5)  # 5: no gpu test collected
    result["ok"] = not failed_tests and all(a["alignment_ok"] and a["fewshot_ok"] for a in result["agreement"].values())
    result["seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"ok": result["ok"], "out": args.out, "seconds": round(result["seconds"], 1)}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
