"""Array image sets preprocessed in batches (repalign.embed.arrays) against the per-image path.

The oracle is Pillow itself (``Image.resize``) and the model's own torchvision/timm transform
run image by image; the batched inputs must equal them bit for bit, so features and few-shot
accuracies are identical too (the tolerance is zero, and it is what the tests assert).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from repalign.data.images import ArrayImageSet, FileImageSet, SubsetImageSet  # noqa: E402
from repalign.embed._pil_resample import resample_pass, resample_weights  # noqa: E402
from repalign.embed.arrays import array_batches, array_images, batched_transform, plan_for  # noqa: E402

PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def _resize_two_passes(image: np.ndarray, out_h: int, out_w: int, filter_name: str, kind: str) -> np.ndarray:
    """Both passes on torch tensors, or on numpy arrays (what numpy models such as TFLite use)."""
    h, w = image.shape[:2]
    x = np.transpose(image, (2, 0, 1)).astype(np.float64)
    as_weights = torch.tensor if kind == "torch" else np.asarray
    x = torch.from_numpy(x) if kind == "torch" else x
    if out_w != w:
        x = resample_pass(x, as_weights(resample_weights(w, out_w, filter_name)), axis=-1)
    if out_h != h:
        x = resample_pass(x, as_weights(resample_weights(h, out_h, filter_name)), axis=-2)
    return np.transpose(np.asarray(x), (1, 2, 0)).astype(np.uint8)


@pytest.mark.parametrize("filter_name", list(PIL_FILTERS))
@pytest.mark.parametrize(
    "size_in, size_out",
    [
        ((28, 28), (235, 235)),  # MNIST to a timm crop_pct 0.95 model
        ((32, 32), (256, 256)),  # CIFAR
        ((17, 40), (90, 23)),  # width shrinks, height grows
        ((40, 33), (12, 33)),  # height shrinks alone
        ((21, 57), (21, 8)),  # width shrinks alone
        ((5, 7), (300, 11)),
    ],
)
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_two_matrix_passes_equal_pillow_resize(filter_name, size_in, size_out, kind, rng):
    image = rng.integers(0, 256, (*size_in, 3), dtype=np.uint8)
    image[: size_in[0] // 2] = np.where(image[: size_in[0] // 2] > 127, 255, 0)  # hard edges: overshoot is clipped
    expected = np.asarray(Image.fromarray(image).resize(size_out[::-1], PIL_FILTERS[filter_name]))
    np.testing.assert_array_equal(_resize_two_passes(image, *size_out, filter_name, kind), expected)


def _timm(**config):
    from timm.data import create_transform

    return create_transform(input_size=(3, 224, 224), is_training=False, **config)


TRANSFORMS = {
    "timm bicubic 0.95": lambda: _timm(interpolation="bicubic", crop_pct=0.95, mean=(0.48, 0.46, 0.41)),
    "timm bilinear 0.875": lambda: _timm(interpolation="bilinear", crop_pct=0.875),
    "cifar resnet": lambda: T.Compose(
        [
            T.Resize((32, 32), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize((0.5,) * 3, (0.25,) * 3),
        ]
    ),
    "torchvision preset": lambda: __import__("torchvision").models.ResNet18_Weights.IMAGENET1K_V1.transforms(),
    "exact size, no normalisation": lambda: T.Compose(
        [T.Resize((48, 40), interpolation=T.InterpolationMode.LANCZOS), T.ToTensor()]
    ),
}


def _image_sets(rng):
    gray = ArrayImageSet(rng.integers(0, 256, (23, 28, 28), dtype=np.uint8), name="gray")
    rgb = ArrayImageSet(rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), name="rgb")
    wide = ArrayImageSet(rng.integers(0, 256, (5, 20, 36, 3), dtype=np.uint8), name="wide")
    return [SubsetImageSet(SubsetImageSet(gray, [3, 1, 4, 1, 5, 9, 2, 6, 22]), [8, 0, 2, 2]), rgb, wide]


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_batched_inputs_equal_the_per_image_transform(name, rng, one_torch_thread):
    transform = TRANSFORMS[name]()
    for images in _image_sets(rng):
        plan = plan_for(transform, images)
        assert plan is not None, (name, images.name)
        expected = torch.stack([transform(images.load(i)) for i in range(len(images))])
        batched = torch.cat(list(array_batches(*plan, images, 4, "cpu")))
        assert batched.dtype == expected.dtype and batched.shape == expected.shape
        assert torch.equal(batched, expected), (name, images.name)


def test_real_mnist_digits_equal_the_per_image_transform(mirror, one_torch_thread):
    from repalign.data.fewshot_datasets import load_fewshot_dataset

    images = SubsetImageSet(load_fewshot_dataset("mnist").images, np.arange(0, 10_000, 97))
    transform = TRANSFORMS["timm bicubic 0.95"]()
    expected = torch.stack([transform(images.load(i)) for i in range(len(images))])
    assert torch.equal(torch.cat(list(array_batches(*plan_for(transform, images), images, 32, "cpu"))), expected)


@pytest.mark.parametrize(
    "transform",
    [
        T.Compose([T.RandomResizedCrop(224), T.ToTensor()]),  # a random step
        T.Compose([T.Resize(64, interpolation=T.InterpolationMode.NEAREST), T.ToTensor()]),  # no weights
        T.Compose([T.Resize(64, max_size=80), T.ToTensor()]),
        T.Compose([T.Resize(64), T.CenterCrop(32)]),  # never becomes a tensor
        T.Compose([T.ToTensor(), T.Resize(64)]),  # resized as a tensor: torch's arithmetic, not Pillow's
        T.Compose([T.Resize(64), T.ToTensor(), T.Normalize((0.5,), (0.5,)), T.Lambda(lambda x: x)]),
        lambda image: image,
    ],
)
def test_transforms_it_cannot_reproduce_take_the_per_image_path(transform, rng):
    images = ArrayImageSet(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    assert batched_transform(transform) is None
    assert plan_for(transform, images) is None


def test_geometries_pillow_may_order_differently_take_the_per_image_path(rng):
    images = ArrayImageSet(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    assert plan_for(T.Compose([T.Resize(16), T.ToTensor()]), images) is None  # both edges shrink
    assert plan_for(T.Compose([T.Resize((20, 40)), T.ToTensor()]), images) is None  # height shrinks, width grows
    assert plan_for(T.Compose([T.Resize(20), T.CenterCrop(24), T.ToTensor()]), images) is None  # the crop pads
    assert plan_for(T.Compose([T.Resize((20, 28)), T.ToTensor()]), images) is not None  # the height alone


def test_file_image_sets_are_not_array_sets(tmp_path, rng):
    path = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    files = FileImageSet([path])
    assert array_images(files) is None and array_images(SubsetImageSet(files, [0])) is None
    assert plan_for(TRANSFORMS["timm bilinear 0.875"](), files) is None


@pytest.mark.parametrize("model", ["cifar_resnet:resnet20", "timm:resnet18@random"])
def test_features_and_fewshot_accuracy_equal_the_per_image_path(model, mirror, one_torch_thread):
    """The whole extraction on real MNIST digits: the same features, hence the same few-shot accuracy."""
    from repalign.data.fewshot_datasets import load_fewshot_dataset
    from repalign.embed import extract_embeddings
    from repalign.fewshot import evaluate_fewshot, make_splits

    data = load_fewshot_dataset("mnist")
    splits = make_splits(data.labels, shots=[2], seeds=2, max_eval_per_class=3, dataset=data.name)
    used = splits.used_indices()
    images = SubsetImageSet(data.images, used)
    options = {"cache": False, "batch_size": 16, "num_workers": 0}
    batched = extract_embeddings(model, images, batched_arrays=True, **options)
    reference = extract_embeddings(model, images, batched_arrays=False, **options)
    np.testing.assert_array_equal(batched, reference)
    scores = [
        evaluate_fewshot(x, data.labels, heads="linear", splits=splits, feature_indices=used, dataset=data.name)
        for x in (batched, reference)
    ]
    np.testing.assert_array_equal(scores[0]["value"].to_numpy(), scores[1]["value"].to_numpy())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inputs_prepared_on_cuda_equal_the_per_image_transform(rng):
    """float64 products on the GPU are exact too (integers below 2**53), and the elementwise
    float32 steps are IEEE there: the inputs must be the same bits as the CPU reference."""
    images = _image_sets(rng)[0]
    for name in ("timm bicubic 0.95", "cifar resnet"):
        transform = TRANSFORMS[name]()
        expected = torch.stack([transform(images.load(i)) for i in range(len(images))])
        batches = list(array_batches(*plan_for(transform, images), images, 4, "cuda"))
        assert all(b.device.type == "cuda" for b in batches)
        assert torch.equal(torch.cat(batches).cpu(), expected), name
