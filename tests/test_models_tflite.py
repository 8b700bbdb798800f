"""The mirror's TFLite models: real ImageNet classifications, the penultimate tensor found
from the graph, quantized preprocessing, batching."""

from __future__ import annotations

import numpy as np
import pytest

from repalign.errors import InputError, UnknownNameError
from repalign.models import PENULTIMATE, describe_model, load_model

pytestmark = pytest.mark.integration

CLASSIFIERS = {  # name -> penultimate width (1024 * depth multiplier; 1280 for v2)
    "mobilenet_v1_0.25_128_quant": 256,
    "mobilenet_v1_0.5_160_quant": 512,
    "mobilenet_v1_0.75_192_quant": 768,
    "mobilenet_v2_1.0_224_quant": 1280,
    "tf2_mobilenet_v2_1.0_224_ptq": 1280,
}
EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor"
#: test image -> ImageNet labels (imagenet_labels.txt) any of which is a right answer
EXPECTED = {
    "cat.bmp": {"tiger cat", "Egyptian cat", "tabby, tabby cat"},
    "bird.bmp": {"chickadee"},
    "hot_dog.jpg": {"hotdog, hot dog, red hot"},
    "dragonfly.bmp": {
        "dragonfly, darning needle, devil's darning needle, sewing needle, snake feeder, "
        "snake doctor, mosquito hawk, skeeter hawk"
    },
    "grace_hopper.bmp": {"military uniform", "mortarboard", "academic gown, academic robe, judge's robe"},
}


@pytest.fixture(scope="module")
def coral(mirror):
    from repalign.data import fetch_file
    from repalign.data.images import decode_image

    labels = fetch_file("coral-tflite", "imagenet_labels.txt").read_text().splitlines()
    images = {name: decode_image(fetch_file("coral-tflite", f"test_images/{name}")) for name in EXPECTED}
    return labels, images


def _classify(name, images):
    handle = load_model(f"tflite:{name}")
    batch = np.stack([handle.transform(img) for img in images.values()])
    return handle, batch, handle.forward(batch, layers=[PENULTIMATE, "logits"])


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifiers_put_the_test_images_in_the_right_imagenet_class(coral, name):
    labels, images = coral
    handle, batch, out = _classify(name, images)
    assert len(labels) == out["logits"].shape[1] == 1001  # index 0 = background
    top1 = {img: labels[int(np.argmax(row))] for img, row in zip(images, out["logits"], strict=True)}
    top5 = {img: {labels[i] for i in np.argsort(-row)[:5]} for img, row in zip(images, out["logits"], strict=True)}
    # every model: the cat is a cat and the bird a chickadee, top-1
    assert top1["cat.bmp"] in EXPECTED["cat.bmp"] and top1["bird.bmp"] == "chickadee"
    if name != "mobilenet_v1_0.25_128_quant":  # the 0.25-width model is too weak for the rest
        assert all(top5[img] & EXPECTED[img] for img in EXPECTED), top5
        assert top1["hot_dog.jpg"] in EXPECTED["hot_dog.jpg"]
    assert out[PENULTIMATE].shape == (5, CLASSIFIERS[name]) and out[PENULTIMATE].dtype == np.float32


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_penultimate_is_the_global_pool_feeding_the_classifier(coral, name):
    _, images = coral
    handle = load_model(f"tflite:{name}")
    assert handle.has_classifier and handle.penultimate_dim == CLASSIFIERS[name]
    pool_name = next(n for n, i in handle._tensors.items() if i == handle.penultimate_index)
    assert "AvgPool" in pool_name or "GlobalPool" in pool_name
    batch = np.stack([handle.transform(img) for img in images.values()])
    out = handle.forward(batch, layers=[PENULTIMATE, pool_name])
    np.testing.assert_array_equal(out[PENULTIMATE], out[pool_name])
    assert (out[PENULTIMATE] >= 0).all()  # after ReLU6: non-negative activations, dequantized
    assert not np.allclose(out[PENULTIMATE][0], out[PENULTIMATE][1])


