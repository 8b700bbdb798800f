"""Bring your own (docs/own-data.md) on the mirror's real data: the embeddings file round trips
(``embed --out`` -> ``align/fewshot --embeddings`` give exactly the values of ``align/fewshot
MODEL``), ``--weights`` on align and fewshot, an in-memory module through ``wrap_model``
(identity from its weights), and a human dataset from one matrix file."""

from __future__ import annotations

import copy
import gzip
import json

import numpy as np
import pytest

from cli_capture import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

R20_CHECKPOINT = "weights/cifar10_resnet/resnet20-12fca82f.th"


def ok(*argv) -> list[dict]:
    result = run_cli([*argv, "--format", "json"])
    assert result.code == 0, result.err
    return json.loads(result.out)


def fails(*argv) -> str:
    result = run_cli(list(argv))
    assert result.code == 2, result.err
    assert len(result.err_lines) == 1 and result.err.startswith("repalign: error: "), result.err
    return result.err


def _write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_small(mirror, tmp_path_factory):
    """The first 10 test images of each MNIST class, as a dataset folder of IDX files."""
    from repalign.data.fewshot_datasets import load_fewshot_dataset

    data = load_fewshot_dataset("mnist")
    rows = np.sort(np.concatenate([np.flatnonzero(data.labels == c)[:10] for c in range(10)]))
    folder = tmp_path_factory.mktemp("byo") / "mnist_small"
    folder.mkdir()
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", data.images.images[rows])
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", data.labels[rows])
    return folder


@pytest.fixture(scope="module")
def animals(mirror):
    from repalign.data.human import load_human

    (dataset,) = load_human("peterson:animals")
    return dataset


# ----------------------------------------------------------------------- embed --out round trips


@pytest.mark.parametrize(
    "model", ["pixels", "cifar_resnet:resnet20", pytest.param("timm:resnet18@random", marks=pytest.mark.slow)]
)
def test_embed_out_then_align_embeddings_equals_align_model(tmp_path, mirror, model):
    out = tmp_path / "animals.npz"
    # --no-cache: the file's rows are extracted afresh, not read back from what align MODEL stores
    ok("embed", model, "--dataset", "peterson:animals", "--out", out, "--no-cache")
    from_file = ok("align", "--embeddings", out, "--human", "peterson:animals")
    direct = ok("align", model, "--human", "peterson:animals")
    assert from_file == direct  # every record, CIs included, model and model_id from the file
    assert {r["metric"] for r in direct} == {"pearson", "spearman", "triplet"}


@pytest.mark.parametrize(
    "model, heads",
    [("pixels:8", "linear,mlp1"), pytest.param("cifar_resnet:resnet20", "linear", marks=pytest.mark.slow)],
)
def test_embed_out_then_fewshot_embeddings_equals_fewshot_model(tmp_path, mnist_small, model, heads):
    out = tmp_path / "mnist.npz"
    ok("embed", model, "--dataset", mnist_small, "--out", out, "--no-cache")
    grid = ("--shots", "1,5", "--n-seeds", "2", "--heads", heads)
    from_file = ok("fewshot", "--embeddings", out, *grid)
    direct = ok("fewshot", model, "--dataset", mnist_small, *grid)
    assert from_file == direct
    assert len(direct) == 2 * len(heads.split(",")) and {r["dataset"] for r in direct} == {"mnist_small"}
    # the dataset named beside the file: its labels are checked against the file's, same values
    assert ok("fewshot", "--embeddings", out, "--dataset", mnist_small, *grid) == direct
    # the same splits saved from the file and reused by the direct command
    splits = tmp_path / "splits.json"
    ok("fewshot", "--embeddings", out, *grid, "--save-splits", splits)
    assert ok("fewshot", model, "--dataset", mnist_small, "--heads", heads, "--splits", splits) == direct


