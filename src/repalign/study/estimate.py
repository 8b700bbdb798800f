"""A cost model for a study: how much compute it needs, and how long it takes on given devices.

``repalign run CONFIG --dry-run --estimate`` prints it. Per model, extraction costs
``images x GMACs per image``:

* images: the stimuli of every human dataset with images, plus the few-shot images its splits
  use (the whole test split without ``max_eval_per_class``; counted exactly when the dataset is
  on this machine, else from its published test-split size);
* GMACs per image at the model's input size: timm's published inference benchmark (the
  ``benchmark-infer-*`` tables of the robustness snapshots), by architecture; for a model that
  table lacks, a log-log fit of GMACs on parameter count over the table's models, with the
  parameter count from timm's results table; non-timm models are listed as unknown.

Wall time = GMACs / throughput, with the throughput in GMAC/s given (``--throughput``) or taken
from ``scripts/gpu_check.sh``'s JSON (images per second of models of known GMACs). Few-shot heads
do not scale with GMACs: they cost ``--fewshot-seconds`` per (model, dataset), measured by
``benchmarks/bench_fewshot.py`` on the device (default: the 2-core CPU figure of docs/fewshot.md).
Units are independent, so N devices (Ray, one unit per device) divide the total, bounded below by
the longest unit. Extraction is counted as forward compute only: decoding and preprocessing on
the CPU, and data loading, are not in it (see docs/study.md).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repalign.errors import InputError
from repalign.study.config import StudyConfig

#: the published timm inference benchmark the GMACs come from (GPU, AMP, 2025 snapshot)
BENCHMARK_SOURCE = ("timm-results-2025-10-30", "benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv")
#: test-split sizes of the built-in few-shot datasets (published), for datasets not on this machine
PUBLISHED_TEST_SIZES = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 10_000, "cifar100": 10_000}
#: seconds of the full few-shot grid (6 shots x 3 heads x 5 seeds) for one model and a
#: CIFAR-100-sized dataset on the 2-core CPU (docs/fewshot.md, benchmarks/bench_fewshot.py)
DEFAULT_FEWSHOT_SECONDS = 40.0


@dataclass(frozen=True)
class ModelCost:
    model: str
    images: int
    gmacs_per_image: float | None  # None: unknown (not in timm's tables)
    gmacs_source: str  # "benchmark", "parameter fit" or "unknown"

    @property
    def gmacs(self) -> float:
        return self.images * self.gmacs_per_image if self.gmacs_per_image is not None else 0.0


@dataclass(frozen=True)
class StudyEstimate:
    models: list[ModelCost]
    fewshot_units: int  # (model, few-shot dataset) pairs
    throughput_gmacs_per_s: float
    fewshot_seconds: float

    @property
    def extraction_gmacs(self) -> float:
        return sum(m.gmacs for m in self.models)

    @property
    def extraction_seconds(self) -> float:
        return self.extraction_gmacs / self.throughput_gmacs_per_s

    @property
    def fewshot_total_seconds(self) -> float:
        return self.fewshot_units * self.fewshot_seconds

    def wall_seconds(self, devices: int) -> float:
        """Total on ``devices`` devices running units in parallel (floor: the longest unit)."""
        per_unit = [
            m.gmacs / self.throughput_gmacs_per_s + self.fewshot_total_seconds / max(len(self.models), 1)
            for m in self.models
        ]
        total = sum(per_unit)
        return max(total / devices, max(per_unit, default=0.0))

    def lines(self, devices: int) -> list[str]:
        unknown = [m.model for m in self.models if m.gmacs_per_image is None]
        fitted = sum(m.gmacs_source == "parameter fit" for m in self.models)
        images = sum(m.images for m in self.models)
        out = [
            f"estimate for {len(self.models)} models at {self.throughput_gmacs_per_s:,.0f} GMAC/s "
            f"(few-shot: {self.fewshot_seconds:g} s per model and dataset):",
            f"  extraction: {images:,} images, {self.extraction_gmacs / 1e3:,.1f} TMAC, "
            f"{self.extraction_seconds / 3600:.2f} device-hours"
            + (f" (GMACs of {fitted} models fitted from their parameter count)" if fitted else ""),
            f"  few-shot:   {self.fewshot_units} model x dataset grids, {self.fewshot_total_seconds / 3600:.2f} device-hours",
            f"  total:      {self.wall_seconds(1) / 3600:.2f} hours on 1 device"
            + (f", {self.wall_seconds(devices) / 3600:.2f} hours on {devices} devices" if devices > 1 else ""),
        ]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            out.append(f"  not counted (no published GMACs): {shown}")
        return out


def throughput_from_gpu_check(path: str | Path) -> float:
    """GMAC/s from ``scripts/gpu_check.sh``'s JSON: the median over its timm models of
    (images per second on ready inputs) x (the model's published GMACs per image)."""
    try:
        result = json.loads(Path(path).read_text())
        speeds = result["throughput"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not the JSON of scripts/gpu_check.sh ({type(exc).__name__}: {exc})") from None
    table = _benchmark_table()
    rates = []
    for model, speed in speeds.items():
        arch = _arch(model)
        if arch in table:
            rates.append(float(speed["images_per_s_ready_inputs"]) * table[arch])
    if not rates:
        raise InputError(f"{path} holds no timm model with published GMACs to turn images/s into GMAC/s")
    return float(np.median(rates))


def published_throughput() -> float:
    """GMAC/s of the GPU behind timm's published benchmark (an RTX 4090, AMP, batch 1024): the
    median over its models of images per second x GMACs per image. The default device."""
    rates = [
        float(row["infer_samples_per_sec"]) * float(row["infer_gmacs"])
        for row in _benchmark_rows()
        if row.get("infer_gmacs") and row.get("infer_samples_per_sec") and float(row["infer_gmacs"]) >= 1.0
    ]  # models of at least 1 GMAC: the small ones are bound by overheads, not compute
    return float(np.median(rates))


def estimate_study(
    config: StudyConfig,
    models: list[str],
    *,
    throughput_gmacs_per_s: float,
    fewshot_seconds: float = DEFAULT_FEWSHOT_SECONDS,
) -> StudyEstimate:
    """The cost of running ``models`` through ``config``; reads only what is on this machine."""
    if not (throughput_gmacs_per_s > 0 and math.isfinite(throughput_gmacs_per_s)):
        raise InputError(f"--throughput must be a positive number of GMAC/s; got {throughput_gmacs_per_s!r}")
    if not (fewshot_seconds >= 0 and math.isfinite(fewshot_seconds)):
        raise InputError(f"--fewshot-seconds must be a non-negative number; got {fewshot_seconds!r}")
    images = _images_per_model(config)
    sizes = model_sizes(models)
    costs = [ModelCost(model, images, sizes[model].gmacs, sizes[model].source) for model in models]
    n_fewshot = len(models) * len(config.fewshot.datasets) if "fewshot" in config.stages else 0
    return StudyEstimate(costs, n_fewshot, throughput_gmacs_per_s, fewshot_seconds)


@dataclass(frozen=True)
class ModelSize:
    """A model's published size at its default input size (None: not published)."""

    params_m: float | None  # millions of parameters
    gmacs: float | None  # GMACs per image
    activations_m: float | None  # millions of activation values per image (timm's "infer_macts")
    source: str  # "benchmark", "parameter fit" or "unknown"


def model_sizes(models: list[str]) -> dict[str, ModelSize]:
    """The published size of each model, from timm's inference benchmark by architecture (at the
    largest input size it was benchmarked at: timm's test size, the conservative one); for an
    architecture the benchmark lacks, GMACs fitted on the parameter count of timm's results
    table (activations unknown); non-timm models are unknown. Reads only the mirror/data home."""
    out: dict[str, ModelSize] = {}
    table: dict[str, dict[str, str]] | None = None
    counts, fit = None, None  # read once, when first needed
    for model in models:
        arch = _arch(model)
        if arch is None:
            out[model] = ModelSize(None, None, None, "unknown")
            continue
        if table is None:  # an architecture benchmarked at several input sizes: the largest (as timm tests it)
            table = {}
            for row in _benchmark_rows():
                if row.get("infer_gmacs") and _number(row.get("infer_img_size")) is not None:
                    kept = table.get(row["model"])
                    if kept is None or float(row["infer_img_size"]) >= float(kept["infer_img_size"]):
                        table[row["model"]] = row
        if arch in table:
            row = table[arch]
            out[model] = ModelSize(
                _number(row.get("param_count")), float(row["infer_gmacs"]), _number(row.get("infer_macts")), "benchmark"
            )
        elif (params := (counts := counts or _param_counts()).get(arch)) is not None:
            fit = fit or _parameter_fit()
            out[model] = ModelSize(params, fit(params), None, "parameter fit")
        else:
            out[model] = ModelSize(None, None, None, "unknown")
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _arch(model: str) -> str | None:
    """The bare timm architecture of a model name ("timm:resnet50" -> "resnet50"), else None."""
    from repalign.models import resolve_model

    try:
        spec = resolve_model(model)
    except Exception:  # an unresolvable name is counted as unknown; validation reports it
        return None
    return spec.arch.split(".")[0] if spec.source == "timm" else None


def _images_per_model(config: StudyConfig) -> int:
    from repalign.data import read_only
    from repalign.data.human import load_human

    total = 0
    with read_only():
        if "alignment" in config.stages:
            for spec in config.alignment.human:
                try:
                    humans = load_human(spec)
                except Exception:  # not on this machine: Peterson's domains have 120 stimuli each
                    humans = []
                total += sum(len(h.stimuli) for h in humans if h.image_paths is not None or h.images_dataset)
        if "fewshot" in config.stages:
            for name in config.fewshot.datasets:
                total += _fewshot_images(name, config)
    return total


def _fewshot_images(name: str, config: StudyConfig) -> int:
    from repalign.study.plan import fewshot_inputs

    try:
        _, splits = fewshot_inputs(name, config)
    except Exception:  # not on this machine yet: its published test split
        size = PUBLISHED_TEST_SIZES.get(name)
        if size is None:
            raise InputError(f"few-shot dataset '{name}' is not on this machine, so its size is unknown") from None
        return size
    return len(splits.used_indices())


def _benchmark_rows() -> list[dict[str, str]]:
    from repalign.data import fetch_file, read_only

    dataset, file = BENCHMARK_SOURCE
    with read_only():
        path = fetch_file(dataset, file, progress=False)
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _benchmark_table() -> dict[str, float]:
    """arch -> GMACs per image at timm's default inference size."""
    return {row["model"]: float(row["infer_gmacs"]) for row in _benchmark_rows() if row.get("infer_gmacs")}


def _parameter_fit():
    """GMACs as a power of the parameter count, fitted (log-log least squares) on the table."""
    rows = [r for r in _benchmark_rows() if r.get("infer_gmacs") and r.get("param_count")]
    params = np.log([float(r["param_count"]) for r in rows])
    gmacs = np.log([max(float(r["infer_gmacs"]), 1e-3) for r in rows])
    slope, intercept = np.polyfit(params, gmacs, 1)
    return lambda millions: float(np.exp(intercept + slope * np.log(millions)))


def _param_counts() -> dict[str, float]:
    """arch -> millions of parameters, from timm's published ImageNet results."""
    from repalign.data import fetch_file, read_only
    from repalign.robustness import DATASET_FILES, parse_param_count

    with read_only():
        path = fetch_file(BENCHMARK_SOURCE[0], DATASET_FILES["imagenet"], progress=False)
    out: dict[str, float] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            out.setdefault(row["model"].split(".")[0], parse_param_count(row["param_count"]))
    return out
