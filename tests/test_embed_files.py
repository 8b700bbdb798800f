"""Precomputed embeddings files (.npy / .npz, never unpickled) and matching their rows to a
human dataset's stimuli, on tiny generated files and datasets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from repalign.data.human import HumanSimilarity
from repalign.embed import (
    NoMatchingStimuliError,
    load_embeddings_file,
    match_stimuli,
    read_embeddings_file,
    write_embeddings_file,
)
from repalign.errors import InputError, MissingDataError, UnknownNameError

STIMULI = ("animals/cat.png", "animals/dog.png", "animals/owl.png", "animals/fox.png")


@pytest.fixture
def toy():
    return HumanSimilarity("toy", STIMULI, similarity=np.eye(len(STIMULI)))


def features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)


# ------------------------------------------------------------------------------------ loading


def test_npy_and_npz_load_exactly_what_was_saved(tmp_path):
    x = features(4)
    np.save(tmp_path / "x.npy", x)
    names, loaded = load_embeddings_file(tmp_path / "x.npy")
    assert names is None and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, x)

    np.savez(tmp_path / "x.npz", embeddings=x, names=np.array(["b", "a", "c", "d"]), extra=np.zeros(3))
    names, loaded = load_embeddings_file(str(tmp_path / "x.npz"))  # a str path works too
    assert names == ("b", "a", "c", "d")
    np.testing.assert_array_equal(loaded, x)


class _Boom:
    """Unpickling this object would write a file: proof that the loader never unpickles."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_arrays_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "unpickled"
    with open(tmp_path / "evil.npy", "wb") as handle:
        np.save(handle, np.array([_Boom(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="without pickle"):
        load_embeddings_file(tmp_path / "evil.npy")
    assert not marker.exists()
    # a pickle under an .npy name is not read either
    (tmp_path / "raw.npy").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(InputError):
        load_embeddings_file(tmp_path / "raw.npy")
    assert not marker.exists()


def _write(tmp_path, name: str, **arrays) -> str:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, arrays["x"])
    else:
        with open(path, "wb") as handle:  # an open handle: np.savez would append .npz to other names
            np.savez(handle, **arrays)
    return path


@pytest.mark.parametrize(
    "name, arrays, error, match",
    [
        ("flat.npy", {"x": np.zeros(4)}, InputError, r"flat\.npy: embeddings must be 2-D .* got shape \(4,\)"),
        ("words.npy", {"x": np.array([["a", "b"]])}, InputError, "embeddings must be numbers; got dtype <U1"),
        ("empty.npz", {}, InputError, r"empty\.npz holds no embeddings; .*found: nothing"),
        ("words.npz", {"names": np.array(list("abcd"))}, InputError, r"holds no embeddings.*found: 'names'"),
        (
            "stimuli.npz",
            {"embeddings": features(4), "stimuli": np.arange(4)},
            InputError,
            "'stimuli' must hold strings",
        ),
        ("labels.npz", {"embeddings": features(4), "labels": np.zeros(3, int)}, InputError, "3 labels for 4"),
        (
            "flabels.npz",
            {"embeddings": features(4), "labels": np.zeros(4)},
            InputError,
            "'labels' must be a 1-D integer",
        ),
        ("meta.npz", {"embeddings": features(4), "model": np.arange(2)}, InputError, "'model' must be one string"),
        (
            "layers.npz",
            {"embeddings:a": features(4), "embeddings:b": features(4), "layers": np.array(["a", "b"])},
            InputError,
            r"holds 2 layers \('a', 'b'\); choose one",
        ),
        (
            "objects.npz",
            {"embeddings": features(4), "names": np.array(list("abcd"), dtype=object)},
            InputError,
            "without pickle",
        ),
        ("repeated.npz", {"embeddings": features(4), "names": np.array(list("aabc"))}, InputError, "names repeat"),
        ("count.npz", {"embeddings": features(4), "names": np.array(list("abc"))}, InputError, "3 names for 4"),
        ("zip.npy.npz", {"embeddings": features(4), "names": np.array(list("abcd"))}, None, None),
    ],
)
def test_malformed_files_are_one_line_input_errors(tmp_path, name, arrays, error, match):
    path = _write(tmp_path, name, **arrays)
    if error is None:  # the control: a well-formed file of the same shape loads
        assert load_embeddings_file(path)[0] == tuple("abcd")
        return
    with pytest.raises(error, match=match) as info:
        load_embeddings_file(path)
    assert "\n" not in str(info.value)


def test_wrong_kind_of_file(tmp_path):
    with pytest.raises(MissingDataError, match="Embeddings file not found"):
        load_embeddings_file(tmp_path / "absent.npy")
    (tmp_path / "emb.txt").write_text("1 2 3\n")
    with pytest.raises(InputError, match=r"must be an \.npy or \.npz file; got 'emb\.txt'"):
        load_embeddings_file(tmp_path / "emb.txt")
    (tmp_path / "corrupt.npy").write_bytes(b"not a numpy file")
    with pytest.raises(InputError, match="corrupt"):
        load_embeddings_file(tmp_path / "corrupt.npy")
    (tmp_path / "truncated.npz").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="truncated.npz"):
        load_embeddings_file(tmp_path / "truncated.npz")
    # np.load reads by content: the suffix and the content must agree
    np.savez(tmp_path / "archive.npz", embeddings=features(4), names=np.array(list("abcd")))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    with pytest.raises(InputError, match=r"archive\.npy is an \.npz archive"):
        load_embeddings_file(tmp_path / "archive.npy")
    np.save(tmp_path / "single.npy", features(4))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(InputError, match=r"single\.npz holds a single \.npy array"):
        load_embeddings_file(tmp_path / "single.npz")


# ----------------------------------------------------------------------------------- matching


def test_named_rows_come_back_in_stimulus_order(toy):
    x = features(4)
    order = np.array([2, 0, 3, 1])
    shuffled, names = x[order], [STIMULI[i] for i in order]
    before = shuffled.copy()
    np.testing.assert_array_equal(match_stimuli(shuffled, names, toy), x)
    np.testing.assert_array_equal(shuffled, before)  # the input is not reordered in place
    # rows of other datasets in the same file are ignored
    extra = np.concatenate([shuffled, features(2, seed=1)])
    np.testing.assert_array_equal(match_stimuli(extra, [*names, "fruits/fig.png", "fruits/kiwi.png"], toy), x)


def test_rows_match_by_file_stem_when_stems_are_unique(toy):
    x = features(4)
    stems = ["cat.jpg", "dog.jpg", "owl.jpg", "fox.jpg"]  # other folder and suffix, same stems
    np.testing.assert_array_equal(match_stimuli(x, stems, toy), x)
    # two rows with the same stem are ambiguous: no stem matching, so nothing matches
    with pytest.raises(NoMatchingStimuliError):
        match_stimuli(features(5), [*stems, "x/cat.png"], toy)


def test_unnamed_rows_must_be_one_per_stimulus(toy):
    x = features(4)
    np.testing.assert_array_equal(match_stimuli(x, None, toy), x)
    with pytest.raises(InputError, match="emb.npy has 3 rows but toy has 4 stimuli"):
        match_stimuli(features(3), None, toy, source="emb.npy")


def test_unmatched_stimuli(toy):
    x = features(4)
    # none named: its own type, so a caller scoring several datasets can skip this one
    with pytest.raises(NoMatchingStimuliError, match="4 of 4 stimuli of toy have no row") as info:
        match_stimuli(x, ["a", "b", "c", "d"], toy, source="f.npz")
    assert isinstance(info.value, InputError) and str(info.value).startswith("f.npz: ")
    # some named: always an error, never a skip
    with pytest.raises(InputError, match="1 of 4 stimuli of toy have no row .*e.g. animals/fox.png") as info:
        match_stimuli(x, [*STIMULI[:3], "zebra.png"], toy)
    assert not isinstance(info.value, NoMatchingStimuliError)


@pytest.mark.parametrize(
    "embeddings, names, match",
    [
        (np.zeros(4), None, "must be 2-D"),
        (features(4), list("abc"), "3 names for 4 embedding rows"),
        (features(4), list("abca"), "names repeat"),
        (np.array([list("abcde")] * 4), None, "must be numbers"),
    ],
)
def test_match_validates_its_inputs(toy, embeddings, names, match):
    with pytest.raises(InputError, match=match):
        match_stimuli(embeddings, names, toy)


# ------------------------------------------------------------------------------ the file format


def test_written_files_read_back_with_their_metadata(tmp_path):
    x = features(4)
    path = write_embeddings_file(
        tmp_path / "f.npz",
        {"penultimate": x},
        stimuli=STIMULI,
        model="pixels",
        model_id="pixels:64",
        dataset="toy",
    )
    file = read_embeddings_file(path)
    np.testing.assert_array_equal(file.embeddings, x)
    assert file.embeddings.dtype == np.float32
    assert (file.stimuli, file.labels, file.layer, file.layers) == (STIMULI, None, "penultimate", ("penultimate",))
    assert (file.model, file.model_id, file.dataset) == ("pixels", "pixels:64", "toy")
    assert read_embeddings_file(path, layer="penultimate").layer == "penultimate"
    with pytest.raises(UnknownNameError, match="Unknown layer in f.npz .logits."):
        read_embeddings_file(path, layer="logits")
    # every array is a plain one: numpy's own reader opens it with pickle off
    with np.load(path, allow_pickle=False) as raw:
        assert str(raw["format"]) == "repalign-embeddings/1"
        assert sorted(raw.files) == sorted(["embeddings", "stimuli", "format", "model", "model_id", "dataset", "layer"])


def test_several_layers_and_labels(tmp_path):
    a, b = features(6, 1), features(6, 2)[:, :3]
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = write_embeddings_file(tmp_path / "l.npz", {"a": a, "b": b}, labels=labels)
    file = read_embeddings_file(path, layer="b")
    np.testing.assert_array_equal(file.embeddings, b)
    np.testing.assert_array_equal(file.labels, labels)
    assert file.labels.dtype == np.int64 and file.stimuli is None and file.layers == ("a", "b")
    with pytest.raises(InputError, match="holds 2 layers"):
        read_embeddings_file(path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embeddings": np.zeros(3)}, "must be 2-D"),
        ({"embeddings": {"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}}, "different numbers of rows"),
        ({"embeddings": np.zeros((3, 2)), "stimuli": ["a", "a", "b"]}, "names repeat"),
        ({"embeddings": np.zeros((3, 2)), "stimuli": ["a", "b"]}, "2 names for 3"),
        ({"embeddings": np.zeros((3, 2)), "labels": [0.5, 1, 2]}, "1-D integer"),
        ({"embeddings": {}}, "No embeddings to write"),
    ],
)
def test_writing_checks_what_it_writes(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        write_embeddings_file(tmp_path / "w.npz", **kwargs)
    assert not (tmp_path / "w.npz").exists()


def test_files_of_the_older_layout_still_read(tmp_path):
    """``embed --out`` wrote one array per layer (``penultimate``) beside ``stimuli`` or ``labels``."""
    x = features(4)
    np.savez(tmp_path / "old.npz", penultimate=x, stimuli=np.array(STIMULI))
    file = read_embeddings_file(tmp_path / "old.npz")
    assert file.stimuli == STIMULI and file.layer == "penultimate"
    np.testing.assert_array_equal(file.embeddings, x)
    np.savez(tmp_path / "old_labels.npz", penultimate=x, labels=np.arange(4))
    np.testing.assert_array_equal(read_embeddings_file(tmp_path / "old_labels.npz").labels, np.arange(4))
