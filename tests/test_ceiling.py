"""Noise ceilings and reliability of human data: rsatoolbox's bounds (against rsatoolbox
itself), the majority-vote ceiling of counted triplets (against brute force), split-half
reliability, participant files in manifests, and the ceilings on alignment rows, the
`repalign align` output and the study store.

The mirror has no per-participant data (Peterson et al. publish mean ratings), so the
participant datasets here are built around the real Peterson animals matrix: each simulated
participant rates the 120 real stimuli on a 0-10 scale, the real mean rating plus noise.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest

from repalign import alignment as al
from repalign.alignment.ceiling import (
    noise_ceiling,
    participant_alignment,
    split_half_reliability,
    triplet_ceiling,
)
from repalign.cli import main
from repalign.data.judgments import TripletJudgments
from repalign.errors import InputError

rsatoolbox = pytest.importorskip("rsatoolbox")

#: repalign's metric name -> rsatoolbox's
RSA_NAMES = {
    "pearson": "corr",
    "spearman": "spearman",
    "kendall": "kendall",
    "tau-a": "tau-a",
    "rho-a": "rho-a",
    "cosine": "cosine",
}


def simulated_participants(mean: np.ndarray, k: int, noise: float, rng, scale: int | None = None) -> np.ndarray:
    """k symmetric matrices around ``mean``: ratings on a 0..scale integer scale when ``scale``."""
    n = len(mean)
    out = []
    for _ in range(k):
        e = rng.normal(scale=noise, size=(n, n))
        m = mean + (e + e.T) / 2
        if scale:
            m = np.clip(np.round(m * scale), 0, scale)
        np.fill_diagonal(m, np.nan)
        out.append(m)
    return np.array(out)


def rsatoolbox_ceiling(participants: np.ndarray, metric: str) -> tuple[float, float]:
    from rsatoolbox.inference.noise_ceiling import boot_noise_ceiling

    rows, cols = np.triu_indices(participants.shape[1], 1)
    # RDMs are dissimilarities: -S (every comparison here is unchanged by the sign flip of both sides)
    rdms = rsatoolbox.rdm.RDMs(-participants[:, rows, cols])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(boot_noise_ceiling(rdms, method=RSA_NAMES[metric]))


@pytest.mark.parametrize("metric", list(RSA_NAMES))
@pytest.mark.parametrize("scale", [None, 4])
def test_noise_ceiling_equals_rsatoolbox(metric, scale):
    rng = np.random.default_rng(len(metric) + (scale or 0))
    x = rng.normal(size=(14, 4))
    participants = simulated_participants(al.similarity_matrix(x) / 4 + 0.5, 5, 0.2, rng, scale)
    low, high = noise_ceiling(participants, metric)
    assert (low, high) == pytest.approx(rsatoolbox_ceiling(participants, metric), abs=1e-12)
    assert low < high  # the pool that saw the participant matches it better


def test_noise_ceiling_with_the_same_missing_pairs_for_everyone_equals_rsatoolbox(rng):
    participants = simulated_participants(np.full((12, 12), 0.5), 4, 0.3, rng)
    participants[:, 2, 7] = participants[:, 7, 2] = np.nan
    for metric in ("pearson", "spearman", "cosine"):
        assert noise_ceiling(participants, metric) == pytest.approx(rsatoolbox_ceiling(participants, metric), abs=1e-12)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the NaN diagonal
def test_triplet_metric_ceiling_is_the_mean_pooled_leave_one_out_by_hand(rng):
    participants = simulated_participants(al.similarity_matrix(rng.normal(size=(10, 3))), 4, 0.3, rng)
    low, high = noise_ceiling(participants, "triplet")
    mean = np.nanmean(participants, axis=0)
    expected_high = np.mean([al.triplet_alignment(mean, p) for p in participants])
    expected_low = np.mean(
        [al.triplet_alignment(np.nanmean(np.delete(participants, i, 0), axis=0), p) for i, p in enumerate(participants)]
    )
    assert (low, high) == pytest.approx((expected_low, expected_high), abs=1e-12)


def test_participant_alignment_is_the_mean_over_participants(rng):
    participants = simulated_participants(np.full((9, 9), 0.5), 3, 0.3, rng)
    model = al.similarity_matrix(rng.normal(size=(9, 3)))
    for metric in ("pearson", "tau-a", "triplet"):
        one = al.triplet_alignment if metric == "triplet" else lambda m, h: al.pairwise_alignment(m, h, method=metric)
        expected = np.mean([one(model, p) for p in participants])
        assert participant_alignment(model, participants, metric) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("participants", "match"),
    [
        (np.ones((1, 5, 5)), "at least 2 participants"),
        (np.ones((3, 5)), r"\(k, n, n\)"),
        (np.full((2, 4, 4), np.inf), "infinite"),
    ],
)
def test_bad_participant_arrays_are_refused(participants, match):
    with pytest.raises(InputError, match=match):
        noise_ceiling(participants)


# --------------------------------------------------------------------- split-half reliability


def test_split_half_of_two_participants_is_spearman_brown_of_their_correlation(rng):
    participants = simulated_participants(al.similarity_matrix(rng.normal(size=(15, 3))), 2, 0.3, rng)
    r = al.pairwise_alignment(participants[0], participants[1])
    result = split_half_reliability(participants, n_splits=3, n_bootstrap=0)
    assert result.value == pytest.approx(2 * r / (1 + r), abs=1e-12)
    assert np.isnan(result.ci_low) and np.isnan(result.ci_high)


def test_split_half_averages_the_possible_splits_and_has_an_interval(rng):
    participants = simulated_participants(al.similarity_matrix(rng.normal(size=(15, 3))), 4, 0.5, rng)
    # the three ways to split 4 participants 2 + 2, each Spearman-Brown corrected
    possible = []
    for first in ((0, 1), (0, 2), (0, 3)):
        second = [i for i in range(4) if i not in first]
        r = al.pairwise_alignment(participants[list(first)].mean(0), participants[second].mean(0))
        possible.append(2 * r / (1 + r))
    result = split_half_reliability(participants, n_splits=400, n_bootstrap=300, random_state=1)
    assert min(possible) <= result.value <= max(possible)
    assert result.value == pytest.approx(np.mean(possible), abs=0.02)  # 400 splits: each ~1/3 of the time
    assert result.ci_low < result.value < result.ci_high
    assert split_half_reliability(participants, n_splits=50, n_bootstrap=50, random_state=1) == (
        split_half_reliability(participants, n_splits=50, n_bootstrap=50, random_state=1)
    )


def test_more_noise_means_less_reliability(rng):
    mean = al.similarity_matrix(rng.normal(size=(20, 3)))
    quiet = split_half_reliability(simulated_participants(mean, 6, 0.1, rng), n_bootstrap=0)
    noisy = split_half_reliability(simulated_participants(mean, 6, 2.0, rng), n_bootstrap=0)
    assert quiet.value > 0.9 > noisy.value


# --------------------------------------------------------------------- counted triplets


def brute_triplet_ceiling(judgments: TripletJudgments) -> tuple[float, float]:
    """Every judgment spelled out: the majority share, and each judgment against the others' majority."""
    expanded = [
        (a, b, c)
        for a, b, c, k in zip(judgments.a, judgments.b, judgments.c, judgments.counts, strict=True)
        for _ in range(k)
    ]
    if judgments.kind == "triplet":
        question, answer = (lambda j: (j[0], *sorted(j[1:]))), (lambda j: j[1])
        choices = lambda q: q[1:]  # noqa: E731
    else:
        question, answer = (lambda j: tuple(sorted(j))), (lambda j: j[2])
        choices = lambda q: q  # noqa: E731
    groups: dict[tuple, list] = {}
    for j in expanded:
        groups.setdefault(question(j), []).append(answer(j))
    high = low = 0.0
    for q, answers in groups.items():
        high += max(Counter(answers).values())
        for i, mine in enumerate(answers):
            others = Counter(answers[:i] + answers[i + 1 :])
            votes = {choice: others.get(choice, 0) for choice in choices(q)}
            winners = [c for c, v in votes.items() if v == max(votes.values())]
            low += 1 / len(winners) if mine in winners else 0.0
    return low / len(expanded), high / len(expanded)


