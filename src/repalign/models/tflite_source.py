"""``tflite:NAME`` -- the six ImageNet-trained, uint8-quantized TFLite models of the data
registry dataset ``coral-tflite``, run with ``ai_edge_litert`` (no torch).

Features are the penultimate tensor of the graph, found from the graph itself: walking back
from the output through shape-only ops (softmax, reshape, quantize, ...) reaches the
classifier (a 1x1 CONV_2D or FULLY_CONNECTED); its input tensor is the penultimate layer,
dequantized with its scale and zero point. A graph whose output is not produced by a
classifier (the ``..._embedding_extractor`` model) gives its features as the output.
Requested intermediate tensors are added to the graph's outputs (the flatbuffer is rewritten
in memory), so the fast XNNPACK delegate still runs the whole graph. Their (b, h, w, c) maps
are averaged over space to (b, c), as the torch sources do, so an early layer has as many
features as channels, not millions.

Layer names: the converter's tensor names run to hundreds of characters
(``MobilenetV2/expanded_conv_3/expand/Relu6;MobilenetV2/...``), so every op output also has
a short alias from the graph itself -- the op's kind and its rank among the ops of that kind
in execution order (``conv_4``, ``dwconv_2``, ``add_1``, ``avgpool_1``). The graph of a file
never changes, so an alias always names the same tensor of that file (and the file's sha256
is part of every cache key). ``layer_table()`` lists them in execution order.

Preprocessing follows the Coral models' convention: the whole image resized (Lanczos, no
crop) to the model's input size, then quantized with the input tensor's parameters from
the float range (pixel - 128) / 128 -- for these models that is the raw uint8 pixel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError, OptionalDependencyError, unknown_name
from repalign.models import _assets
from repalign.models._layers import unknown_layer
from repalign.models.base import PENULTIMATE, ModelHandle, ModelSpec

log = logging.getLogger(__name__)

SOURCE = "tflite"
DATASET = "coral-tflite"
MODELS = (
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v1_1.0_224_quant_embedding_extractor",
    "mobilenet_v2_1.0_224_quant",
    "tf2_mobilenet_v2_1.0_224_ptq",
)
LOGITS = "logits"
#: Coral's float input convention: x = (pixel - 128) / 128.
INPUT_MEAN = 128.0
INPUT_STD = 128.0
#: ops that only reshape, rescale or normalise: the classifier sits behind them
_PASS_THROUGH_OPS = {"SOFTMAX", "RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE", "LOGISTIC"}
_CLASSIFIER_OPS = {"FULLY_CONNECTED", "CONV_2D"}
#: short kinds of the common ops in layer aliases; other ops go by their lowercased name
_ALIAS_KINDS = {
    "CONV_2D": "conv",
    "DEPTHWISE_CONV_2D": "dwconv",
    "FULLY_CONNECTED": "fc",
    "AVERAGE_POOL_2D": "avgpool",
    "MAX_POOL_2D": "maxpool",
    "ADD": "add",
    "MUL": "mul",
    "CONCATENATION": "concat",
}


@dataclass(frozen=True)
class GraphLayer:
    """One op output of a TFLite graph: its short alias, tensor index and name, and op."""

    alias: str
    index: int
    name: str
    op: str


def graph_layers(ops: list[dict], tensors: dict[str, int]) -> list[GraphLayer]:
    """Every op output, in execution order, with its alias (``conv_1``, ``dwconv_3``, ...).

    Ranks are 1-based per kind; an op with several outputs numbers them ``conv_1.2``.
    """
    names = {index: name for name, index in tensors.items()}
    counts: dict[str, int] = {}
    layers = []
    for op in ops:
        kind = _ALIAS_KINDS.get(op["op_name"], op["op_name"].lower())
        counts[kind] = counts.get(kind, 0) + 1
        for j, index in enumerate(op["outputs"]):
            alias = f"{kind}_{counts[kind]}" + (f".{j + 1}" if j else "")
            layers.append(GraphLayer(alias, int(index), names.get(int(index), str(index)), op["op_name"]))
    return layers


def list_names() -> list[str]:
    return list(MODELS)


def resolve(arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
    if arch.endswith(".tflite"):
        arch = arch[: -len(".tflite")]
    if arch not in MODELS:
        raise unknown_name("TFLite model", arch, MODELS)
    return ModelSpec(
        name=name,
        source=SOURCE,
        arch=arch,
        resolved_id=f"tflite:{arch}",
        extra={"file": f"{arch}.tflite", "dataset": DATASET},
    )


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise OptionalDependencyError("ai-edge-litert", "tflite", "TFLite models") from exc
    return Interpreter, OpResolverType


def _model_path(spec: ModelSpec):
    return _assets.fetch_asset(DATASET, spec.extra["file"])


def _input_geometry(path) -> dict[str, Any]:
    """Input size and quantization, as the interpreter reports them."""
    Interpreter, _ = _interpreter_class()
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    detail = interpreter.get_input_details()[0]
    _, height, width, _ = (int(v) for v in detail["shape"])
    scale, zero_point = detail["quantization"]
    return {
        "height": height,
        "width": width,
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def preprocess_config(spec: ModelSpec, geometry: dict[str, Any]) -> dict[str, Any]:
    return {
        "resize": [geometry["height"], geometry["width"]],
        "interpolation": "lanczos",
        "crop": "none",
        "input_mean": INPUT_MEAN,
        "input_std": INPUT_STD,
        "input_dtype": geometry["dtype"],
        "input_scale": geometry["scale"],
        "input_zero_point": geometry["zero_point"],
    }


def describe(spec: ModelSpec, *, weights=None) -> dict[str, Any]:
    if weights is not None:
        raise InputError("TFLite models take no separate weights file (the .tflite file holds them)")
    path = _model_path(spec)
    return {
        "identity": {"resolved_id": spec.resolved_id, "weights": f"file-sha256:{_assets.file_sha256(path)}"},
        "preprocess_config": preprocess_config(spec, _input_geometry(path)),
    }


def weights_status(spec: ModelSpec, weights=None) -> str:
    return _assets.asset_available(DATASET, spec.extra["file"])


@dataclass(frozen=True)
class TfliteTransform:
    """RGB PIL image -> (height, width, 3) array in the model's input dtype. Picklable."""

    height: int
    width: int
    dtype: str
    scale: float
    zero_point: int

    def __call__(self, image) -> np.ndarray:
        from PIL import Image

        rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() of RGB is a copy
        pixels = np.asarray(rgb.resize((self.width, self.height), Image.Resampling.LANCZOS))
        table = _input_table(self.dtype, self.scale, self.zero_point)
        if table is None:  # identity: the quantized input is the raw pixel (the Coral models)
            return pixels
        return table[pixels]

    def batch_steps(self) -> tuple[tuple[int, int], str, np.ndarray | None]:
        """This transform as steps a batch can take (see ``repalign.embed.arrays``): the output
        ``(height, width)``, the Pillow filter of the resize, and the 256-entry table of model
        input values (None: the pixel itself)."""
        return (self.height, self.width), "lanczos", _input_table(self.dtype, self.scale, self.zero_point)