def test_embedding_extractor_gives_its_output_and_batches(coral):
    _, images = coral
    handle = load_model(f"tflite:{EXTRACTOR}")
    assert not handle.has_classifier and handle.available_layers()[0] == PENULTIMATE
    assert "logits" not in handle.available_layers()
    batch = np.stack([handle.transform(img) for img in images.values()])
    together = handle.forward(batch)[PENULTIMATE]
    one_by_one = np.concatenate([handle.forward(batch[i : i + 1])[PENULTIMATE] for i in range(len(batch))])
    assert together.shape == (5, 1024)
    np.testing.assert_array_equal(together, one_by_one)
    with pytest.raises(UnknownNameError, match=f"Unknown layer 'logits' of tflite:{EXTRACTOR}. Valid: penultimate"):
        handle.forward(batch, layers=["logits"])


def test_classifier_batches_one_image_at_a_time_with_the_same_values(coral):
    _, images = coral
    handle, batch, out = _classify("mobilenet_v1_0.5_160_quant", images)
    single = handle.forward(batch[2:3])[PENULTIMATE]
    np.testing.assert_array_equal(single[0], out[PENULTIMATE][2])


def test_preprocessing_follows_the_input_quantization(coral):
    from PIL import Image

    handle = load_model("tflite:tf2_mobilenet_v2_1.0_224_ptq")
    config = handle.preprocess_config
    scale, zero_point = config["input_scale"], config["input_zero_point"]
    assert (config["resize"], config["crop"], config["input_dtype"]) == ([224, 224], "none", "uint8")
    gray = handle.transform(Image.new("RGB", (50, 80), (200, 200, 200)))
    expected = np.clip(np.round(((200 - 128) / 128) / scale + zero_point), 0, 255)
    assert gray.shape == (224, 224, 3) and gray.dtype == np.uint8 and (gray == expected).all()
    # Coral's v1 models: the quantized input is the raw pixel
    v1 = load_model("tflite:mobilenet_v1_0.5_160_quant")
    assert (v1.transform(Image.new("RGB", (10, 10), (7, 100, 250))) == [7, 100, 250]).all()


@pytest.mark.parametrize("name", [*CLASSIFIERS, EXTRACTOR])
def test_describe_matches_the_loaded_handle(name):
    handle = load_model(f"tflite:{name}")
    described = describe_model(f"tflite:{name}")
    assert described["identity"] == handle.identity and described["preprocess_config"] == handle.preprocess_config
    assert handle.identity["weights"].startswith("file-sha256:") and handle.uses_torch is False