def test_fewshot_embeddings_of_a_bare_array_take_the_dataset_labels(tmp_path, mnist_small):
    from repalign.embed import read_embeddings_file

    ok("embed", "pixels:8", "--dataset", mnist_small, "--out", tmp_path / "px.npz")
    file = read_embeddings_file(tmp_path / "px.npz")
    np.save(tmp_path / "px.npy", file.embeddings)
    grid = ("--shots", "2", "--n-seeds", "2", "--heads", "linear")
    direct = ok("fewshot", "pixels:8", "--dataset", mnist_small, *grid)
    bare = ok("fewshot", "--embeddings", tmp_path / "px.npy", "--dataset", mnist_small, *grid)
    # a bare array names neither its model nor its layer
    assert bare == [{k: v for k, v in row.items() if k not in ("model", "model_id", "layer")} for row in direct]

    assert "px.npy has no 'labels' array" in fails("fewshot", "--embeddings", tmp_path / "px.npy", *grid)
    np.save(tmp_path / "short.npy", file.embeddings[:50])
    err = fails("fewshot", "--embeddings", tmp_path / "short.npy", "--dataset", mnist_small)
    assert "has 50 rows but mnist_small (test) has 100 examples" in err
    np.savez(tmp_path / "shuffled.npz", embeddings=file.embeddings, labels=file.labels[::-1].copy())
    err = fails("fewshot", "--embeddings", tmp_path / "shuffled.npz", "--dataset", mnist_small)
    assert "its labels differ from those of mnist_small" in err
    assert "exactly one of them" in fails("fewshot", "pixels", "--embeddings", tmp_path / "px.npz")
    assert "MODEL needs --dataset" in fails("fewshot", "pixels")
    assert "apply to MODEL only" in fails("fewshot", "--embeddings", tmp_path / "px.npz", "--weights", "w.pt")


def test_several_layers_in_one_file_are_named_on_reading(tmp_path, mirror, animals):
    from repalign.embed import extract_embeddings, read_embeddings_file

    out = tmp_path / "layers.npz"
    ok("embed", "cifar_resnet:resnet20", "--dataset", "peterson:animals", "--layer", "penultimate")
    ok(
        "embed",
        "cifar_resnet:resnet20",
        "--dataset",
        "peterson:animals",
        "--layer",
        "penultimate",
        "--layer",
        "logits",
        "--out",
        out,
    )
    logits = read_embeddings_file(out, layer="logits")
    assert logits.layers == ("penultimate", "logits") and logits.stimuli == animals.stimuli
    np.testing.assert_array_equal(
        logits.embeddings, extract_embeddings("cifar_resnet:resnet20", animals.images(), layer="logits")
    )
    assert "holds 2 layers ('penultimate', 'logits')" in fails(
        "align", "--embeddings", out, "--human", "peterson:animals"
    )
    # --layer picks the file's layers to score: the records of `align MODEL --layer`, layer by layer
    grid = (
        "--human",
        "peterson:animals",
        "--metrics",
        "pearson",
        "--n-bootstrap",
        "0",
        "--layer",
        "logits,penultimate",
    )
    from_file = ok("align", "--embeddings", out, *grid)
    assert from_file == ok("align", "cifar_resnet:resnet20", *grid)
    assert [r["layer"] for r in from_file] == ["logits", "penultimate"]


# -------------------------------------------------------------------------------- --weights


def _perturbed_resnet20(mirror, path):
    """A resnet20 whose first convolution differs from the mirror's checkpoint, saved to ``path``."""
    import torch

    from repalign.models.cifar_resnet import build_network, load_checkpoint

    module = build_network(3)
    load_checkpoint(module, mirror / R20_CHECKPOINT)
    with torch.no_grad():
        module.conv1.weight.mul_(1.5)
    torch.save(module.state_dict(), path)
    return module