@pytest.mark.parametrize("kind", ["triplet", "odd_one_out"])
def test_triplet_ceiling_equals_brute_force(kind):
    rng = np.random.default_rng(7)
    for _ in range(20):
        n, m = 5, int(rng.integers(1, 30))
        rows = np.array([rng.choice(n, 3, replace=False) for _ in range(m)])
        judgments = TripletJudgments(kind, rows[:, 0], rows[:, 1], rows[:, 2], rng.integers(1, 4, m), n)
        assert triplet_ceiling(judgments) == pytest.approx(brute_triplet_ceiling(judgments), abs=1e-12)


def test_unanimous_judgments_have_a_ceiling_of_one_and_split_ones_of_their_majority():
    def judgments(counts_b, counts_c):
        # anchor 0: "1 is closer" counts_b times, "2 is closer" counts_c times
        return TripletJudgments(
            "triplet", np.array([0, 0]), np.array([1, 2]), np.array([2, 1]), np.array([counts_b, counts_c]), 3
        )

    assert triplet_ceiling(
        TripletJudgments("triplet", np.array([0]), np.array([1]), np.array([2]), np.array([5]), 3)
    ) == (1.0, 1.0)
    low, high = triplet_ceiling(judgments(3, 1))
    assert high == 0.75
    # leave one out: the 3 "1" voters still see 2 vs 1 (right); the "2" voter sees 3 vs 0 (wrong)
    assert low == 0.75
    low, high = triplet_ceiling(judgments(2, 2))
    assert high == 0.5 and low == 0.0  # each voter sees the other side ahead by one