def test_bad_inputs():
    handle = load_model(f"tflite:{EXTRACTOR}", num_threads=1)
    with pytest.raises(InputError, match=r"expects a batch of shape \(b, 224, 224, 3\)"):
        handle.forward(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(InputError, match="no separate weights file"):
        load_model(f"tflite:{EXTRACTOR}", weights="x.pt")
    import pickle

    assert pickle.loads(pickle.dumps(handle.transform)) == handle.transform


def printed_in_a_fresh_process(code: str) -> str:
    """What ``code`` prints, run by a new Python (so ``sys.modules`` shows what it imported)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_tflite_models_run_without_torch():
    code = (
        "import sys, numpy as np; from repalign.models import load_model;"
        "h = load_model('tflite:mobilenet_v1_0.25_128_quant');"
        "out = h.forward(np.zeros((1, 128, 128, 3), np.uint8));"
        "print(out['penultimate'].shape, 'torch' in sys.modules)"
    )
    assert printed_in_a_fresh_process(code) == "(1, 256) False"


def test_embedding_extractor_aligns_with_human_similarity_as_measured_independently(mirror):
    """Peterson animals, cosine similarity of the extractor's features vs the human ratings:
    Spearman about 0.5 (an independent measurement gave 0.52); shuffled stimuli give ~0."""
    from scipy.stats import spearmanr

    from repalign.data.human import load_human

    human = load_human("peterson:animals")[0]
    images = human.images()
    handle = load_model(f"tflite:{EXTRACTOR}")
    features = handle.forward(np.stack([handle.transform(images.load(i)) for i in range(len(images))]))[PENULTIMATE]
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    upper = np.triu_indices(len(unit), 1)
    rho = spearmanr((unit @ unit.T)[upper], human.similarity[upper]).statistic
    assert 0.48 < rho < 0.56
    order = np.random.default_rng(0).permutation(len(unit))
    shuffled = spearmanr((unit[order] @ unit[order].T)[upper], human.similarity[upper]).statistic
    assert abs(shuffled) < 0.1


def test_compute_threads_gives_the_same_values_and_restores(coral):
    _, images = coral
    handle = load_model(f"tflite:{EXTRACTOR}", num_threads=2)
    batch = np.stack([handle.transform(img) for img in images.values()])
    with handle.compute_threads(1) as same:
        assert same is handle and handle.num_threads == 1
        one = handle.forward(batch)[PENULTIMATE]
    assert handle.num_threads == 2
    np.testing.assert_array_equal(one, handle.forward(batch)[PENULTIMATE])
    with pytest.raises(InputError, match="num_threads must be an integer >= 1; got 0"), handle.compute_threads(0):
        pass


def test_transform_matches_the_float_quantization_formula(coral):
    """The lookup-table transform against the formula applied pixel by pixel (an RGBA-derived
    photo and a gray image, for the identity-table and the general-table models)."""
    from PIL import Image

    _, images = coral
    for name in ("tf2_mobilenet_v2_1.0_224_ptq", EXTRACTOR):
        handle = load_model(f"tflite:{name}")
        config = handle.preprocess_config
        for img in [images["cat.bmp"], Image.new("L", (40, 30), 77)]:
            resized = img.convert("RGB").resize(tuple(config["resize"][::-1]), Image.Resampling.LANCZOS)
            value = (np.asarray(resized, np.float32) - 128.0) / 128.0
            expected = np.clip(np.round(value / config["input_scale"] + config["input_zero_point"]), 0, 255)
            got = handle.transform(img)
            assert got.dtype == np.uint8 and got.shape == (*config["resize"], 3)
            np.testing.assert_array_equal(got, expected.astype(np.uint8))


def test_engine_default_loader_gives_the_direct_forward_and_alignment(mirror, monkeypatch):
    """extract_embeddings' default path for TFLite on 2 cores (prefetch thread, 1 interpreter
    thread) equals one direct forward pass, so the Peterson alignment stays 0.5237."""
    from scipy.stats import spearmanr

    from repalign.data.human import load_human
    from repalign.embed import engine as embed

    monkeypatch.setattr(embed, "usable_cpus", lambda: 2)
    human = load_human("peterson:animals")[0]
    images = human.images()
    handle = load_model(f"tflite:{EXTRACTOR}", num_threads=2)
    assert embed._use_thread_pipeline(handle, len(images), handle.default_batch_size)
    got = embed.extract_embeddings(handle, images, cache=False)
    direct = handle.forward(np.stack([handle.transform(images.load(i)) for i in range(len(images))]))[PENULTIMATE]
    np.testing.assert_array_equal(got, direct)
    unit = got / np.linalg.norm(got, axis=1, keepdims=True)
    upper = np.triu_indices(len(unit), 1)
    assert round(spearmanr((unit @ unit.T)[upper], human.similarity[upper]).statistic, 4) == 0.5237


@pytest.fixture(scope="module")
def array_sets(mirror):
    """Real MNIST test digits (grayscale), CIFAR-sized random RGB images, and two geometries
    that resize one side down: only the width, and the width down while the height grows."""
    from repalign.data.fewshot_datasets import load_fewshot_dataset
    from repalign.data.images import ArrayImageSet, SubsetImageSet

    rng = np.random.default_rng(0)
    digits = SubsetImageSet(load_fewshot_dataset("mnist").images, np.arange(0, 10_000, 997))
    rgb = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = np.where(rgb[:, :16] > 127, 255, 0)  # hard edges: Lanczos overshoot is clipped
    return {
        "mnist": digits,
        "rgb": ArrayImageSet(rgb, name="rgb"),
        "narrower": lambda h: ArrayImageSet(rng.integers(0, 256, (3, h, h + 37, 3), dtype=np.uint8), name="narrower"),
        "taller": lambda h: ArrayImageSet(rng.integers(0, 256, (3, h // 2, h + 37), dtype=np.uint8), name="taller"),
    }


@pytest.mark.parametrize("name", [*CLASSIFIERS, EXTRACTOR])
def test_batched_array_inputs_equal_the_per_image_transform(name, array_sets):
    """repalign.embed.arrays prepares TFLite inputs in batches; the oracle is the model's own
    transform (Pillow's Lanczos resize, then the input table) image by image: equal exactly."""
    from repalign.embed.arrays import BatchedPixels, array_batches, plan_for

    handle = load_model(f"tflite:{name}")
    height = handle.preprocess_config["resize"][0]
    sets = [array_sets["mnist"], array_sets["rgb"], array_sets["narrower"](height), array_sets["taller"](height)]
    for images in sets:
        plan = plan_for(handle.transform, images)
        assert plan is not None and isinstance(plan[0], BatchedPixels), images.name
        got = np.concatenate(list(array_batches(*plan, images, 4, "cpu")))
        expected = np.stack([handle.transform(images.load(i)) for i in range(len(images))])
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected), images.name