@pytest.mark.slow
def test_weights_on_align_and_fewshot(tmp_path, mirror, mnist_small, animals):
    from repalign.embed import extract_embeddings, read_embeddings_file
    from repalign.models import load_model, wrap_model

    weights = tmp_path / "r20_perturbed.pt"
    module = _perturbed_resnet20(mirror, weights)
    model = "cifar_resnet:resnet20"
    ok("embed", model, "--dataset", "peterson:animals", "--weights", weights, "--out", tmp_path / "w.npz", "--no-cache")
    # oracle: the same module in memory, its transform the built-in model's
    handle = wrap_model(
        module, transform=load_model(model, device="cpu").transform, name="r20", classifier="linear", device="cpu"
    )
    np.testing.assert_array_equal(
        read_embeddings_file(tmp_path / "w.npz").embeddings, extract_embeddings(handle, animals.images())
    )
    with_weights = ok("align", model, "--human", "peterson:animals", "--weights", weights)
    assert with_weights == ok("align", "--embeddings", tmp_path / "w.npz", "--human", "peterson:animals")
    assert with_weights != ok("align", model, "--human", "peterson:animals")  # the weights were used

    grid = ("--dataset", mnist_small, "--shots", "1", "--n-seeds", "2", "--heads", "linear")
    assert ok("fewshot", model, *grid, "--weights", weights) != ok("fewshot", model, *grid)
    err = fails("align", "--embeddings", tmp_path / "w.npz", "--human", "peterson:animals", "--weights", weights)
    assert "--weights applies to MODEL only" in err
    assert "not found" in fails("align", model, "--human", "peterson:animals", "--weights", tmp_path / "absent.pt")


# ------------------------------------------------------------------------------- wrap_model


@pytest.mark.slow
def test_wrap_model_gives_the_named_models_features_and_caches_by_weights(mirror, animals):
    import torch

    from repalign.embed import extract_embeddings, is_cached
    from repalign.errors import InputError
    from repalign.models import load_model, state_dict_sha256, wrap_model
    from repalign.models.cifar_resnet import build_network, load_checkpoint

    transform = load_model("cifar_resnet:resnet20", device="cpu").transform
    images = animals.images()

    def fresh():
        module = build_network(3)
        load_checkpoint(module, mirror / R20_CHECKPOINT)
        return module

    module = fresh()
    handle = wrap_model(module, transform=transform, name="my-r20", classifier="linear", device="cpu")
    assert handle.identity["resolved_id"] == "module:my-r20"
    features = extract_embeddings(handle, images)
    np.testing.assert_array_equal(features, extract_embeddings("cifar_resnet:resnet20", images, cache=False))

    # a new module object with the same weights finds the cache entry; any change misses it
    again = wrap_model(fresh(), transform=transform, name="my-r20", classifier="linear", device="cpu")
    assert again.identity == handle.identity and is_cached(again, images)
    changed = fresh()
    with torch.no_grad():
        changed.bn1.running_mean[0] += 1e-3  # a buffer, not a parameter: the features change all the same
    assert state_dict_sha256(changed) != state_dict_sha256(module)
    assert not is_cached(wrap_model(changed, transform=transform, name="my-r20", classifier="linear"), images)
    assert state_dict_sha256(copy.deepcopy(module)) == state_dict_sha256(module)
    # the module's output as features: the logits of the named model
    whole = wrap_model(fresh(), transform=transform, name="my-r20-logits", device="cpu")
    np.testing.assert_allclose(
        extract_embeddings(whole, images),
        extract_embeddings("cifar_resnet:resnet20", images, layer="logits"),
        rtol=0,
        atol=1e-6,
    )

    with pytest.raises(InputError, match="takes a torch.nn.Module"):
        wrap_model("resnet", transform=transform, name="x")
    with pytest.raises(InputError, match="'fc' is not a submodule"):
        wrap_model(module, transform=transform, name="x", classifier="fc")
    with pytest.raises(InputError, match="one-line name"):
        wrap_model(module, transform=transform, name="")
    with pytest.raises(InputError, match="wrap an in-memory torch module with repalign.wrap_model"):
        load_model(module)


