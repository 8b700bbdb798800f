"""The noise ceiling in the study report: the table, the band in the per-model alignment
figure, `--relative-to-ceiling`, and reports of studies without ceilings left as they were;
then a real study (`repalign run`) on a dataset with participants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repalign.cli import main
from repalign.report import analyze_study
from repalign.store import StudyStore, load_study, new_manifest

DATASET = "raters"
CEILINGS = {"pearson": (0.7, 0.8), "tau-a": (0.4, 0.5)}


def rows(with_ceiling: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = []
    for model in ("pixels", "pixels:16", "timm:<b>model</b>"):
        for dataset in (DATASET, "peterson:animals"):
            for metric, (low, high) in CEILINGS.items():
                value = float(rng.uniform(0.1, 0.4))
                ceiling = (low, high) if with_ceiling and dataset == DATASET else (np.nan, np.nan)
                records.append(
                    dict(
                        model=model,
                        model_id=model,
                        stage="alignment",
                        dataset=dataset,
                        metric=metric,
                        similarity="cosine",
                        value=value,
                        ci_low=value - 0.05,
                        ci_high=value + 0.05,
                        ceiling_low=ceiling[0],
                        ceiling_high=ceiling[1],
                        n=120,
                        status="ok",
                    )
                )
    return pd.DataFrame(records)


def write_study(path, frame: pd.DataFrame):
    store = StudyStore(path)
    with store.locked():
        store.write_config('[study]\nname = "ceilings"\nseed = 0\n\n[robustness]\nsource = "none"\n')
        store.write_manifest(new_manifest())
        for i, (_, unit) in enumerate(frame.groupby("model", sort=False)):
            store.write_unit(f"unit{i}", unit.assign(unit=f"unit{i}"), fingerprint="synthetic")
    return store.path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("ceilings") / "study", rows(True))


def test_the_ceiling_section_has_the_table_and_the_band(study):
    report = analyze_study(study, n_bootstrap=0)
    table = report.table("noise_ceilings").frame
    source = rows(True)
    expected = source[source["dataset"] == DATASET]
    assert len(table) == len(expected) and set(table["dataset"]) == {DATASET}  # peterson has no ceiling
    merged = table.merge(expected, on=["model", "metric"], suffixes=("", "_row"))
    np.testing.assert_allclose(merged["value"], merged["value_row"])
    np.testing.assert_allclose(merged["of_ceiling"], merged["value_row"] / merged["ceiling_high_row"])
    figure = report.figure(f"ceiling_{DATASET}").figure
    for ax, metric in zip(figure.axes, CEILINGS, strict=True):
        low, high = CEILINGS[metric]
        (band,) = [p for p in ax.patches if p.get_label() == "noise ceiling"]
        assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((low, high))  # axvspan's Rectangle


def test_relative_to_ceiling_divides_by_the_upper_bound(study):
    plain = analyze_study(study, n_bootstrap=0).figure(f"ceiling_{DATASET}").figure
    relative = analyze_study(study, n_bootstrap=0, relative_to_ceiling=True).figure(f"ceiling_{DATASET}").figure

    def bar_widths(ax):
        return sorted(p.get_width() for p in ax.patches if p.get_label() != "noise ceiling")

    for ax_plain, ax_relative, metric in zip(plain.axes, relative.axes, CEILINGS, strict=True):
        high = CEILINGS[metric][1]
        assert bar_widths(ax_relative) == pytest.approx([w / high for w in bar_widths(ax_plain)])
        assert "ceiling" in ax_relative.get_xlabel()


def test_a_study_without_ceilings_has_no_ceiling_section(tmp_path):
    report = analyze_study(write_study(tmp_path / "plain", rows(False)), n_bootstrap=0)
    assert "ceilings" not in [section.key for section in report.sections]
    assert not [f for f in report.figures() if f.name.startswith("ceiling")]


def test_cli_report_relative_to_ceiling(study, tmp_path, capsys):
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(study), "--out", str(out), "--n-bootstrap", "0", "--relative-to-ceiling"]) == 0
    html = out.read_text()
    assert "Noise ceilings of the human data" in html and "&lt;b&gt;model&lt;/b&gt;" in html
    assert (out.parent / "noise_ceilings.csv").is_file() and (out.parent / f"ceiling_{DATASET}.png").is_file()


# --------------------------------------------------------------------- a real study


@pytest.mark.slow
@pytest.mark.integration
def test_a_study_on_a_dataset_with_participants_stores_and_reports_ceilings(mirror, tmp_path):
    """`repalign run` with a real model on the real Peterson animals images, rated by simulated
    participants (the mirror has no per-participant data); the store's rows carry the
    ceilings the library computes, and the report draws them."""
    from repalign.alignment.ceiling import noise_ceiling
    from repalign.data.human import load_human

    (animals,) = load_human("peterson:animals")
    rng = np.random.default_rng(3)
    rows_i, cols_i = np.triu_indices(120, 1)
    lines = ["participant,i,j,value"]
    for p in range(4):
        ratings = np.clip(np.round(10 * (animals.similarity[rows_i, cols_i] + rng.normal(0, 0.15, len(rows_i)))), 0, 10)
        lines += [f"r{p},{animals.stimuli[i]},{animals.stimuli[j]},{v:g}" for i, j, v in zip(rows_i, cols_i, ratings)]
    folder = tmp_path / "raters"
    folder.mkdir()
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    (folder / "repalign.toml").write_text(
        f'name = "{DATASET}"\nstimuli = {list(animals.stimuli)!r}\nparticipant_similarity = "ratings.csv"\n'
        f'images = "{mirror / "peterson" / "images" / "animals"}"\nallow_outside = true\n'.replace("'", '"')
    )
    config = tmp_path / "study.toml"
    config.write_text(
        f'[study]\nname = "raters"\noutput = "{tmp_path / "study"}"\nreport = true\n\n'
        '[models]\ninclude = ["pixels:16", "pixels:8"]\n\n'
        f'[alignment]\nhuman = ["{folder}"]\nmetrics = ["pearson", "tau-a"]\nn_bootstrap = 20\n\n'
        '[robustness]\nsource = "none"\n'
    )
    assert main(["run", str(config)]) == 0
    results = load_study(tmp_path / "study").alignment
    (human,) = load_human(folder)
    assert len(results) == 4
    for _, row in results.iterrows():
        low, high = noise_ceiling(human.participants, row["metric"])
        assert (row["ceiling_low"], row["ceiling_high"]) == pytest.approx((low, high), abs=1e-12)
    assert (tmp_path / "study" / "report" / f"ceiling_{DATASET}.png").is_file()