# --------------------------------------------------------------------- participant files and datasets


@pytest.fixture(scope="module")
def animals(mirror):
    from repalign.data.human import load_human

    (dataset,) = load_human("peterson:animals")
    return dataset


def long_csv(path, participants: np.ndarray, names) -> None:
    """participant,i,j,value: every rated pair of every participant, once."""
    rows, cols = np.triu_indices(participants.shape[1], 1)
    lines = ["participant,i,j,value"]
    for p, matrix in enumerate(participants):
        for i, j in zip(rows, cols, strict=True):
            if not np.isnan(matrix[i, j]):
                lines.append(f"p{p:02d},{names[i]},{names[j]},{matrix[i, j]:g}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def participant_dataset(animals, tmp_path_factory):
    """A manifest dataset of 6 simulated participants rating the real Peterson animals on 0..10,
    each missing 10% of the pairs, as a long CSV; and its arrays."""
    rng = np.random.default_rng(11)
    participants = simulated_participants(animals.similarity, 6, 0.15, rng, scale=10)
    iu = np.triu_indices(120, 1)
    for matrix in participants:
        holes = rng.random(len(iu[0])) < 0.1
        matrix[iu[0][holes], iu[1][holes]] = matrix[iu[1][holes], iu[0][holes]] = np.nan
    folder = tmp_path_factory.mktemp("participants")
    long_csv(folder / "ratings.csv", participants, animals.stimuli)
    (folder / "stimuli.txt").write_text("\n".join(animals.stimuli) + "\n")
    (folder / "repalign.toml").write_text(
        'name = "animals-raters"\nstimuli = "stimuli.txt"\nparticipant_similarity = "ratings.csv"\n'
    )
    return folder, participants


@pytest.mark.integration
def test_a_long_csv_manifest_gives_the_participants_and_their_mean(participant_dataset):
    from repalign.data.human import load_human

    folder, participants = participant_dataset
    (human,) = load_human(folder)
    assert human.participants.shape == (6, 120, 120) and not human.participants.flags.writeable
    np.testing.assert_array_equal(human.participants, participants)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = np.nanmean(participants, axis=0)
    off = ~np.eye(120, dtype=bool)
    np.testing.assert_allclose(human.similarity[off], mean[off], atol=1e-12)


def test_repeated_ratings_are_averaged_and_either_order_fills_the_pair(tmp_path):
    from repalign.data.human import load_human

    (tmp_path / "r.csv").write_text("participant,i,j,value\na,x,y,1\na,y,x,3\na,x,z,5\nb,z,y,4\nb,x,y,2\nb,x,z,1\n")
    (tmp_path / "repalign.toml").write_text('stimuli = ["x", "y", "z"]\nparticipant_dissimilarity = "r.csv"\n')
    (human,) = load_human(tmp_path)
    a, b = human.participants
    assert a[0, 1] == a[1, 0] == -2.0 and a[0, 2] == -5.0 and np.isnan(a[1, 2])  # dissimilarity: negated
    assert b[1, 2] == b[2, 1] == -4.0 and np.isnan(b[0, 0])
    assert human.similarity[0, 1] == -2.0 and human.similarity[0, 2] == -3.0 and human.similarity[1, 2] == -4.0


def test_an_npy_of_participants_loads_beside_a_declared_matrix(tmp_path, rng):
    from repalign.data.human import load_human

    participants = simulated_participants(np.full((5, 5), 0.5), 3, 0.2, rng)
    upper_only = participants.copy()
    upper_only[:, np.tril_indices(5, -1)[0], np.tril_indices(5, -1)[1]] = np.nan  # one triangle is enough
    np.save(tmp_path / "p.npy", upper_only)
    np.save(tmp_path / "mean.npy", np.eye(5) + 0.1 * np.arange(25).reshape(5, 5) + 0.1 * np.arange(25).reshape(5, 5).T)
    (tmp_path / "repalign.toml").write_text(
        'stimuli = ["a", "b", "c", "d", "e"]\nsimilarity = "mean.npy"\nparticipant_similarity = "p.npy"\n'
    )
    (human,) = load_human(tmp_path)
    np.testing.assert_allclose(human.participants, participants)
    assert human.similarity[0, 1] == pytest.approx(0.6)  # the declared matrix, not the participants' mean


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("participant,i,j,value\na,x,y,1\n", "at least 2"),
        ("participant,i,j,value\na,x,w,1\nb,x,y,1\n", "Unknown stimulus name 'w'"),
        ("participant,i,j,value\na,x,y,high\nb,x,y,1\n", "is not a number"),
        ("participant,i,j,value\na,x,x,1\nb,x,y,1\n", "same stimulus"),
        ("who,i,j,value\na,x,y,1\n", "expected 'participant,i,j,value'"),
    ],
)
def test_bad_participant_files_get_one_line_errors(tmp_path, content, match):
    from repalign.data.human import load_human

    (tmp_path / "r.csv").write_text(content)
    (tmp_path / "repalign.toml").write_text('stimuli = ["x", "y", "z"]\nparticipant_similarity = "r.csv"\n')
    with pytest.raises(InputError, match=match) as error:
        load_human(tmp_path)
    assert "\n" not in str(error.value)


