"""How fast a model whose weights are neither cached nor downloadable fails, offline.

A researcher on a machine without internet should get repalign's one-line error (naming
``--weights PATH``) at once, not after network retries. This times, in the same run,
``repalign.models.load_model`` against timm's own ``create_model(pretrained=True)`` with
the same empty Hugging Face cache and ``HF_HUB_OFFLINE=1``. Target: ours < 10 s.

Run: .venv/bin/python benchmarks/bench_offline_errors.py [--model timm:resnet18] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def _time_failure(func, repeat: int) -> tuple[float, float, str]:
    """(first call incl. lazy imports, best later call, error message)."""
    times, message = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            func()
        except Exception as exc:  # the point is to time the failure, whatever its type
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
        else:
            raise SystemExit("the model loaded: its weights are cached; pick an uncached model")
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:] or times), message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm:resnet18")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty_cache:
        os.environ["HF_HUB_CACHE"] = empty_cache
        os.environ["HF_HUB_OFFLINE"] = "1"
        import timm

        from repalign.models import load_model

        arch = args.model.split(":", 1)[1]
        ours = _time_failure(lambda: load_model(args.model, device="cpu"), args.repeat)
        theirs = _time_failure(lambda: timm.create_model(arch, pretrained=True), args.repeat)
    print(f"{'':24}{'first call':>12}{'later calls':>13}")
    for label, (first, later, message) in (("repalign load_model", ours), ("timm create_model", theirs)):
        print(f"{label:24}{first:10.3f} s{later:11.3f} s  {message}")
    verdict = "met" if ours[0] < 10 else "NOT met"
    print(f"target: repalign's first call < 10 s -> {verdict} ({ours[0]:.2f} s; timm alone {theirs[0]:.2f} s)")


if __name__ == "__main__":
    main()
