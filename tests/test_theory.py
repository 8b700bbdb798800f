"""Tests of repalign.theory: closed forms against scipy / brute force, simulations against
the predictions they exist to show (U-shape, symmetry, Monte Carlo vs exact), determinism,
bad input, and the ``repalign theory`` command."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repalign.errors import InputError, UnknownNameError
from repalign.theory import (
    GameConfig,
    binary_entropy,
    build_embedding_student,
    channel_capacity,
    compare_with_capacity,
    default_grid,
    domain_shift_sensitivity,
    expected_max_disagreement,
    fano_query_bound,
    measure_disagreement,
    predicted_accuracy_shape,
    predicted_query_ratio,
    queries_to_target,
    query_lower_bound,
    query_ratio,
    simulate_communication_game,
    simulate_max_disagreement,
    stochastic_alignment,
    triplets_per_object,
)
from repalign.theory.students import negative_distances

QUICK_GAME = default_grid(quick=True).game


# ----------------------------------------------------------------------------- capacity


def test_capacity_endpoints_and_symmetry():
    assert channel_capacity(0.0) == 1.0
    assert channel_capacity(1.0) == 1.0
    assert channel_capacity(0.5) == pytest.approx(0.0, abs=1e-15)
    eps = np.linspace(0, 1, 101)
    np.testing.assert_allclose(channel_capacity(eps), channel_capacity(1 - eps), atol=1e-15)
    assert np.all(np.diff(channel_capacity(eps[:51])) < 0)  # strictly decreasing up to 0.5


def test_binary_entropy_matches_scipy():
    eps = np.array([0.0, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0])
    expected = [stats.entropy([p, 1 - p], base=2) for p in eps]
    np.testing.assert_allclose(binary_entropy(eps), expected, atol=1e-12)
    assert binary_entropy(eps.reshape(7, 1)).shape == (7, 1)


def test_query_ratio_and_bounds():
    eps = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    ratio = query_ratio(eps)
    assert ratio[0] == ratio[-1] == 1.0
    assert np.isinf(ratio[2])
    assert ratio[1] == pytest.approx(1 / (1 - stats.entropy([0.1, 0.9], base=2)))
    assert ratio[1] == pytest.approx(ratio[3])
    bound = query_lower_bound(8, 50, eps)
    np.testing.assert_allclose(bound[[0, 1]], 8 * np.log2(50) * ratio[[0, 1]])
    assert query_lower_bound([2, 8], 50, 0.0).tolist() == pytest.approx([2 * np.log2(50), 8 * np.log2(50)])
    assert query_lower_bound(8, 50, 0.2, constant=3.0) == pytest.approx(3 * query_lower_bound(8, 50, 0.2))
    # Fano: K = 32, Pe = 0.2 needs 5 - 1 - 0.2 log2(31) bits
    bits = 5 - 1 - 0.2 * np.log2(31)
    assert fano_query_bound(32, 0.0, target_accuracy=0.8) == pytest.approx(bits)
    assert fano_query_bound(32, 0.25, target_accuracy=0.8) == pytest.approx(bits * query_ratio(0.25))
    assert fano_query_bound(2, 0.5, target_accuracy=0.6) == 0.0  # needs 0 bits: 0, not nan


def test_predicted_shapes_for_the_report():
    alignment = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    shape = predicted_accuracy_shape(alignment)
    np.testing.assert_allclose(shape, channel_capacity(1 - alignment))
    assert shape[2] == pytest.approx(0.0, abs=1e-15) and shape[0] == shape[-1] == 1.0
    np.testing.assert_allclose(predicted_query_ratio(alignment[[0, 1, 3]]), 1 / shape[[0, 1, 3]])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: channel_capacity(1.5), r"eps must lie in \[0, 1\]"),
        (lambda: channel_capacity([0.2, np.nan]), r"eps must lie in \[0, 1\]"),
        (lambda: channel_capacity("abc"), "eps must be a number"),
        (lambda: predicted_accuracy_shape(-0.1), r"alignment must lie in \[0, 1\]"),
        (lambda: query_lower_bound(0, 10, 0.1), "d .* must be >= 1"),
        (lambda: query_lower_bound(3, 1, 0.1), "n .* must be >= 2"),
        (lambda: query_lower_bound(3, 10, 0.1, constant=0), "constant must be a positive"),
        (lambda: fano_query_bound(1, 0.1, target_accuracy=0.9), "n_candidates must be >= 2"),
        (lambda: fano_query_bound(8, 0.1, target_accuracy=0.0), r"target_accuracy must be in \(0, 1\]"),
    ],
)
def test_capacity_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


# -------------------------------------------------------------------------- adversarial


def test_expected_max_matches_brute_force_enumeration():
    m, eps = 6, 0.3
    pmf = stats.binom.pmf(np.arange(m + 1), m, eps)
    for k in (1, 2, 3):
        brute = sum(np.prod(pmf[list(xs)]) * max(xs) for xs in itertools.product(range(m + 1), repeat=k))
        assert expected_max_disagreement(eps, m, k) == pytest.approx(brute, rel=1e-12)


def test_expected_max_single_object_is_the_mean_and_grows_with_eps():
    eps = np.linspace(0, 1, 41)
    np.testing.assert_allclose(expected_max_disagreement(eps, 45, 1), 45 * eps, atol=1e-9)
    values = expected_max_disagreement(eps, triplets_per_object(20), 50)
    assert np.all(np.diff(values) > 0)  # monotone in eps
    assert values[0] == 0.0 and values[-1] == pytest.approx(triplets_per_object(20))
    more_objects = expected_max_disagreement(eps[1:-1], triplets_per_object(20), 500)
    assert np.all(more_objects > values[1:-1])  # more objects, worse worst case


def test_monte_carlo_within_its_ci_of_the_exact_expectation():
    eps = np.array([0.05, 0.2, 0.5, 0.7, 0.95])
    m = triplets_per_object(12)
    ks = (1, 10, 200)
    # 15 intervals checked together: Bonferroni, so the family fails by chance only 1% of the time
    confidence = 1 - 0.01 / (len(eps) * len(ks))
    for k in ks:
        exact = expected_max_disagreement(eps, m, k)
        mc = simulate_max_disagreement(eps, m, k, n_samples=4000, confidence=confidence, seed=3)
        assert np.all((mc.ci_low <= exact) & (exact <= mc.ci_high)), (k, exact, mc.mean)
        assert np.all(mc.ci_high - mc.ci_low < 0.05 * m)  # and the interval is informative


def test_the_papers_printed_sum_is_the_minimum_and_the_simulation_is_the_maximum():
    """Theorem A.5 is about the worst object; the sum printed with it, sum_x (1 - F(x))^k, is the
    expected minimum. The simulation (largest of k draws) agrees with the code, not with it."""
    from scipy import stats

    eps = np.array([0.2, 0.5, 0.8])
    m, k = triplets_per_object(12), 10
    support = np.arange(m)
    printed = np.array([np.sum((1 - stats.binom.cdf(support, m, e)) ** k) for e in eps])
    minimum = stats.binom.rvs(m, eps[:, None, None], size=(3, 4000, k), random_state=1).min(axis=2).mean(axis=1)
    np.testing.assert_allclose(printed, minimum, rtol=0.02)  # the printed sum is E[min]
    mc = simulate_max_disagreement(eps, m, k, n_samples=4000, confidence=0.999, seed=3)
    exact = expected_max_disagreement(eps, m, k)
    assert np.all((mc.ci_low <= exact) & (exact <= mc.ci_high))
    assert np.all(printed < mc.ci_low), "the printed sum is far below the simulated worst object"


def test_monte_carlo_is_seeded():
    a = simulate_max_disagreement([0.3, 0.6], 20, 5, n_samples=500, seed=1)
    b = simulate_max_disagreement([0.3, 0.6], 20, 5, n_samples=500, seed=1)
    np.testing.assert_array_equal(a.mean, b.mean)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: triplets_per_object(1), "n must be an integer >= 2"),
        (lambda: expected_max_disagreement(0.2, 0, 3), "n_triplets must be an integer >= 1"),
        (lambda: expected_max_disagreement(0.2, 10, 2.5), "n_objects must be an integer"),
        (lambda: simulate_max_disagreement(0.2, 10, 3, confidence=1.0), r"confidence must be in \(0, 1\)"),
        (lambda: simulate_max_disagreement(0.2, 10, 3, n_samples=1), "n_samples must be an integer >= 2"),
    ],
)
def test_adversarial_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


# ----------------------------------------------------------------------------- students


def _brute_disagreement(student_sim, teacher_sim):
    """Every triplet (anchor i; j < k) enumerated in Python: the oracle for small n."""
    n = len(student_sim)
    agree = disagree = 0
    for i in range(n):
        for j, k in itertools.combinations([x for x in range(n) if x != i], 2):
            s = np.sign(student_sim[i, j] - student_sim[i, k])
            t = np.sign(teacher_sim[i, j] - teacher_sim[i, k])
            if s and t:
                agree += s == t
                disagree += s != t
    return disagree / (agree + disagree)


def test_measure_disagreement_matches_brute_force(rng):
    teacher = rng.standard_normal((9, 3))
    student = teacher + 0.8 * rng.standard_normal((9, 3))
    s, t = negative_distances(student), negative_distances(teacher)
    assert measure_disagreement(s, t) == pytest.approx(_brute_disagreement(s, t))
    assert measure_disagreement(t, t) == 0.0
    assert measure_disagreement(-t, t) == 1.0


@pytest.mark.parametrize("target", [0.0, 0.1, 0.3, 0.45, 0.55, 0.7, 0.9, 1.0])
def test_embedding_student_hits_its_target(rng, target):
    teacher = rng.standard_normal((30, 4))
    student = build_embedding_student(teacher, rng.standard_normal(teacher.shape), target, n_shared=25)
    assert student.reversed == (target > 0.5)
    assert student.measured_eps == pytest.approx(target, abs=2e-3)
    exact = _brute_disagreement(student.similarity(slice(0, 25)), negative_distances(teacher[:25]))
    assert student.measured_eps == pytest.approx(exact)


def test_reversed_student_mirrors_its_partner(rng):
    teacher, noise = rng.standard_normal((20, 3)), rng.standard_normal((20, 3))
    low = build_embedding_student(teacher, noise, 0.2, n_shared=20)
    high = build_embedding_student(teacher, noise, 0.8, n_shared=20)
    assert low.mix == high.mix  # same bisection, then reversed
    anchors, shared = np.arange(15, 20), np.arange(15)
    flipped = low.prefers_first(anchors, shared) ^ high.prefers_first(anchors, shared)  # (5, 15, 15)
    np.testing.assert_array_equal(flipped, np.broadcast_to(~np.eye(15, dtype=bool), flipped.shape))
    assert low.measured_eps + high.measured_eps == pytest.approx(1.0)


def test_embedding_student_bad_input(rng):
    teacher = rng.standard_normal((10, 3))
    with pytest.raises(InputError, match="one shape"):
        build_embedding_student(teacher, rng.standard_normal((10, 4)), 0.2, n_shared=10)
    with pytest.raises(InputError, match="n_shared must be between 3 and 10"):
        build_embedding_student(teacher, teacher, 0.2, n_shared=11)
    with pytest.raises(InputError, match=r"target_eps must be in \[0, 1\]"):
        build_embedding_student(teacher, teacher, 1.2, n_shared=10)


def test_stochastic_alignment_estimates_the_exact_alignment(rng):
    teacher = rng.standard_normal((30, 5))
    student = build_embedding_student(teacher, rng.standard_normal(teacher.shape), 0.3, n_shared=30)
    estimate = stochastic_alignment(student.similarity(), negative_distances(teacher), n_triplets=4000, random_state=0)
    assert estimate.ci_low <= 1 - student.measured_eps <= estimate.ci_high
    assert estimate.eps == pytest.approx(1 - estimate.alignment)
    assert estimate.eps_ci_low == pytest.approx(1 - estimate.ci_high)
    assert estimate.ci_high - estimate.ci_low < 0.04
    assert estimate.n_triplets == 4000


# ------------------------------------------------------------------------ communication


def test_queries_to_target_interpolates_in_log_queries():
    grid = np.array([1, 10, 100, 1000])
    curves = np.array([[0.1, 0.5, 0.9, 1.0], [0.9, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    out = queries_to_target(curves, grid, 0.7)
    assert out[0] == pytest.approx(10**1.5)  # halfway between 0.5 and 0.9 in log10 m
    assert out[1] == 1.0
    assert np.isinf(out[2])


@pytest.fixture(scope="module")
def quick_game():
    return simulate_communication_game([0.0, 0.1, 0.5, 0.9], config=QUICK_GAME, seed=11)


def test_game_u_shape_and_symmetry(quick_game):
    queries = quick_game.queries.set_index(["student", "eps"])
    for kind in ("flip", "embedding"):
        q = queries.loc[kind]
        assert q.loc[0.5, "queries_to_target"] > q.loc[0.1, "queries_to_target"]
        assert q.loc[0.5, "queries_to_target"] > q.loc[0.9, "queries_to_target"]
        assert q.loc[0.0, "queries_to_target"] < q.loc[0.1, "queries_to_target"]
        # 0.1 and 0.9 within noise: their difference lies inside the 95% interval of a difference
        # of two estimates with these bootstrap intervals (half-widths added in quadrature)
        low, high = q.loc[0.1], q.loc[0.9]
        assert np.isfinite(low.queries_to_target) and np.isfinite(high.queries_to_target)
        half_widths = np.array([low.ci_high - low.ci_low, high.ci_high - high.ci_low]) / 2
        assert abs(low.queries_to_target - high.queries_to_target) <= np.hypot(*half_widths)
        assert abs(low.queries_to_target - high.queries_to_target) < 0.35 * low.queries_to_target
        assert q.loc[0.9, "eps_measured"] == pytest.approx(0.9, abs=0.01)  # measured, then exploited


def test_game_at_half_is_chance(quick_game):
    acc = quick_game.accuracy
    for kind in ("flip", "embedding"):
        final = acc[(acc.student == kind) & (acc.eps == 0.5) & (acc.n_queries == QUICK_GAME.max_queries)].iloc[0]
        n = QUICK_GAME.n_worlds * QUICK_GAME.n_trials
        interval = stats.binomtest(round(final.accuracy * n), n).proportion_ci(0.999)
        assert interval.low <= 1 / QUICK_GAME.n_candidates <= interval.high
        perfect = acc[(acc.student == kind) & (acc.eps == 0.0) & (acc.n_queries == QUICK_GAME.max_queries)]
        assert perfect.accuracy.iloc[0] == 1.0
        assert perfect.distance_error.iloc[0] == 0.0


def test_game_is_seeded_and_eps_values_are_independent(quick_game):
    again = simulate_communication_game([0.0, 0.1, 0.5, 0.9], config=QUICK_GAME, seed=11)
    pd.testing.assert_frame_equal(quick_game.accuracy, again.accuracy)
    pd.testing.assert_frame_equal(quick_game.queries, again.queries)
    subset = simulate_communication_game([0.9], students="flip", config=QUICK_GAME, seed=11)
    expected = quick_game.accuracy[(quick_game.accuracy.student == "flip") & (quick_game.accuracy.eps == 0.9)]
    np.testing.assert_array_equal(subset.accuracy["accuracy"].to_numpy(), expected["accuracy"].to_numpy())
    other = simulate_communication_game([0.1], students="flip", config=QUICK_GAME, seed=12)
    assert not np.array_equal(other.accuracy["accuracy"], expected["accuracy"])


def test_flip_game_follows_one_over_capacity():
    config = GameConfig(
        n_shared=24, n_candidates=16, max_queries=2048, n_worlds=30, n_trials=8, n_grid=24, n_bootstrap=50
    )
    eps = [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]
    result = simulate_communication_game(eps, students="flip", config=config, seed=5)
    table, summary = compare_with_capacity(result.queries)
    assert summary.loc[0, "pearson_r_log"] > 0.97
    q = result.queries["queries_to_target"].to_numpy()
    assert np.all(q >= result.queries["fano_bound"].to_numpy())  # no decoder beats Fano
    assert set(table.columns) >= {"predicted", "observed_over_predicted"}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: simulate_communication_game([0.1], students="flipp"), UnknownNameError, "Did you mean: flip"),
        (lambda: simulate_communication_game([], config=QUICK_GAME), InputError, "at least one"),
        (lambda: simulate_communication_game([0.1], config=QUICK_GAME, seed=-1), InputError, "seed must be"),
        (lambda: GameConfig(n_worlds=1), InputError, "n_worlds must be an integer >= 2"),
        (lambda: GameConfig(n_candidates=4, target_accuracy=0.2), InputError, "above chance"),
        (lambda: compare_with_capacity(pd.DataFrame({"eps": [0.1]})), InputError, "lacks columns"),
    ],
)
def test_game_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------- domain shift


def test_domain_shift_u_shape():
    table = domain_shift_sensitivity([0.0, 0.1, 0.5, 0.9, 1.0], shifts=(0.5,), n_classes=15, n_worlds=6, seed=2)
    flips = table.set_index("eps")
    assert flips.loc[0.0, "flipped_fraction"] == 0.0 and flips.loc[1.0, "flipped_fraction"] == 0.0
    assert flips.loc[0.5, "flipped_fraction"] > flips.loc[0.1, "ci_high"]
    assert flips.loc[0.5, "flipped_fraction"] > flips.loc[0.9, "ci_high"]
    assert flips.loc[0.9, "ci_low"] <= flips.loc[0.1, "flipped_fraction"] <= flips.loc[0.9, "ci_high"]
    np.testing.assert_allclose(table["alignment"], 1 - table["eps_measured"])
    again = domain_shift_sensitivity([0.0, 0.1, 0.5, 0.9, 1.0], shifts=(0.5,), n_classes=15, n_worlds=6, seed=2)
    pd.testing.assert_frame_equal(table, again)


def test_domain_shift_grows_with_the_shift():
    table = domain_shift_sensitivity([0.3], shifts=(0.1, 1.0), n_classes=12, n_worlds=4, seed=0)
    assert table.loc[0, "flipped_fraction"] < table.loc[1, "flipped_fraction"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shifts": (0.0,)}, "shifts must be positive"),
        ({"n_classes": 2}, "n_classes must be an integer >= 3"),
        ({"n_worlds": 1}, "n_worlds must be an integer >= 2"),
        ({"confidence": 2}, r"confidence must be in \(0, 1\)"),
    ],
)
def test_domain_shift_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        domain_shift_sensitivity([0.2], **kwargs)


# --------------------------------------------------------------------------------- CLI


def test_cli_writes_tables_figures_and_json(tmp_path, capsys):
    from repalign.cli import main

    out = tmp_path / "theory"
    assert main(["theory", "--quick", "--out", str(out), "--format", "json", "--seed", "3"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["eps"] for r in records} == set(default_grid(quick=True).eps)
    half = next(r for r in records if r["eps"] == 0.5)
    assert half["queries_flip"] is None and half["capacity"] == pytest.approx(0.0, abs=1e-12)
    for name in (
        "capacity",
        "adversarial",
        "game_accuracy",
        "game_queries",
        "capacity_comparison",
        "capacity_fit",
        "domain_shift",
        "stochastic_alignment",
        "summary",
    ):
        table = pd.read_csv(out / f"{name}.csv")
        assert len(table) > 0, name
    assert pd.read_csv(out / "adversarial.csv")["exact_in_ci"].mean() > 0.85
    for name in ("capacity", "queries_to_target", "game_accuracy", "adversarial", "domain_shift"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # seeded: the same command writes the same tables
    again = tmp_path / "again"
    assert main(["theory", "--quick", "--out", str(again), "--format", "csv", "--seed", "3", "--no-figures"]) == 0
    assert (again / "game_queries.csv").read_text() == (out / "game_queries.csv").read_text()
    assert not (again / "capacity.png").exists()


def test_cli_bad_out_is_a_one_line_error(tmp_path, capsys):
    from repalign.cli import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["theory", "--quick", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a folder" in err
    with pytest.raises(SystemExit, match="2"):  # the parser refuses it, on one line as well
        main(["theory", "--quick", "--seed", "-1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument --seed: expected a whole number >= 0" in err


def test_theory_does_not_import_torch():
    code = "import sys, repalign.theory, repalign.cli.theory; assert 'torch' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