def test_an_asymmetric_participant_matrix_is_refused(tmp_path):
    from repalign.data.human import load_human

    array = np.ones((2, 3, 3))
    array[0, 0, 1] = 5.0
    np.save(tmp_path / "p.npy", array)
    (tmp_path / "repalign.toml").write_text('stimuli = ["x", "y", "z"]\nparticipant_similarity = "p.npy"\n')
    with pytest.raises(InputError, match="not symmetric"):
        load_human(tmp_path)


# --------------------------------------------------------------------- alignment rows, CLI, store


@pytest.mark.integration
def test_compute_alignment_scores_against_each_participant_and_carries_the_ceiling(participant_dataset):
    from repalign.data.human import load_human

    folder, participants = participant_dataset
    (human,) = load_human(folder)
    x = np.random.default_rng(0).normal(size=(120, 8))
    metrics = ("pearson", "tau-a", "triplet")
    records = al.compute_alignment(x, human, metrics=metrics, n_bootstrap=20).to_dict(orient="records")
    model = al.similarity_matrix(x)
    for record in records:
        metric = record["metric"]
        assert record["value"] == pytest.approx(participant_alignment(model, participants, metric), abs=1e-12)
        assert (record["ceiling_low"], record["ceiling_high"]) == pytest.approx(
            tuple(noise_ceiling(participants, metric)), abs=1e-12
        )
        assert record["ci_low"] <= record["value"] <= record["ci_high"]
    # the mean-pooled dataset rated by simulated participants is far from ceiling for a random model
    assert records[0]["ceiling_low"] > 0.5 > abs(records[0]["value"])


