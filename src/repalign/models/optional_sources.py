"""Sources behind optional packages: ``torchscript:PATH``, ``onnx:PATH``,
``open_clip:ARCH/PRETRAINED`` and ``hf:REPO`` (image towers).

A missing package raises :class:`~repalign.errors.OptionalDependencyError` with the
``pip install 'repalign[extra]'`` line. For the file formats (TorchScript, ONNX) the
network's output *is* the feature vector (flattened; 4-D maps global-average-pooled), and
preprocessing is ImageNet-style (resize the short side to 256, center crop 224, ImageNet
mean/std) unless a JSON file next to the model, ``<PATH>.json``, says otherwise with any of
``resize_size``, ``crop_size``, ``mean``, ``std``, ``interpolation`` ("bilinear"/"bicubic").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError, MissingDataError, OptionalDependencyError
from repalign.models import _assets
from repalign.models.base import PENULTIMATE, ModelHandle, ModelSpec

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PREPROCESS_KEYS = {"resize_size", "crop_size", "mean", "std", "interpolation"}


@dataclass(frozen=True)
class ImageNetStyleTransform:
    """RGB PIL image -> (3, crop, crop) float32: resize the short side, center crop,
    scale to [0, 1], normalise. Returns a torch tensor when ``as_tensor`` (picklable)."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    as_tensor: bool = True

    def __call__(self, image):
        from PIL import Image

        filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
        image = image.convert("RGB")
        width, height = image.size
        scale = self.resize_size / min(width, height)
        size = (max(self.crop_size, round(width * scale)), max(self.crop_size, round(height * scale)))
        image = image.resize(size, filters[self.interpolation])
        left, top = (size[0] - self.crop_size) // 2, (size[1] - self.crop_size) // 2
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = ((array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).transpose(2, 0, 1)
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.as_tensor:
            import torch

            return torch.from_numpy(array)
        return array

    def config(self) -> dict[str, Any]:
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


def file_preprocess(path: Path, *, as_tensor: bool) -> ImageNetStyleTransform:
    """The transform for a model file: defaults, overridden by ``<path>.json`` if present."""
    sidecar = path.with_name(path.name + ".json")
    options: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            options = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"Preprocessing file {sidecar} is not valid JSON: {exc}") from exc
        unknown = set(options) - _PREPROCESS_KEYS
        if unknown:
            raise InputError(f"Unknown keys {sorted(unknown)} in {sidecar}; allowed: {sorted(_PREPROCESS_KEYS)}")
        if options.get("interpolation", "bilinear") not in ("bilinear", "bicubic"):
            raise InputError(f"'interpolation' in {sidecar} must be 'bilinear' or 'bicubic'")
        for key in ("mean", "std"):
            if key in options:
                options[key] = tuple(float(v) for v in options[key])
    return ImageNetStyleTransform(as_tensor=as_tensor, **options)