@functools.lru_cache(maxsize=32)
def _input_table(dtype: str, scale: float, zero_point: int) -> np.ndarray | None:
    """The model input value of each of the 256 uint8 pixel values, or None when it is the pixel.

    The float formula runs once per pixel *value* instead of once per pixel: indexing this
    table gives exactly the values the formula gives elementwise (same float32 arithmetic).
    """
    pixels = np.arange(256, dtype=np.float32)
    value = (pixels - INPUT_MEAN) / INPUT_STD
    if dtype in ("uint8", "int8"):
        info = np.iinfo(dtype)
        quantized = np.round(value / scale + zero_point) if scale else pixels
        table = np.clip(quantized, info.min, info.max).astype(dtype)
    else:
        table = value.astype(dtype)
    if table.dtype == np.uint8 and np.array_equal(table, np.arange(256)):
        return None
    table.flags.writeable = False
    return table


def find_penultimate_tensor(ops: list[dict], output_index: int) -> int | None:
    """Index of the classifier's input tensor, or None when the output is not a classifier's.

    Walks back from ``output_index`` through shape-only ops to the op that computes it.
    """
    producers = {int(t): op for op in ops for t in op["outputs"]}
    tensor = output_index
    while tensor in producers:
        op = producers[tensor]
        name = op["op_name"]
        if name in _PASS_THROUGH_OPS:
            tensor = int(op["inputs"][0])
            continue
        return int(op["inputs"][0]) if name in _CLASSIFIER_OPS else None
    return None


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float32 values of a (possibly quantized) tensor as (b, d): a (b, h, w, c) map averaged
    over space (a 1x1 map, like the penultimate tensor, keeps its values exactly), higher
    ranks flattened."""
    scale, zero_point = detail["quantization"]
    values = values.astype(np.float32)
    if scale:
        values = (values - zero_point) * scale
    if values.ndim == 4:
        values = values.mean(axis=(1, 2), dtype=np.float32)
    return values.reshape(len(values), -1)


def read_graph(path) -> tuple[Any, list[dict], dict[str, int]]:
    """``(model object, ops, tensor name -> index)`` of a .tflite file's main subgraph.

    ``ops`` are ``{"op_name", "inputs", "outputs"}`` in execution order, read from the
    flatbuffer itself (the interpreter's own op list shows fused DELEGATE ops instead).
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    # Newer files keep small op codes in the deprecated field too; the larger one is right.
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    ops = [
        {
            "op_name": op_names.get(codes[op.opcodeIndex], "CUSTOM"),
            "inputs": [int(i) for i in op.inputs],
            "outputs": [int(i) for i in op.outputs],
        }
        for op in graph.operators
    ]
    # Layers a user can ask for: activations (op outputs), not constant weights.
    produced = {i for op in ops for i in op["outputs"]}
    tensors = {
        (t.name.decode() if isinstance(t.name, bytes) else str(t.name)): i
        for i, t in enumerate(graph.tensors)
        if i in produced
    }
    return model, ops, tensors


def with_extra_outputs(model, indices: Sequence[int]) -> bytes:
    """The serialized model with tensors ``indices`` added to the graph outputs.

    An output is materialised by every delegate, so intermediate tensors can be read while
    the fast XNNPACK delegate runs the graph (preserve_all_tensors would need the ~25x
    slower reference kernels).
    """
    import copy

    import flatbuffers

    patched = copy.copy(model)
    graph = copy.copy(model.subgraphs[0])
    graph.outputs = [int(i) for i in model.subgraphs[0].outputs] + [int(i) for i in indices]
    patched.subgraphs = [graph, *model.subgraphs[1:]]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(patched.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class TfliteModelHandle(ModelHandle):
    """A TFLite graph. ``forward`` takes a (b, h, w, 3) uint8 batch.

    The interpreter runs one image at a time unless the graph accepts a resized batch
    dimension (the embedding extractor does; the classifiers' fixed reshape does not).
    """

    uses_torch = False
    default_batch_size = 16

    def __init__(self, spec: ModelSpec, path, *, num_threads: int | None = None):
        _interpreter_class()  # a clear error when ai-edge-litert is missing
        self.spec = spec
        self.device = "cpu"
        self.path = path
        self.num_threads = int(num_threads or os.cpu_count() or 1)
        self._model, ops, self._tensors = read_graph(path)
        self._layers = graph_layers(ops, self._tensors)
        self._aliases = {layer.alias: layer.index for layer in self._layers}
        graph = self._model.subgraphs[0]
        self._output_index = int(graph.outputs[0])
        penultimate = find_penultimate_tensor(ops, self._output_index)
        self.penultimate_index = self._output_index if penultimate is None else penultimate
        self.has_classifier = penultimate is not None
        self._shapes = {i: [int(v) for v in t.shape] for i, t in enumerate(graph.tensors)}
        self._runners: dict[tuple[frozenset[int], int], _Runner] = {}
        self._lock = threading.Lock()  # an interpreter is not thread-safe
        detail = self._runner(frozenset([self.penultimate_index])).input
        self._geometry = {
            "height": int(detail["shape"][1]),
            "width": int(detail["shape"][2]),
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(detail["quantization"][0]),
            "zero_point": int(detail["quantization"][1]),
        }
        self._identity = {"resolved_id": spec.resolved_id, "weights": f"file-sha256:{_assets.file_sha256(path)}"}

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def preprocess_config(self) -> dict[str, Any]:
        return preprocess_config(self.spec, self._geometry)

    @property
    def transform(self) -> TfliteTransform:
        return TfliteTransform(**self._geometry)

    @property
    def penultimate_dim(self) -> int:
        return int(np.prod(self._shapes[self.penultimate_index][1:]))

    def _presets(self) -> list[str]:
        return [PENULTIMATE, LOGITS] if self.has_classifier else [PENULTIMATE]

    def available_layers(self) -> list[str]:
        """Presets, then the short aliases and the full tensor names, in execution order."""
        graph = [layer.alias for layer in self._layers] + [layer.name for layer in self._layers]
        return self._presets() + list(dict.fromkeys(graph))

    def layer_table(self) -> list[dict[str, Any]]:
        """Every op output in execution order (``layer`` its alias, ``name`` the tensor's),
        then the presets with the tensor each stands for."""
        rows = [
            {"layer": layer.alias, "kind": layer.op, "features": self._features(layer.index), "name": layer.name}
            for layer in self._layers
        ]
        for preset in self._presets():
            index = self._tensor_index(preset)
            rows.append(
                {"layer": preset, "kind": "preset", "features": self._features(index), "name": self._name(index)}
            )
        return rows

    def _features(self, index: int) -> int:
        """Features of a tensor as ``forward`` gives them: channels of a map, else all values."""
        shape = self._shapes[index][1:]
        return int(shape[-1]) if len(shape) == 3 else int(np.prod(shape))

    def _name(self, index: int) -> str:
        return next((layer.alias for layer in self._layers if layer.index == index), str(index))

    def _tensor_index(self, layer: str) -> int:
        if layer == PENULTIMATE:
            return self.penultimate_index
        if layer == LOGITS and self.has_classifier:
            return self._output_index
        if layer in self._aliases:
            return int(self._aliases[layer])
        if layer in self._tensors:
            return int(self._tensors[layer])
        raise unknown_layer(self.spec.name, layer, self.available_layers())

    def _runner(self, indices: frozenset[int]) -> _Runner:
        key = (indices, self.num_threads)
        if key not in self._runners:
            extra = sorted(i for i in indices if i != self._output_index)
            content = with_extra_outputs(self._model, extra)
            self._runners[key] = _Runner(content, self.num_threads)
        return self._runners[key]

    @contextlib.contextmanager
    def compute_threads(self, num_threads: int):
        """Run ``forward`` with ``num_threads`` interpreter threads inside the block.

        The interpreter's thread count is fixed when it is built, so each count gets its own
        (cached) interpreter. Outputs do not depend on it (XNNPACK's quantized kernels
        split work, not sums). Used by the extraction engine to leave a core to the decode
        thread.
        """
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise InputError(f"num_threads must be an integer >= 1; got {num_threads!r}")
        with self._lock:
            previous, self.num_threads = self.num_threads, num_threads
        try:
            yield self
        finally:
            with self._lock:
                self.num_threads = previous

    def forward(self, batch: Any, *, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``{layer: (b, d) float32}`` (dequantized) for a (b, h, w, 3) batch."""
        requested = [PENULTIMATE] if layers is None else list(layers)
        indices = {name: self._tensor_index(name) for name in requested}
        array = np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch)
        if array.ndim == 3:
            array = array[None]
        expected = (self._geometry["height"], self._geometry["width"], 3)
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise InputError(
                f"{self.spec.name} expects a batch of shape (b, {', '.join(map(str, expected))}); got {array.shape}"
            )
        array = np.ascontiguousarray(array, dtype=self._geometry["dtype"])
        with self._lock:
            return self._runner(frozenset(indices.values())).run(array, indices)


class _Runner:
    """One interpreter over a (patched) model, with batch resizing when the graph allows it."""

    def __init__(self, content: bytes, num_threads: int):
        Interpreter, _ = _interpreter_class()
        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = {int(d["index"]): d for d in self.interpreter.get_output_details()}
        self.batch = 1
        self.batchable: bool | None = None

    def run(self, array: np.ndarray, indices: dict[str, int]) -> dict[str, np.ndarray]:
        if self._can_batch(len(array)):
            return self._invoke(array, indices)
        parts = [self._invoke(array[i : i + 1], indices) for i in range(len(array))]
        return {name: np.concatenate([p[name] for p in parts]) for name in indices}

    def _can_batch(self, size: int) -> bool:
        """Resize the input's batch dimension to ``size`` if the graph allows it."""
        if size == self.batch:
            return True
        if self.batchable is False:
            self._resize(1)
            return False
        try:
            self._resize(size)
            self.batchable = True
            return True
        except (RuntimeError, ValueError) as exc:
            log.debug("graph cannot batch (%s); running images one at a time", exc)
            self.batchable = False
            self._resize(1)
            return False

    def _resize(self, size: int) -> None:
        if size != self.batch:
            shape = [size, *(int(v) for v in self.input["shape"][1:])]
            self.batch = size  # set first: a failed allocation leaves the graph at this size
            self.interpreter.resize_tensor_input(self.input["index"], shape)
            self.interpreter.allocate_tensors()

    def _invoke(self, array: np.ndarray, indices: dict[str, int]) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], array)
        self.interpreter.invoke()
        return {
            name: dequantize(self.interpreter.get_tensor(index), self.outputs[index]) for name, index in indices.items()
        }


def load(
    spec: ModelSpec,
    *,
    device: str = DEFAULT_DEVICE,
    weights=None,
    precision: str = "auto",
    num_threads: int | None = None,
    **_options,
) -> TfliteModelHandle:
    if weights is not None:
        raise InputError("TFLite models take no separate weights file (the .tflite file holds them)")
    if device not in ("auto", "cpu", None):
        log.info("TFLite models run on the CPU; ignoring device=%r", device)
    return TfliteModelHandle(spec, _model_path(spec), num_threads=num_threads)
