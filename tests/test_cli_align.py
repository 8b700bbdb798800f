"""`repalign align` end to end on the real Peterson data of the mirror: precomputed
embeddings (.npy / .npz), a user dataset of triplet judgments, a real model, and every
bad-input path (exit code 2 and a one-line error)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from repalign import alignment as al
from repalign.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def animals(mirror):
    from repalign.data.human import load_human

    (dataset,) = load_human("peterson:animals")
    return dataset


@pytest.fixture(scope="module")
def fruits(mirror):
    from repalign.data.human import load_human

    (dataset,) = load_human("peterson:fruits")
    return dataset


def run_json(capsys, *argv) -> list[dict]:
    assert main(["align", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def fail(capsys, *argv) -> str:
    assert main(["align", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("repalign: error: ")  # one line, no traceback
    return err


def embeddings_for(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)


def test_npy_embeddings_give_the_library_values_with_cis(tmp_path, animals, capsys):
    x = embeddings_for(120)
    np.save(tmp_path / "emb.npy", x)
    records = run_json(
        capsys, "--embeddings", str(tmp_path / "emb.npy"), "--human", "peterson:animals", "--n-bootstrap", "40"
    )
    assert [r["metric"] for r in records] == ["pearson", "spearman", "triplet"]
    model = al.similarity_matrix(x)
    expected = {
        "pearson": al.pairwise_alignment(model, animals.similarity),
        "spearman": al.pairwise_alignment(model, animals.similarity, method="spearman"),
        "triplet": al.triplet_alignment(model, animals.similarity),
    }
    for record in records:
        assert record["dataset"] == "peterson:animals" and record["similarity"] == "cosine"
        assert record["n"] == 120 and record["n_missing_pairs"] == 0
        assert record["value"] == pytest.approx(expected[record["metric"]], abs=1e-12)
        assert record["ci_low"] <= record["value"] <= record["ci_high"]
        assert "model" not in record


def test_npz_rows_are_matched_by_name(tmp_path, animals, fruits, capsys):
    x = embeddings_for(120)
    np.save(tmp_path / "ordered.npy", x)
    order = np.random.default_rng(1).permutation(120)
    np.savez(tmp_path / "shuffled.npz", embeddings=x[order], names=np.array(animals.stimuli)[order])
    common = ("--human", "peterson:animals", "--n-bootstrap", "0", "--metrics", "pearson,kendall,triplet")
    ordered = run_json(capsys, "--embeddings", str(tmp_path / "ordered.npy"), *common)
    shuffled = run_json(capsys, "--embeddings", str(tmp_path / "shuffled.npz"), *common)
    assert [r["value"] for r in shuffled] == pytest.approx([r["value"] for r in ordered], abs=1e-12)
    assert all(r["ci_low"] is None for r in shuffled)  # no bootstrap: NaN bounds -> null in JSON

    # one file for two datasets; a dataset with no named row is skipped when several are asked for
    both = np.concatenate([x, embeddings_for(120, seed=2)])
    np.savez(tmp_path / "both.npz", embeddings=both, names=np.array(animals.stimuli + fruits.stimuli))
    records = run_json(
        capsys, "--embeddings", str(tmp_path / "both.npz"), "--human", "peterson:animals,peterson:fruits", *common[2:]
    )
    assert [r["dataset"] for r in records] == ["peterson:animals"] * 3 + ["peterson:fruits"] * 3
    records = run_json(capsys, "--embeddings", str(tmp_path / "shuffled.npz"), "--human", "peterson", *common[2:])
    assert {r["dataset"] for r in records} == {"peterson:animals"}


def test_table_and_csv_formats(tmp_path, capsys):
    np.save(tmp_path / "emb.npy", embeddings_for(120))
    assert (
        main(["align", "--embeddings", str(tmp_path / "emb.npy"), "--human", "peterson:fruits", "--n-bootstrap", "5"])
        == 0
    )
    table = capsys.readouterr().out
    assert "peterson:fruits" in table and "triplet" in table and "similarity=cosine" in table
    assert "ties=exclude (triplet)" in table  # one tie rule: said once, in the title
    assert (
        main(
            [
                "align",
                "--embeddings",
                str(tmp_path / "emb.npy"),
                "--human",
                "peterson:fruits",
                "--format",
                "csv",
                "--n-bootstrap",
                "5",
                "--similarity",
                "neg_euclidean",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "dataset,metric,similarity,ties,value,ci_low,ci_high,n,n_missing_pairs,ceiling_low,ceiling_high"
    assert len(lines) == 4 and all(",neg_euclidean," in line for line in lines[1:])
    assert [line.split(",")[3] for line in lines[1:]] == ["", "", "exclude"]  # the triplet row's tie rule


def test_ties_option_reaches_the_triplet_metric(tmp_path, fruits, capsys):
    """--ties strict gives the paper's Definition 3.5 value and says so in the output."""
    x = embeddings_for(120)
    np.save(tmp_path / "emb.npy", x)
    records = run_json(
        capsys,
        "--embeddings",
        str(tmp_path / "emb.npy"),
        "--human",
        "peterson:fruits",
        "--n-bootstrap",
        "0",
        "--ties",
        "strict",
    )
    triplet = next(r for r in records if r["metric"] == "triplet")
    assert triplet["ties"] == "strict"
    assert triplet["value"] == al.triplet_alignment(al.similarity_matrix(x), fruits.similarity, ties="strict")
    assert all(r["ties"] is None for r in records if r["metric"] != "triplet")