class _FileSource:
    """Shared parts of the sources whose name is a model file path."""

    SOURCE = ""
    SUFFIXES: tuple[str, ...] = ()
    uses_torch = True

    def list_names(self) -> list[str]:
        return []

    def resolve(self, arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
        path = Path(arch).expanduser()
        if not path.is_file():
            raise MissingDataError(f"{self.SOURCE} model file not found: {path}")
        path = path.resolve()
        return ModelSpec(
            name=name,
            source=self.SOURCE,
            arch=str(path),
            resolved_id=f"{self.SOURCE}:{path.name}@sha256:{_assets.file_sha256(path)[:16]}",
            extra={"path": str(path)},
        )

    def describe(self, spec: ModelSpec, *, weights=None) -> dict[str, Any]:
        if weights is not None:
            raise InputError(f"{self.SOURCE} models hold their weights in the model file; drop --weights")
        path = Path(spec.arch)
        return {
            "identity": {"resolved_id": spec.resolved_id, "weights": f"file-sha256:{_assets.file_sha256(path)}"},
            "preprocess_config": {
                "transform": "imagenet-style",
                **file_preprocess(path, as_tensor=self.uses_torch).config(),
            },
        }

    def weights_status(self, spec: ModelSpec, weights=None) -> str:
        return "local"


class TorchScriptSource(_FileSource):
    """``torchscript:PATH`` -- a ``torch.jit.save``d module (needs only torch)."""

    SOURCE = "torchscript"

    def load(self, spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options):
        import torch

        from repalign._device import resolve_device
        from repalign.models._torch_handle import TorchModelHandle

        info = self.describe(spec, weights=weights)
        target = resolve_device(device)
        try:
            module = torch.jit.load(spec.arch, map_location=target)
        except RuntimeError as exc:
            raise InputError(f"{spec.arch} is not a TorchScript file: {exc}") from exc
        handle = TorchModelHandle(
            spec,
            module,
            transform=file_preprocess(Path(spec.arch), as_tensor=True),
            preprocess_config=info["preprocess_config"],
            identity=info["identity"],
            device=target,
            precision=precision,
            classifier=None,
            named_layers=False,  # scripted modules take no hooks
        )
        return handle


class OnnxSource(_FileSource):
    """``onnx:PATH`` -- an ONNX graph run with onnxruntime (extra ``onnx``)."""

    SOURCE = "onnx"
    uses_torch = False

    def load(self, spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options):
        info = self.describe(spec, weights=weights)
        return OnnxModelHandle(spec, info, device=device)


class OnnxModelHandle(ModelHandle):
    """An onnxruntime session; its first output is the feature vector."""

    uses_torch = False
    default_batch_size = 32

    def __init__(self, spec: ModelSpec, info: dict[str, Any], *, device: str = DEFAULT_DEVICE):
        try:
            import onnxruntime
        except ImportError as exc:
            raise OptionalDependencyError("onnxruntime", "onnx", "ONNX models") from exc
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") or device == "auto":
            available = onnxruntime.get_available_providers()
            if "CUDAExecutionProvider" in available:
                providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(spec.arch, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise InputError(f"{spec.arch} is not a loadable ONNX model: {exc}") from exc
        self.spec = spec
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        self._info = info
        self._input_name = self.session.get_inputs()[0].name

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._info["identity"])

    @property
    def preprocess_config(self) -> dict[str, Any]:
        return dict(self._info["preprocess_config"])

    @property
    def transform(self):
        return file_preprocess(Path(self.spec.arch), as_tensor=False)

    def forward(self, batch: Any, *, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``{"penultimate": (b, d) float32}`` from the graph's first output."""
        requested = [PENULTIMATE] if layers is None else list(layers)
        if requested != [PENULTIMATE]:
            raise InputError(f"ONNX models give only the layer '{PENULTIMATE}' (their output); got {requested}")
        array = np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.float32)
        output = np.asarray(self.session.run(None, {self._input_name: array})[0], dtype=np.float32)
        if output.ndim == 4:
            output = output.mean(axis=(2, 3))
        return {PENULTIMATE: output.reshape(len(output), -1)}


@dataclass
class _PackageSource:
    """Sources that need an optional package (and usually internet for their weights)."""

    SOURCE: str
    package: str
    module: str
    extra: str
    feature: str
    example: str

    def _require(self):
        import importlib

        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise OptionalDependencyError(self.package, self.extra, self.feature) from exc

    def list_names(self) -> list[str]:
        return []

    def resolve(self, arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
        if self.SOURCE == "open_clip" and arch.count("/") != 1:
            raise InputError(f"open_clip names look like '{self.example}'; got '{name}'")
        return ModelSpec(name=name, source=self.SOURCE, arch=arch, resolved_id=f"{self.SOURCE}:{arch}")

    def describe(self, spec: ModelSpec, *, weights=None) -> dict[str, Any]:
        # The identity (revision) and preprocessing are only known from the loaded model.
        handle = self.load(spec, device="cpu", weights=weights)
        return {"identity": handle.identity, "preprocess_config": handle.preprocess_config}

    def weights_status(self, spec: ModelSpec, weights=None) -> str:
        return "download"

    def load(self, spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options):
        self._require()
        if weights is not None:
            raise InputError(f"{self.SOURCE} models load their own weights; drop --weights")
        if self.SOURCE == "open_clip":
            return _load_open_clip(spec, device=device, precision=precision)
        return _load_hf(spec, device=device, precision=precision)


def _load_open_clip(spec: ModelSpec, *, device: str, precision: str):
    """The image tower of an OpenCLIP model; features are ``encode_image`` outputs."""
    import open_clip

    from repalign.models._torch_handle import TorchModelHandle

    arch, pretrained = spec.arch.split("/", 1)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    except Exception as exc:  # unknown names, offline downloads
        raise MissingDataError(f"Could not load open_clip model '{spec.arch}': {exc}") from exc

    return TorchModelHandle(
        spec,
        model.visual,
        transform=preprocess,
        preprocess_config={"transform": "open_clip", "repr": repr(preprocess)},
        identity={"resolved_id": spec.resolved_id, "weights": f"open_clip:{spec.arch}"},
        device=device,
        precision=precision,
        classifier=None,
    )


def _load_hf(spec: ModelSpec, *, device: str, precision: str):
    """A Hugging Face vision model: pooled output (or the mean token) of its image encoder."""
    import transformers

    from repalign.models._torch_handle import TorchModelHandle

    try:
        processor = transformers.AutoImageProcessor.from_pretrained(spec.arch)
        model = transformers.AutoModel.from_pretrained(spec.arch)
    except Exception as exc:  # offline, unknown repo, gated repo
        raise MissingDataError(f"Could not load Hugging Face model '{spec.arch}': {exc}") from exc
    if hasattr(model, "vision_model"):  # CLIP-like: keep the image tower
        model = model.vision_model

    import torch

    class ImageEncoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            out = self.inner(pixel_values=pixel_values)
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state.mean(dim=1)

    revision = getattr(model.config, "_commit_hash", None) or "unknown"
    return TorchModelHandle(
        spec,
        ImageEncoder(model),
        transform=_HfTransform(processor),
        preprocess_config={"transform": "transformers.AutoImageProcessor", **processor.to_dict()},
        identity={"resolved_id": spec.resolved_id, "weights": f"hf-hub:{spec.arch}@{revision}"},
        device=device,
        precision=precision,
        classifier=None,
    )


@dataclass
class _HfTransform:
    processor: Any

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


TORCHSCRIPT = TorchScriptSource()
ONNX = OnnxSource()
OPEN_CLIP = _PackageSource(
    "open_clip", "open_clip_torch", "open_clip", "open_clip", "open_clip models", "open_clip:ViT-B-32/laion2b_s34b_b79k"
)
HF = _PackageSource("hf", "transformers", "transformers", "hf", "Hugging Face models", "hf:google/vit-base-patch16-224")