def test_geometries_pillow_may_order_differently_take_the_per_image_path(rng):
    """Shrinking the height while the width is resized too (Pillow may run its vertical pass
    first): no batch plan, and the engine's per-image path runs instead."""
    from repalign.data.images import ArrayImageSet
    from repalign.embed.arrays import batched_transform, plan_for

    handle = load_model("tflite:mobilenet_v1_0.25_128_quant")
    assert batched_transform(handle.transform) is not None
    assert plan_for(handle.transform, ArrayImageSet(rng.integers(0, 256, (2, 150, 140), dtype=np.uint8))) is None
    assert plan_for(handle.transform, ArrayImageSet(rng.integers(0, 256, (2, 150, 128), dtype=np.uint8))) is not None


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_128_quant", EXTRACTOR])
def test_batched_array_extraction_equals_the_per_image_path(name, array_sets, caplog):
    """Features through the batched inputs equal the per-image path's exactly, for a graph that
    batches (the extractor) and one that runs image by image (the classifiers)."""
    import logging

    from repalign.embed import extract_embeddings

    images = array_sets["mnist"]
    with caplog.at_level(logging.INFO, logger="repalign.embed.engine"):
        batched = extract_embeddings(f"tflite:{name}", images, cache=False, input_cache=False, batch_size=4)
    assert "preprocessed in batches" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="repalign.embed.engine"):
        reference = extract_embeddings(
            f"tflite:{name}", images, cache=False, input_cache=False, batch_size=4, batched_arrays=False
        )
    assert "preprocessed in batches" not in caplog.text
    assert batched.dtype == reference.dtype and np.array_equal(batched, reference)


def test_batched_array_inputs_need_no_torch():
    code = (
        "import sys, numpy as np; from repalign.models import load_model;"
        "from repalign.data.images import ArrayImageSet; from repalign.embed.arrays import array_batches, plan_for;"
        "h = load_model('tflite:mobilenet_v1_0.25_128_quant');"
        "s = ArrayImageSet(np.zeros((3, 28, 28), np.uint8));"
        "x = np.concatenate(list(array_batches(*plan_for(h.transform, s), s, 2, 'cpu')));"
        "print(x.shape, 'torch' in sys.modules)"
    )
    assert printed_in_a_fresh_process(code) == "(3, 128, 128, 3) False"