def test_judgment_dataset_scores_triplet_accuracy(tmp_path, animals, capsys):
    """Judgments derived from the Peterson ratings of 25 animals: the judgment scorer must
    agree with the exact triplet kernel on the same triplets."""
    n = 25
    names = animals.stimuli[:n]
    human = np.asarray(animals.similarity)[:n, :n]
    rows = []
    for anchor in range(n):
        for j, k in itertools.combinations([s for s in range(n) if s != anchor], 2):
            if human[anchor, j] != human[anchor, k]:  # humans have an answer
                positive, negative = (j, k) if human[anchor, j] > human[anchor, k] else (k, j)
                rows.append(f"{names[anchor]},{names[positive]},{names[negative]}")
    folder = tmp_path / "peterson-triplets"
    folder.mkdir()
    (folder / "judgments.csv").write_text("anchor,positive,negative\n" + "\n".join(rows) + "\n")
    (folder / "repalign.json").write_text(
        json.dumps({"name": "animals-triplets", "stimuli": list(names), "triplets": "judgments.csv"})
    )
    x = embeddings_for(n, seed=3)
    np.save(tmp_path / "emb.npy", x)
    (record,) = run_json(
        capsys, "--embeddings", str(tmp_path / "emb.npy"), "--human", str(folder), "--n-bootstrap", "30"
    )
    assert record["metric"] == "triplet_accuracy" and record["n"] == n
    # continuous model similarities: no model ties, so accuracy on the human-decided
    # triplets is agree / (agree + disagree) of the exact counts
    assert record["value"] == pytest.approx(al.triplet_alignment(al.similarity_matrix(x), human), abs=1e-12)
    assert record["ci_low"] <= record["value"] <= record["ci_high"]
    err = fail(capsys, "--embeddings", str(tmp_path / "emb.npy"), "--human", str(folder), "--metrics", "pearson")
    assert "no similarity matrix" in err


@pytest.mark.slow
def test_real_models_end_to_end(capsys):
    """Raw pixels vs an ImageNet-trained network on the Peterson animals: the network's
    similarities agree far better with human ratings (Peterson et al. 2018 report raw
    correlations around 0.5-0.6 for CNN features on this domain)."""
    pixels = run_json(capsys, "pixels", "--human", "peterson", "--n-bootstrap", "20", "--metrics", "pearson")
    assert [r["dataset"] for r in pixels] == [
        "peterson:animals",
        "peterson:fruits",
        "peterson:vegetables",
    ]  # with images
    assert all(r["model"] == "pixels" and r["model_id"] for r in pixels)
    network = "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor"
    (cnn,) = run_json(capsys, network, "--human", "peterson:animals", "--n-bootstrap", "50", "--metrics", "pearson")
    assert cnn["model"] == network and cnn["value"] > 0.4 and cnn["ci_low"] > pixels[0]["ci_high"]


def test_bad_input(tmp_path, animals, capsys):
    np.save(tmp_path / "short.npy", embeddings_for(100))
    np.save(tmp_path / "ok.npy", embeddings_for(120))
    np.savez(tmp_path / "wrongnames.npz", embeddings=embeddings_for(120), names=np.array([f"x{i}" for i in range(120)]))
    np.savez(tmp_path / "objects.npz", embeddings=embeddings_for(120), names=np.array(animals.stimuli, dtype=object))
    human = ("--human", "peterson:animals")
    # every malformed-file case is tested on the library function (tests/test_embed_files.py);
    # here a few show its errors reach the command as one line
    cases = [
        (("--embeddings", tmp_path / "short.npy", *human), "has 100 rows but peterson:animals has 120 stimuli"),
        (("--embeddings", tmp_path / "wrongnames.npz", *human), "120 of 120 stimuli of peterson:animals have no row"),
        (("--embeddings", tmp_path / "objects.npz", *human), "without pickle"),
        (("--embeddings", tmp_path / "absent.npy", *human), "not found"),
        ((*human,), "either a MODEL or --embeddings"),
        (("pixels", "--embeddings", tmp_path / "ok.npy", *human), "either a MODEL or --embeddings"),
        (("--embeddings", tmp_path / "ok.npy", *human, "--metrics", "pearsn"), "Did you mean: pearson"),
        (("--embeddings", tmp_path / "ok.npy", *human, "--metrics", ","), "--metrics is empty"),
        (("--embeddings", tmp_path / "ok.npy", *human, "--layer", "fc"), "bare .npy array with no layer names"),
        (("--embeddings", tmp_path / "ok.npy", *human, "--metrics", "triplet_accuracy"), "no triplet judgments"),
        (("--embeddings", tmp_path / "ok.npy", "--human", "peterson:cats"), "cats"),
        (("pixels", "--human", "peterson:furniture"), "furniture"),  # matrix only: no images
    ]
    for argv, match in cases:
        err = fail(capsys, *map(str, argv))
        assert __import__("re").search(match, err), (argv, err)
    # an out-of-range number is refused by the parser, on one line as well
    with pytest.raises(SystemExit, match="2"):
        main(["align", "--embeddings", str(tmp_path / "ok.npy"), *human, "--n-bootstrap", "-1"])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "argument --n-bootstrap: expected a whole number >= 0 and <= 100000" in err