def test_wrap_model_on_a_small_module(rng):
    """A tiny network on a few generated images: the features are the module's own output
    (brute force, image by image), and the cache follows the weights."""
    import torch
    from torchvision import transforms

    from repalign.data.images import ArrayImageSet
    from repalign.embed import extract_embeddings, is_cached
    from repalign.models import state_dict_sha256, wrap_model

    images = ArrayImageSet(rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8), name="tiny")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    transform = transforms.ToTensor()
    handle = wrap_model(net, transform=transform, name="tiny-mlp", classifier="3", device="cpu")
    features = extract_embeddings(handle, images, num_workers=0, batch_size=4)
    with torch.no_grad():
        expected = [net[:3](transform(images.load(i)).unsqueeze(0))[0].numpy() for i in range(len(images))]
    np.testing.assert_allclose(features, np.stack(expected), rtol=1e-6, atol=1e-6)
    assert features.shape == (6, 5) and is_cached(handle, images)

    twin = copy.deepcopy(net)
    assert state_dict_sha256(twin) == state_dict_sha256(net)
    assert is_cached(wrap_model(twin, transform=transform, name="tiny-mlp", classifier="3"), images)
    with torch.no_grad():
        twin[1].bias[0] += 1.0
    assert state_dict_sha256(twin) != state_dict_sha256(net)
    assert not is_cached(wrap_model(twin, transform=transform, name="tiny-mlp", classifier="3"), images)
    # the name is part of the identity too: another name is another model
    assert not is_cached(wrap_model(net, transform=transform, name="other", classifier="3"), images)


# --------------------------------------------------------------------- a human dataset, one file


def test_a_matrix_file_is_a_human_dataset(tmp_path, mirror, animals):
    import pandas as pd
    from scipy.spatial.distance import squareform

    from repalign.embed import write_embeddings_file

    rng = np.random.default_rng(0)
    emb = tmp_path / "emb.npz"
    write_embeddings_file(emb, rng.normal(size=(120, 8)).astype(np.float32), stimuli=animals.stimuli)
    metrics = ("--metrics", "pearson,spearman")  # the bootstrap of the exact triplet metric is the slow part
    reference = ok("align", "--embeddings", emb, "--human", "peterson:animals", *metrics)

    def values(records):
        return [(r["metric"], r["value"], r["ci_low"], r["ci_high"]) for r in records]

    S = np.array(animals.similarity)
    pd.DataFrame(S, index=animals.stimuli, columns=animals.stimuli).to_csv(tmp_path / "sim.csv", float_format="%.17g")
    from_csv = ok("align", "--embeddings", emb, "--human", tmp_path / "sim.csv", *metrics)
    assert values(from_csv) == values(reference) and from_csv[0]["dataset"] == "sim"

    # the condensed dissimilarities -S in pdist order, names in a file: negated back exactly
    condensed = squareform(-S, checks=False)
    (tmp_path / "names.txt").write_text("\n".join(animals.stimuli) + "\n")
    np.save(tmp_path / "rdm.npy", condensed)
    args = ("--human", tmp_path / "rdm.npy", "--human-names", tmp_path / "names.txt", "--dissimilarity", *metrics)
    assert values(ok("align", "--embeddings", emb, *args)) == values(reference)
    np.savez(tmp_path / "rdm.npz", rdm=condensed, stimuli=np.array(animals.stimuli))
    assert values(
        ok("align", "--embeddings", emb, "--human", tmp_path / "rdm.npz", "--dissimilarity", *metrics)
    ) == values(reference)

    np.save(tmp_path / "odd.npy", condensed[:-1])
    assert "7139 values is not n(n-1)/2" in fails(
        "align", "--embeddings", emb, "--human", tmp_path / "odd.npy", "--human-names", tmp_path / "names.txt"
    )
    assert "no stimulus names" in fails("align", "--embeddings", emb, "--human", tmp_path / "rdm.npy")
    (tmp_path / "other.txt").write_text("\n".join(reversed(animals.stimuli)) + "\n")
    err = fails("align", "--embeddings", emb, "--human", tmp_path / "rdm.npz", "--human-names", tmp_path / "other.txt")
    assert "the names file differs from the names in rdm.npz" in err
    err = fails("align", "--embeddings", emb, "--human", "peterson:animals", "--human-names", tmp_path / "names.txt")
    assert "apply to one matrix file" in err


# ------------------------------------------------------------------- paths in a study config