@pytest.mark.integration
def test_cli_align_reports_the_ceiling_of_a_dataset_with_participants(participant_dataset, animals, tmp_path, capsys):
    folder, participants = participant_dataset
    x = np.random.default_rng(1).normal(size=(120, 8)).astype(np.float32)
    np.savez(tmp_path / "emb.npz", embeddings=x, names=np.array(animals.stimuli))
    argv = ["align", "--embeddings", str(tmp_path / "emb.npz"), "--human", str(folder), "--bootstrap", "0"]
    assert main([*argv, "--metrics", "pearson,rho-a", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    for record in records:
        low, high = noise_ceiling(participants, record["metric"])
        assert record["ceiling_low"] == pytest.approx(low, abs=1e-12)
        assert record["ceiling_high"] == pytest.approx(high, abs=1e-12)
    assert main([*argv, "--metrics", "pearson"]) == 0
    assert "ceiling_low" in capsys.readouterr().out  # the table shows the ceiling where it is known


@pytest.mark.integration
def test_triplet_accuracy_rows_carry_the_majority_vote_ceiling(animals, tmp_path):
    from repalign.data.human import load_human

    names = animals.stimuli
    # repeated judgments over real stimuli: anchor, positive, negative with counts
    rows = ["anchor,positive,negative,count"]
    rows += [
        f"{names[0]},{names[1]},{names[2]},3",
        f"{names[0]},{names[2]},{names[1]},1",
        f"{names[3]},{names[4]},{names[5]},2",
    ]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "repalign.toml").write_text('name = "t"\ntriplets = "t.csv"\n')
    (human,) = load_human(tmp_path)
    x = np.random.default_rng(2).normal(size=(human.n_stimuli, 4))
    (record,) = al.compute_alignment(x, human, n_bootstrap=0).to_dict(orient="records")
    assert record["metric"] == "triplet_accuracy"
    assert (record["ceiling_low"], record["ceiling_high"]) == pytest.approx(brute_triplet_ceiling(human.judgments))
    assert record["ceiling_high"] == pytest.approx(5 / 6)


def test_alignment_rows_hold_the_ceiling_columns(rng):
    from repalign.data.human import HumanSimilarity
    from repalign.schema import RESULT_COLUMNS

    participants = simulated_participants(np.full((8, 8), 0.5), 3, 0.3, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = np.nan_to_num(np.nanmean(participants, 0), nan=1.0)
    human = HumanSimilarity("toy", tuple("abcdefgh"), similarity=mean, participants=participants)
    rows = al.alignment_rows(rng.normal(size=(8, 3)), human, metrics=("spearman",), n_bootstrap=0)
    assert list(rows.columns) == list(RESULT_COLUMNS)
    assert rows["ceiling_low"].dtype == "float64"
    assert tuple(rows[["ceiling_low", "ceiling_high"]].iloc[0]) == pytest.approx(
        tuple(noise_ceiling(participants, "spearman"))
    )


def test_a_store_written_before_the_ceiling_columns_is_read_with_them_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from repalign import store
    from repalign.schema import conform

    rows = conform(
        __import__("pandas").DataFrame(
            {
                "model": ["m"],
                "stage": ["alignment"],
                "dataset": ["d"],
                "metric": ["pearson"],
                "value": [0.5],
                "status": ["ok"],
                "unit": ["u1"],
            }
        )
    )
    old = rows.drop(columns=["ceiling_low", "ceiling_high"])
    table = pa.Table.from_pandas(old, preserve_index=False)
    meta = {store._UNIT_KEY: b"u1", store._ROWS_KEY: store._rows_digest(old).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, tmp_path / "u1.parquet")
    _, frame = store._check_unit_table(pq.read_table(tmp_path / "u1.parquet"), tmp_path / "u1.parquet")
    assert frame["value"].tolist() == [0.5] and frame["ceiling_low"].isna().all()
    # a file that lacks a column of the original schema is still another schema
    broken = pa.Table.from_pandas(old.drop(columns=["value"]), preserve_index=False).replace_schema_metadata(meta)
    pq.write_table(broken, tmp_path / "u1.parquet")
    with pytest.raises(store.DamagedFileError, match="no column value"):
        store._check_unit_table(pq.read_table(tmp_path / "u1.parquet"), tmp_path / "u1.parquet")


@pytest.mark.integration
def test_split_half_interval_of_the_raters_holds_its_value(participant_dataset):
    # a participant bootstrap would sit below the value (halves with repeated raters are noisier);
    # the stimulus bootstrap is centred on it
    _, participants = participant_dataset
    result = split_half_reliability(participants, n_splits=50, n_bootstrap=200, random_state=0)
    assert 0.5 < result.ci_low < result.value < result.ci_high < 1.0