@pytest.mark.slow
def test_study_paths_resolve_against_the_config_file_and_weights_are_used(tmp_path, mirror, mnist_small, monkeypatch):
    import shutil

    import pandas as pd

    from repalign.errors import ConfigError
    from repalign.store import load_study
    from repalign.study.config import load_config
    from repalign.study.run import run_study

    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(mnist_small, project / "digits")
    _perturbed_resnet20(mirror, project / "r20.pt")
    rng = np.random.default_rng(0)
    sim = rng.random((5, 5))
    names = [f"s{i}" for i in range(5)]
    pd.DataFrame(sim + sim.T, index=names, columns=names).to_csv(project / "sim.csv")
    text = f"""
[study]
output = "{tmp_path / "out"}"
report = false
[models]
include = ["cifar_resnet:resnet20"]
weights = {{ "cifar_resnet:resnet20" = "r20.pt" }}
[alignment]
human = ["sim.csv"]
n_bootstrap = 0
[fewshot]
datasets = ["digits"]
shots = [1]
seeds = 2
heads = ["linear"]
[execution]
jobs = 1
"""
    (project / "study.toml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the paths are the config file's, not the working directory's
    config = load_config(project / "study.toml")
    assert config.models.weights == {"cifar_resnet:resnet20": str(project / "r20.pt")}
    assert config.alignment.human == (str(project / "sim.csv"),)
    assert config.fewshot.datasets == (str(project / "digits"),)
    assert load_config(project / "study.toml").to_toml() == config.to_toml()  # and it round-trips
    run_study(project / "study.toml", dry_run=True)

    outcome = run_study(project / "study.toml", live=False)
    rows = load_study(outcome.path).results
    fewshot = rows[rows.stage == "fewshot"].sort_values("shots")
    direct = ok(
        "fewshot", "cifar_resnet:resnet20", "--dataset", project / "digits", "--weights", project / "r20.pt",
        "--shots", "1", "--n-seeds", "2", "--heads", "linear",
    )  # fmt: skip
    assert fewshot.value.tolist() == [r["value"] for r in direct]
    # the matrix file loaded (it has no images, so alignment says so instead of failing)
    assert rows[rows.stage == "alignment"].status.tolist() == ["skipped"]

    # the dry run checks every path
    (project / "missing.toml").write_text(text.replace('"r20.pt"', '"absent.pt"'))
    with pytest.raises(
        ConfigError, match=r"models.weights: 'cifar_resnet:resnet20': weights file not found: .*absent\.pt"
    ):
        run_study(project / "missing.toml", dry_run=True)
    (project / "other.toml").write_text(text.replace('{ "cifar_resnet:resnet20"', '{ "cifar_resnet:resnet32"'))
    with pytest.raises(ConfigError, match="'cifar_resnet:resnet32' is not one of the study's models"):
        run_study(project / "other.toml", dry_run=True)
    (project / "nohuman.toml").write_text(text.replace('"sim.csv"', '"absent.csv"'))
    with pytest.raises(ConfigError, match=r"alignment.human: .*absent\.csv.*not found"):
        run_study(project / "nohuman.toml", dry_run=True)
    assert "not found" in fails("run", project / "missing.toml", "--dry-run")


@pytest.mark.parametrize(
    "weights, match",
    [
        ('"r20.pt"', r"models.weights \(line 4\): expected a table of model name"),
        ('{ "cifar_resnet:resnet20" = 3 }', "expected a table"),
        ('{ "resnt20" = "r20.pt" }', "'resnt20': Model name 'resnt20' has no source"),
    ],
)
def test_weights_in_a_config_are_checked(weights, match):
    from repalign.errors import ConfigError
    from repalign.study.config import parse_config

    text = f'[models]\ninclude = ["cifar_resnet:resnet20"]\n\nweights = {weights}\n'
    with pytest.raises(ConfigError, match=match):
        parse_config(text)


def test_weights_round_trip_through_toml(tmp_path):
    from repalign.study.config import load_config, parse_config

    (tmp_path / "r20.pt").write_bytes(b"")
    (tmp_path / "s.toml").write_text('[models]\ninclude = ["pixels"]\nweights = { "pixels" = "r20.pt" }\n')
    config = load_config(tmp_path / "s.toml")
    assert config.models.weights == {"pixels": str(tmp_path / "r20.pt")}
    assert parse_config(config.to_toml()) == config
    assert parse_config('[models]\ninclude = ["pixels"]\n').models.weights == {}
