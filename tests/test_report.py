"""The study report: tables, figures, the HTML file and `repalign report`, on synthetic studies
written with the real result store (repalign.store)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin
import pytest
import scipy.stats

from repalign import stats
from repalign.cli import main as cli_main
from repalign.errors import InputError
from repalign.report import analyze_study, captions, figures, tables
from repalign.report.html import write_report
from repalign.store import StudyStore, load_study, new_manifest

EVIL = "<script>alert(1)</script>"
ARCHS = [
    "resnet50",
    "resnet101",
    "deit_base_distilled_patch16_224",
    "vit_base_patch16_224_in21k",
    "efficientnet_b0",
    "ecaresnet50d_pruned",
    "convnext_tiny",
    "tf_efficientnet_b3_ns",
    "regnetx_002",
    "mobilenetv3_large_100",
]


def synthetic_rows(n_models: int = 30, *, seed: int = 0, robustness: bool = True, fewshot: bool = True) -> pd.DataFrame:
    """A study in the result schema with a planted U: 1-shot accuracy rises with z^2 alignment.

    The last model is named like a script tag; one failed and one skipped row are added.
    """
    rng = np.random.default_rng(seed)
    names = [f"timm:{ARCHS[i % len(ARCHS)]}" + (f"_v{i}" if i >= len(ARCHS) else "") for i in range(n_models)]
    names[-1] = EVIL
    base = rng.uniform(0.1, 0.7, n_models)
    z = (base - base.mean()) / base.std()
    rows = []
    for model, a, zi in zip(names, base, z):
        for dataset in ("peterson:animals", "peterson:fruits"):
            for metric, value in (("pearson", a), ("spearman", 0.95 * a + 0.02), ("triplet", 0.5 + a / 2)):
                rows.append(
                    dict(
                        model=model,
                        model_id=model,
                        stage="alignment",
                        dataset=dataset,
                        metric=metric,
                        similarity="cosine",
                        value=value + rng.normal(0, 0.01),
                        n=120,
                        status="ok",
                    )
                )
        if fewshot:
            for dataset in ("mnist", "fashion_mnist"):
                for head in ("linear", "mlp1"):
                    for shots in (1, 5, 10):
                        accuracy = 0.3 + 0.05 * np.log2(shots) + 0.05 * zi**2 + rng.normal(0, 0.02)
                        rows.append(
                            dict(
                                model=model,
                                model_id=model,
                                stage="fewshot",
                                dataset=dataset,
                                metric="accuracy",
                                head=head,
                                shots=shots,
                                value=accuracy,
                                n=5,
                                status="ok",
                            )
                        )
        if robustness:
            top1 = rng.uniform(70, 85)
            for dataset, offset in (
                ("imagenet", 0),
                ("imagenet-a", -50),
                ("imagenet-r", -35),
                ("imagenet-sketch", -45),
            ):
                rows.append(
                    dict(
                        model=model,
                        model_id=model,
                        stage="robustness",
                        dataset=dataset,
                        metric="top1",
                        value=top1 + offset + 4 * zi**2 + rng.normal(0, 1),
                        status="ok",
                    )
                )
                rows.append(
                    dict(
                        model=model,
                        model_id=model,
                        stage="robustness",
                        dataset=dataset,
                        metric="top5",
                        value=top1 + offset + 15 + rng.normal(0, 1),
                        status="ok",
                    )
                )
    if robustness:
        rows.append(
            dict(
                model="tflite:mobilenet_v2_1.0_224_quant",
                stage="robustness",
                status="skipped",
                error="not a timm model",
            )
        )
    rows.append(
        dict(
            model="timm:broken<b>",
            stage="alignment",
            dataset="peterson:animals",
            status="failed",
            error="RuntimeError: <img src=x onerror=alert(2)>",
        )
    )
    return pd.DataFrame(rows)


def write_study(path: Path, rows: pd.DataFrame, *, name: str = "synthetic <study>", config: str = "") -> Path:
    """Write rows as a study directory through the result store (one unit per model);
    ``config`` is TOML appended to the study's config (e.g. an [alignment] section)."""
    store = StudyStore(path)
    with store.locked():
        store.write_config(f'[study]\nname = "{name}"\nseed = 0\n\n[robustness]\nsource = "none"\n\n{config}')
        store.write_manifest(new_manifest())
        for i, (_, unit) in enumerate(rows.groupby("model", sort=False)):
            store.write_unit(f"unit{i:04d}", unit.assign(unit=f"unit{i:04d}"), fingerprint="synthetic")
    return store.path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rows = synthetic_rows()
    # "peterson" = six domains; the rows have two: the report must say so at the top
    study = write_study(tmp_path_factory.mktemp("study") / "synthetic", rows, config=PETERSON_CONFIG)
    path = write_report(study, n_bootstrap=100)
    return study, path


PETERSON_CONFIG = '[alignment]\nhuman = ["peterson"]\nsimilarity = "cosine"\n'


# ---------------------------------------------------------------------------------------------
# the independent oracle of correlations.csv: scipy and pingouin on the study's rows
# ---------------------------------------------------------------------------------------------
class Oracle:
    """Every correlation of the report recomputed from ``load_study(...).results`` alone:
    alignment averaged per model over the same (dataset, metric) pairs for every model, with
    one similarity function; z² = scipy's z-score (ddof=1) squared across the correlation's
    models; Pearson r, p and the Fisher CI from scipy; partial correlations from pingouin."""

    def __init__(self, results: pd.DataFrame, similarity: str = "cosine"):
        ok = results[results["status"] == "ok"]
        rows = ok[(ok["stage"] == "alignment") & (ok["similarity"] == similarity)]
        per = rows.groupby(["model", "dataset", "metric"])["value"].mean().reset_index()
        pairs = set(zip(per["dataset"], per["metric"]))
        complete = [m for m, g in per.groupby("model") if set(zip(g["dataset"], g["metric"])) == pairs]
        per = per[per["model"].isin(complete)]
        self.alignment = per.groupby(["model", "metric"])["value"].mean().unstack()
        robust = ok[(ok["stage"] == "robustness") & ok["weights_match"].fillna(True).astype(bool)]
        self.robustness = robust.groupby(["dataset", "metric", "model"])["value"].mean()
        self.fewshot = ok[ok["stage"] == "fewshot"].groupby(["dataset", "head", "shots", "model"])["value"].mean()
        self.top1 = self.robustness.loc[("imagenet", "top1")] if ("imagenet", "top1") in self.robustness else None

    def __call__(self, row) -> dict:
        if row["y_stage"] == "robustness":
            y = self.robustness.loc[(row["y_dataset"], row["y_metric"])]
        else:
            y = self.fewshot.loc[(row["y_dataset"], row["y_head"], int(row["y_shots"]))]
        x = self.alignment[row["x_metric"]].dropna()
        models = x.index.intersection(y.index)
        if row["covariate"] == "imagenet_top1":
            models = models.intersection(self.top1.index)
        x, y = x.loc[models].to_numpy(float), y.loc[models].to_numpy(float)
        if row["transform"] == "z2":
            x = scipy.stats.zscore(x, ddof=1) ** 2
        if row["covariate"] == "none":
            result = scipy.stats.pearsonr(x, y)
            ci = result.confidence_interval(0.95)
            return {"r": result.statistic, "ci_low": ci.low, "ci_high": ci.high, "p": result.pvalue, "n": len(x)}
        frame = pd.DataFrame({"x": x, "y": y, "c": self.top1.loc[models].to_numpy(float)})
        saved = pingouin.options.get("round.column.CI95")
        pingouin.options["round.column.CI95"] = None  # pingouin rounds its CI for display by default
        try:
            out = pingouin.partial_corr(data=frame, x="x", y="y", covar="c").iloc[0]
        finally:
            pingouin.options["round.column.CI95"] = saved
        low, high = out["CI95"]
        return {"r": out["r"], "ci_low": low, "ci_high": high, "p": out["p_val"], "n": int(out["n"])}


def assert_correlations_match_oracle(csv: pd.DataFrame, results: pd.DataFrame, similarity: str = "cosine") -> None:
    from repalign.report.correlations import CSV_COLUMNS

    assert tuple(csv.columns) == CSV_COLUMNS
    oracle = Oracle(results, similarity)
    for row in csv.to_dict(orient="records"):
        expected = oracle(row)
        assert row["n_models"] == expected["n"], row
        got = (row["r"], row["ci_low"], row["ci_high"], row["p"])
        assert got == pytest.approx((expected["r"], expected["ci_low"], expected["ci_high"], expected["p"]),
                                    rel=1e-9, abs=1e-12), row  # fmt: skip


# ---------------------------------------------------------------------------------------------
# files and content
# ---------------------------------------------------------------------------------------------
def test_report_writes_html_csv_png_pdf(report):
    study, path = report
    assert path == study / "report" / "report.html"
    folder = path.parent
    for stem in ("figure3_mnist", "figure3_fashion_mnist", "figure4"):
        assert (folder / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (folder / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    for name in (
        "table1_group_robustness",
        "table2_robustness_correlations",
        "metric_correlations",
        "family_summary",
        "family_models",
        "failures",
        "provenance",
        "u_shape_tests",
        "figure3_mnist_correlations",
        "figure3_fashion_mnist_group_curves",
        "figure4_correlations",
        "groups",
        "correlations",
        "raw_vs_z2",
        "alignment_per_domain",
        "fewshot_per_model",
    ):
        assert (folder / f"{name}.csv").is_file(), name
    for file in (path, folder / "figure4.png", folder / "table1_group_robustness.csv"):
        assert file.stat().st_mode & 0o777 == 0o644, file  # shareable, unlike mkstemp's 0600
    text = path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3 + 2  # figures 3 (two datasets) and 4, and alignment bars of the two domains
    for stem in ("alignment_bars_peterson_animals", "alignment_bars_peterson_fruits"):
        assert (folder / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(base64.b64decode(image)[:4] == b"\x89PNG" for image in images)
    assert "http://" not in text and "https://" not in text  # self-contained


def test_every_model_name_and_error_is_escaped(report):
    _, path = report
    text = path.read_text()
    assert EVIL not in text and "<b>" not in text and "<img src=x" not in text
    assert html.escape(EVIL) in text
    assert "synthetic &lt;study&gt;" in text
    assert text.count("<script>") == 1  # only the report's own sorting script


def test_table2_shows_raw_and_z2_side_by_side_with_the_partial_correlation(report):
    """Table 2 is a view of correlations.csv: raw and z² of each pair in adjacent rows, the
    partial correlation (covariate ImageNet top-1) in columns beside the plain one."""
    _, path = report
    table = pd.read_csv(path.parent / "table2_robustness_correlations.csv")
    long = pd.read_csv(path.parent / "correlations.csv")
    assert len(table) == 3 * 2 * 6  # metrics x (raw, z2) x OOD accuracies
    assert (table["transform"].iloc[::2] == "raw").all() and (table["transform"].iloc[1::2] == "z2").all()
    pairs = table[["x_metric", "y_dataset", "y_metric"]]
    pd.testing.assert_frame_equal(pairs.iloc[::2].reset_index(drop=True), pairs.iloc[1::2].reset_index(drop=True))
    keyed = long.set_index(["x_metric", "transform", "y_stage", "y_dataset", "y_metric", "covariate"])
    for row in table.itertuples():
        plain = keyed.loc[(row.x_metric, row.transform, "robustness", row.y_dataset, row.y_metric, "none")]
        partial = keyed.loc[(row.x_metric, row.transform, "robustness", row.y_dataset, row.y_metric, "imagenet_top1")]
        assert (row.r, row.ci_low, row.ci_high, row.p, row.n_models) == pytest.approx(
            (plain["r"], plain["ci_low"], plain["ci_high"], plain["p"], plain["n_models"])
        )
        assert (row.r_partial, row.ci_partial_low, row.ci_partial_high, row.p_partial, row.n_partial) == pytest.approx(
            (partial["r"], partial["ci_low"], partial["ci_high"], partial["p"], partial["n_models"])
        )
    planted = table[
        (table["x_metric"] == "pearson") & (table["y_dataset"] == "imagenet-a") & (table["y_metric"] == "top1")
    ]
    z2 = planted[planted["transform"] == "z2"].iloc[0]
    assert z2["r"] > 0.5  # the planted relation between z^2 alignment and ImageNet-A accuracy
    assert z2["boot_low"] < z2["r"] < z2["boot_high"]
    assert abs(planted[planted["transform"] == "raw"].iloc[0]["r"]) < z2["r"]  # a U, not a line


def test_table1_is_the_group_means(report):
    study, path = report
    loaded = load_study(study)
    alignment = tables.alignment_per_model(loaded.alignment)
    rob = tables.robustness_per_model(loaded.robustness)
    groups = stats.select_groups(alignment, k=5)
    table = pd.read_csv(path.parent / "table1_group_robustness.csv")
    assert table[["metric", "group"]].apply(tuple, axis=1).tolist() == [
        (m, g) for m in ("pearson", "spearman", "triplet") for g in ("high", "mid", "low")
    ]
    members = groups[(groups["metric"] == "triplet") & (groups["group"] == "low")]["model"]
    row = table[(table["metric"] == "triplet") & (table["group"] == "low")].iloc[0]
    assert row["imagenet-sketch top5"] == pytest.approx(rob.loc[members, "imagenet-sketch top5"].mean())
    assert row["n_models"] == 5 and row["n_missing"] == 0
    long = pd.read_csv(path.parent / "table1_bootstrap.csv")
    cell = long[
        (long["metric"] == "triplet") & (long["group"] == "low") & (long["robustness"] == "imagenet-sketch top5")
    ]
    assert cell["mean"].item() == pytest.approx(row["imagenet-sketch top5"])
    assert cell["boot_low"].item() <= cell["mean"].item() <= cell["boot_high"].item()
    assert len(long) == 9 * 6


def test_report_shows_the_planted_u_shape_on_each_dataset(report):
    _, path = report
    table = pd.read_csv(path.parent / "u_shape_tests.csv")
    for dataset in ("mnist", "fashion_mnist"):
        shapes = table[table["dataset"] == dataset].set_index("test")["shape"].to_dict()
        assert shapes == {"quadratic": "U", "two-lines": "U"}, dataset


def test_failures_and_provenance_tables(report):
    _, path = report
    failures = pd.read_csv(path.parent / "failures.csv")
    assert set(failures["status"]) == {"failed", "skipped"}
    assert "timm:broken<b>" in set(failures["model"])
    provenance = pd.read_csv(path.parent / "provenance.csv")
    keys = set(provenance["key"])
    assert {"study.name", "study.seed", "packages.pingouin", "config.resolved.toml"} <= keys
    assert any(k.startswith("results/*.parquet (32 files") for k in keys)


# ---------------------------------------------------------------------------------------------
# the paper's correlations: raw and z², with and without ImageNet top-1, every one in the CSV
# ---------------------------------------------------------------------------------------------
def test_correlations_csv_equals_scipy_and_pingouin_for_every_row(report):
    study, path = report
    csv = pd.read_csv(path.parent / "correlations.csv", dtype={"y_head": "string"})
    assert_correlations_match_oracle(csv, load_study(study).results)
    # both transforms and both covariates, for robustness and for every few-shot dataset
    assert set(csv["transform"]) == {"raw", "z2"} and set(csv["covariate"]) == {"none", "imagenet_top1"}
    assert set(csv["y_stage"]) == {"robustness", "fewshot"}
    assert set(csv.loc[csv["y_stage"] == "fewshot", "y_dataset"]) == {"mnist", "fashion_mnist"}
    robust = csv[csv["y_stage"] == "robustness"]
    assert robust["y_head"].isna().all() and robust["y_shots"].isna().all()
    assert set(robust["y_metric"]) == {"top1", "top5"}


def test_correlations_csv_has_one_row_per_correlation_shown(report):
    """Every correlation in Table 2 and the figures' tables is a row of correlations.csv, once."""
    from repalign.report.correlations import KEY

    _, path = report
    folder = path.parent
    csv = pd.read_csv(folder / "correlations.csv")
    assert not csv.duplicated(list(KEY)).any()
    shown = set()
    fixed = {
        "table2_robustness_correlations": {"y_stage": "robustness", "y_head": None, "y_shots": None},
        "figure3_mnist_correlations": {"y_stage": "fewshot", "y_dataset": "mnist", "y_metric": "accuracy"},
        "figure3_fashion_mnist_correlations": {
            "y_stage": "fewshot",
            "y_dataset": "fashion_mnist",
            "y_metric": "accuracy",
        },
        "figure4_correlations": {"y_stage": "fewshot", "y_head": "linear", "y_metric": "accuracy"},
    }
    for name, constants in fixed.items():
        table = pd.read_csv(folder / f"{name}.csv").assign(**constants)
        for row in table.to_dict(orient="records"):
            for covariate, r in (("none", row["r"]), ("imagenet_top1", row.get("r_partial"))):
                shots = None if pd.isna(row["y_shots"]) else int(row["y_shots"])
                key = (row["x_metric"], row["transform"], row["y_stage"], row["y_dataset"], row["y_head"], shots)
                shown.add((*key, row["y_metric"], covariate, round(float(r), 12)))
    listed = {
        (r["x_metric"], r["transform"], r["y_stage"], r["y_dataset"], None if pd.isna(r["y_head"]) else r["y_head"],
         None if pd.isna(r["y_shots"]) else int(r["y_shots"]), r["y_metric"], r["covariate"], round(float(r["r"]), 12))
        for r in csv.to_dict(orient="records")
    }  # fmt: skip
    assert shown == listed
    assert len(pd.read_csv(folder / "table2_robustness_correlations.csv")) * 2 == (csv["y_stage"] == "robustness").sum()


def test_partial_correlations_use_the_models_with_known_top1(tmp_path):
    """Synthetic store with known top-1 for only some models: the plain correlations use every
    model with the outcome, the partial ones only those with top-1 (z² across those), all
    equal to scipy / pingouin on the rows."""
    rows = synthetic_rows(14)
    rows = rows[rows["model"] != EVIL]
    no_top1 = ["timm:resnet50", "timm:efficientnet_b0", "timm:regnetx_002"]
    rows = rows[~(rows["model"].isin(no_top1) & (rows["dataset"] == "imagenet"))]
    study = write_study(tmp_path / "study", rows)
    data = analyze_study(study, n_bootstrap=0)
    csv = data.table("correlations").frame
    assert_correlations_match_oracle(csv, load_study(study).results)
    n = csv.groupby(["y_stage", "covariate"])["n_models"].unique().map(list).to_dict()
    assert n == {
        ("fewshot", "imagenet_top1"): [10],
        ("fewshot", "none"): [13],
        ("robustness", "imagenet_top1"): [10],
        ("robustness", "none"): [13],
    }


def test_raw_vs_z2_table_compares_mean_abs_r(report):
    study, path = report
    table = pd.read_csv(path.parent / "raw_vs_z2.csv")
    csv = pd.read_csv(path.parent / "correlations.csv")
    assert set(table["kind"]) == {"adversarial", "domain shift", "few-shot"}
    row = table[(table["kind"] == "domain shift") & (table["x_metric"] == "pearson") & (table["covariate"] == "none")]
    shift = csv[
        csv["y_dataset"].isin(["imagenet-r", "imagenet-sketch"]) & (csv["x_metric"] == "pearson")
        & (csv["covariate"] == "none")
    ]  # fmt: skip
    raw = shift[shift["transform"] == "raw"].set_index(["y_dataset", "y_metric"])["r"].abs()
    z2 = shift[shift["transform"] == "z2"].set_index(["y_dataset", "y_metric"])["r"].abs()
    assert row["n_pairs"].item() == 4
    assert row["mean_abs_r_raw"].item() == pytest.approx(raw.mean())
    assert row["mean_abs_r_z2"].item() == pytest.approx(z2.mean())
    assert row["z2_stronger"].item() == int((z2 > raw.loc[z2.index]).sum())
    assert row["paper"].item() == captions.PAPER_FINDINGS["domain shift"]


def test_z2_is_defined_where_it_is_first_used(report):
    study, path = report
    data = analyze_study(study, n_bootstrap=0)
    keys = [(s.key, p.key) for s in data.sections for p in s.paragraphs]
    assert keys == [("robustness", "z2-definition")]  # Table 2 is the first z² correlation
    text = path.read_text()
    definition = text.index('id="z2-definition"')
    assert definition < text.index('id="table2_robustness_correlations"')
    assert "z²(x) = ((x − mean) / sd)²" in text
    assert text.count('id="z2-definition"') == 1


# ---------------------------------------------------------------------------------------------
# domains, similarity functions, small studies
# ---------------------------------------------------------------------------------------------
def domain_rows(models, datasets, *, similarity="cosine", seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        [
            dict(model=m, model_id=m, stage="alignment", dataset=d, metric=k, similarity=similarity,
                 value=rng.uniform(0, 0.6), status="ok")
            for m in models
            for d in datasets
            for k in ("pearson", "spearman", "triplet")
        ]
    )  # fmt: skip


def test_missing_domains_are_said_at_the_top_and_every_average_names_its_domains(tmp_path):
    models = [f"pixels:{s}" for s in (8, 12, 16, 20, 24, 28, 32)]
    present = ["peterson:animals", "peterson:fruits", "peterson:vegetables"]
    rows = domain_rows(models, present)
    failed = pd.DataFrame(
        [
            dict(model=m, stage="alignment", dataset=f"peterson:{d}", status="failed",
                 error=f"MissingDataError: Images of Peterson domain '{d}' are not available (120 files missing)")
            for m in models
            for d in ("automobiles", "furniture", "various")
        ]
    )  # fmt: skip
    # one model lacks vegetables: it leaves the averages, which stay over the same 3 domains
    rows = rows[~((rows["model"] == "pixels:8") & (rows["dataset"] == "peterson:vegetables"))]
    study = write_study(tmp_path / "study", pd.concat([rows, failed], ignore_index=True), config=PETERSON_CONFIG)
    data = analyze_study(study, n_bootstrap=0)
    assert data.notices[0] == (
        "Alignment is averaged over 3 of the 6 domains of the study: animals, fruits, vegetables; missing images "
        "for automobiles, furniture, various; supply them as a user dataset (see docs/data.md)."
    )
    assert any("pixels:8" in note and "same domains" in note for note in data.section("overview").notes)
    domains = "peterson:animals, peterson:fruits, peterson:vegetables"
    for name in ("alignment_per_model", "groups", "metric_correlations", "family_models", "family_summary"):
        frame = data.table(name).frame
        assert (frame["domains"] == domains).all() and (frame["n_domains"] == 3).all(), name
    per_model = data.table("alignment_per_model").frame.set_index("model")
    assert "pixels:8" not in per_model.index and len(per_model) == 6
    expected = rows[(rows["model"] == "pixels:12") & (rows["metric"] == "triplet")]["value"].mean()
    assert per_model.loc["pixels:12", "triplet"] == pytest.approx(expected)
    # the per-domain table keeps every model and domain
    assert len(data.table("alignment_per_domain").frame) == 7 * 3 - 1
    text = write_report(study, n_bootstrap=0).read_text()
    assert text.index(html.escape(data.notices[0], quote=False)) < text.index("<nav>")


def test_similarity_sweep_shows_each_and_the_rank_agreement(tmp_path):
    models = [f"pixels:{s}" for s in (8, 12, 16, 20, 24, 28, 32)]
    rows = pd.concat(
        [domain_rows(models, ["peterson:animals", "peterson:fruits"], similarity=s, seed=i)
         for i, s in enumerate(("cosine", "dot", "neg_euclidean"))],
        ignore_index=True,
    )  # fmt: skip
    config = '[alignment]\nhuman = ["peterson:animals", "peterson:fruits"]\nsimilarity = ["dot", "cosine", "neg_euclidean"]\n'
    study = write_study(tmp_path / "study", rows, config=config)
    data = analyze_study(study, n_bootstrap=0)
    assert data.similarity == "dot"  # the first configured one
    per_model = data.table("alignment_per_model").frame.set_index("model")
    dot = rows[rows["similarity"] == "dot"].groupby(["model", "metric"])["value"].mean().unstack()
    assert per_model["pearson"].to_dict() == pytest.approx(dot["pearson"].to_dict())
    assert "the statistics use dot" in " ".join(data.notices)
    by_similarity = data.table("alignment_by_similarity").frame.set_index("model")
    assert {f"{s}/{m}" for s in ("cosine", "dot", "neg_euclidean") for m in ("pearson", "spearman", "triplet")} <= set(
        by_similarity.columns
    )
    sensitivity = data.table("similarity_sensitivity").frame
    assert len(sensitivity) == 3 * 3  # metrics x pairs
    means = rows.groupby(["similarity", "metric", "model"])["value"].mean()
    for row in sensitivity.to_dict(orient="records"):
        a, b = means.loc[(row["similarity_a"], row["metric"])], means.loc[(row["similarity_b"], row["metric"])]
        expected = scipy.stats.spearmanr(a, b.loc[a.index])
        assert row["spearman_rho"] == pytest.approx(expected.statistic) and row["p"] == pytest.approx(expected.pvalue)
        assert row["n_models"] == 7


def test_too_few_models_still_show_per_model_tables_and_say_how_to_get_statistics(tmp_path):
    study = write_study(tmp_path / "study", synthetic_rows(4))
    data = analyze_study(study, n_bootstrap=0)
    per_domain = data.table("alignment_per_domain").frame
    assert len(per_domain) == 4 * 2 and {"pearson", "spearman", "triplet"} <= set(per_domain.columns)
    fewshot = data.table("fewshot_per_model").frame
    assert len(fewshot) == 4 * 2 * 2 and {"1-shot", "5-shot", "10-shot"} <= set(fewshot.columns)
    row = fewshot[(fewshot["model"] == "timm:resnet50") & (fewshot["dataset"] == "mnist") & (fewshot["head"] == "mlp1")]
    rows = load_study(study).fewshot
    expected = rows[(rows["model"] == "timm:resnet50") & (rows["dataset"] == "mnist") & (rows["head"] == "mlp1")]
    assert row["5-shot"].item() == pytest.approx(expected[expected["shots"] == 5]["value"].item())
    notes = " ".join(data.section("fewshot").notes)
    assert "Statistics need at least 6 models with alignment scores; this study has 4." in notes
    assert "[models] include" in notes and "repalign run CONFIG" in notes


def test_scatter_points_are_labelled_on_hover_where_the_png_draws_them(report, tmp_path):
    """The HTML overlay's circles sit on the PNG's markers: the pixel under each is not background."""
    from PIL import Image

    from repalign.report.html import hover_view

    study, path = report
    data = analyze_study(study, n_bootstrap=0)
    figure = data.figure("figure4")
    png = figures.save_figure(figure.figure, tmp_path, "figure4")["png"]
    view = hover_view(figure)
    assert len(view.points) == 2 * 30  # every model with accuracy, on each dataset's panel
    assert any(title.startswith(EVIL + ":") for title, _, _ in view.points)
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    height, width = pixels.shape[:2]
    assert width / height == pytest.approx(view.width / view.height, rel=0.01)
    for title, x, y in view.points:
        px, py = int(x / view.width * width), int(y / view.height * height)
        patch = pixels[max(py - 1, 0) : py + 2, max(px - 1, 0) : px + 2].reshape(-1, 3)
        assert patch.min(axis=1).min() < 220, title  # a marker (or what covers it), not white background
    text = path.read_text()
    assert '<svg class="hover"' in text and f"<title>{html.escape(EVIL, quote=False)}: alignment" in text


# ---------------------------------------------------------------------------------------------
# analyses are data; the templates escape; captions quote the paper from one place
# ---------------------------------------------------------------------------------------------
def test_analysis_is_plain_data_and_the_template_escapes_it(tmp_path):
    rows = synthetic_rows(8, fewshot=False)
    rows["model"] = rows["model"].replace({"timm:resnet50": "[red]x"})
    study = write_study(tmp_path / "study", rows, name="<b>bold</b> [bold]y")
    data = analyze_study(study, n_bootstrap=0)
    assert [s.key for s in data.sections] == [
        "overview",
        "metrics",
        "robustness",
        "fewshot",
        "raw_vs_z2",
        "families",
        "correlations",
        "failures",
        "provenance",
    ]
    assert data.name == "<b>bold</b> [bold]y" and data.n_models == 10
    # the data holds the study's text as it is; escaping is the renderer's job
    assert {EVIL, "[red]x"} <= set(data.table("alignment_per_model").frame["model"])
    assert "timm:broken<b>" in set(data.table("failures").frame["model"])
    assert "This study has no few-shot results" in " ".join(data.section("fewshot").notes)

    path = write_report(study, n_bootstrap=0)
    text = path.read_text()
    assert EVIL not in text and "<b>" not in text and "<img src=x" not in text
    assert '<td class="t">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in text
    assert '<td class="t">[red]x</td>' in text
    assert "<h1>repalign report: &lt;b&gt;bold&lt;/b&gt; [bold]y</h1>" in text
    assert "RuntimeError: &lt;img src=x onerror=alert(2)&gt;" in text
    assert text.count("<script>") == 1
    # what the HTML writer wrote is what analyze_study returns
    written = pd.read_csv(path.parent / "table2_robustness_correlations.csv")
    pd.testing.assert_frame_equal(written, data.table("table2_robustness_correlations").frame, check_dtype=False)
    with pytest.raises(InputError, match="No table 'figure3'"):
        data.table("figure3")


def test_captions_quote_the_paper_from_paper_reference(report):
    _, path = report
    reference = captions.PAPER_REFERENCE
    text = captions.caption("metric_correlations")
    expected = (
        f"Sucholutsky & Griffiths (2023) report {reference['corr_spearman_triplet'].value:g} for spearman vs "
        f"triplet and {reference['corr_pearson_triplet'].value:g} for pearson vs triplet."
    )
    assert text.endswith(expected)
    assert html.escape(expected, quote=False) in path.read_text()
    for name, template in captions.CAPTIONS.items():  # no published number typed into a caption
        assert not re.search(r"\d\.\d", template), name
    with pytest.raises(InputError, match="No caption named 'tabel1'"):
        captions.caption("tabel1")


# ---------------------------------------------------------------------------------------------
# missing stages leave sections out with a note
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "n_models", "absent", "note"),
    [
        (
            {"robustness": False},
            20,
            ["table1_group_robustness.csv", "table2_robustness_correlations.csv"],
            "This study has no robustness results",
        ),
        (
            {"fewshot": False},
            20,
            ["figure3_mnist.png", "figure4.png", "u_shape_tests.csv"],
            "This study has no few-shot results",
        ),
        (
            {},
            4,
            ["figure3_mnist.png", "table1_group_robustness.csv", "metric_correlations.csv"],
            "Statistics need at least 6 models",
        ),
    ],
)
def test_missing_stages_are_noted_not_fatal(tmp_path, kwargs, n_models, absent, note):
    study = write_study(tmp_path / "study", synthetic_rows(n_models, **kwargs))
    path = write_report(study, n_bootstrap=0)
    text = path.read_text()
    assert note in text
    for name in absent:
        assert not (path.parent / name).exists(), name
    assert (path.parent / "provenance.csv").is_file()


def test_study_whose_models_all_lack_robustness_names_them(tmp_path):
    rows = synthetic_rows(8, robustness=False, fewshot=False)
    skipped = pd.DataFrame(
        [
            dict(model=m, stage="robustness", status="skipped", error="not a timm model")
            for m in ("pixels", "tflite:mobilenet_v2_1.0_224_quant")
        ]
    )
    study = write_study(tmp_path / "study", pd.concat([rows, skipped], ignore_index=True))
    text = write_report(study, n_bootstrap=0).read_text()
    assert "No model of this study has published robustness results: pixels, tflite:mobilenet_v2_1.0_224_quant." in text
    assert "use only models with timm&#39;s published ImageNet-A/R/Sketch results; these models have none" in text
    assert "add timm models to [models] include" in text


def test_small_study_uses_smaller_groups(tmp_path):
    study = write_study(tmp_path / "study", synthetic_rows(9, fewshot=False))
    path = write_report(study, n_bootstrap=0)
    assert "the high/mid/low groups have 3 models each" in path.read_text()
    assert set(pd.read_csv(path.parent / "table1_group_robustness.csv")["n_models"]) == {3}


def test_study_without_rows_still_reports(tmp_path):
    store = StudyStore(tmp_path / "empty")
    with store.locked():
        store.write_config('[study]\nname = "empty"\n')
    path = write_report(store.path, out=tmp_path / "out" / "empty.html")
    assert path.is_file() and "This study has no alignment results." in path.read_text()


def test_write_report_rejects_bad_targets(tmp_path, report):
    study, _ = report
    from repalign.errors import MissingDataError

    with pytest.raises(InputError, match="must name an .html file"):
        write_report(study, out=tmp_path / "report.txt")
    with pytest.raises(MissingDataError, match="No study directory"):
        write_report(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_report_writes_the_file(tmp_path, report, capsys):
    study, _ = report
    out = tmp_path / "cli" / "r.html"
    assert cli_main(["report", str(study), "--out", str(out), "--n-bootstrap", "0"]) == 0
    assert out.is_file() and (out.parent / "figure4.pdf").is_file()
    assert capsys.readouterr().out.strip() == str(out)


def test_cli_report_bad_input_exits_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repalign: error: No study directory") and "Traceback" not in err
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["report", str(tmp_path), "--n-bootstrap", "-1"])
    assert excinfo.value.code == 2


# ---------------------------------------------------------------------------------------------
# family view and theory overlay
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model_id", "family", "variant"),
    [
        ("timm:resnet50.a1_in1k", "resnet", "standard"),
        ("timm:deit_base_distilled_patch16_224.fb_in1k", "deit", "distilled"),
        ("timm:levit_128.fb_dist_in1k", "levit", "distilled"),
        ("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit", "in21k"),
        ("swin_base_patch4_window7_224_in22k", "swin", "in21k"),
        ("resnetv2_50x1_bitm", "resnetv2", "in21k"),
        ("ecaresnet50d_pruned", "ecaresnet", "pruned"),
        ("tf_efficientnet_b0_ns", "efficientnet", "standard"),
        ("gluon_resnet50_v1b", "resnet", "standard"),
        ("efficientnetv2_rw_s", "efficientnetv2", "standard"),
        ("res2net50_26w_4s", "res2net", "standard"),
        ("timm:mobilenetv3_large_100@random", "mobilenetv3", "random"),
        ("pixels:32", "pixels", "standard"),
    ],
)
def test_parse_architecture(model_id, family, variant):
    info = tables.parse_architecture(model_id)
    assert (info.family, info.variant) == (family, variant)


def test_parse_architecture_uses_timm_metadata():
    assert tables.parse_architecture("vit_base_patch16_224", pretrain="in21k").in21k
    assert tables.parse_architecture("some_net", pretrain="in1k-dist").distilled


@pytest.mark.parametrize(
    ("name", "family", "arch", "variant"),
    [
        # non-timm sources are their own family: their names do not follow timm's naming
        ("tflite:mobilenet_v1_0.25_128_quant", "tflite", "mobilenet_v1_0.25_128_quant", "standard"),
        ("tflite:mobilenet_v1_1.0_224_quant", "tflite", "mobilenet_v1_1.0_224_quant", "standard"),  # unregistered
        ("cifar_resnet:resnet20", "cifar_resnet", "resnet20", "standard"),
        ("pixels:16", "pixels", "16", "standard"),
        ("pixels", "pixels", "32", "standard"),
        ("onnx:/models/net.onnx", "onnx", "/models/net.onnx", "standard"),
        # timm names are resolved, then parsed
        ("timm:ssl_resnet50", "resnet", "resnet50", "standard"),
        ("timm:resnet18@random", "resnet", "resnet18", "random"),
        ("timm:vit_base_patch16_224_in21k", "vit", "vit_base_patch16_224", "in21k"),
        ("timm:deit_base_distilled_patch16_224", "deit", "deit_base_distilled_patch16_224", "distilled"),
    ],
)
def test_model_architecture_parses_timm_names_only(name, family, arch, variant):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    info = tables.model_architecture(name)
    assert (info.family, info.arch, info.variant) == (family, arch, variant)


def test_family_table_groups_by_family_and_variant():
    alignment = pd.DataFrame(
        {"pearson": [0.1, 0.3, 0.5, 0.7, 0.2]},
        index=[
            "timm:resnet50",
            "timm:resnet101",
            "deit_base_distilled_patch16_224",
            "deit_small_patch16_224",
            "tflite:mobilenet_v1_1.0_224_quant",
        ],
    )
    fewshot = pd.DataFrame({"1-shot mnist (linear)": [0.2, 0.4, 0.6, 0.8, 0.1]}, index=alignment.index)
    per_model, per_family = tables.family_table(alignment, fewshot)
    assert per_model["family"].tolist() == ["resnet", "resnet", "deit", "deit", "tflite"]
    resnet = per_family[per_family["family"] == "resnet"].iloc[0]
    assert resnet["n_models"] == 2 and resnet["pearson"] == pytest.approx(0.2)
    assert resnet["1-shot mnist (linear)"] == pytest.approx(0.3)
    assert set(per_family[per_family["family"] == "deit"]["variant"]) == {"distilled", "standard"}


def test_theory_overlay_is_the_least_squares_fit_of_capacity():
    pytest.importorskip("repalign.theory.capacity")
    from repalign.theory.capacity import channel_capacity

    triplet = pd.Series([0.55, 0.6, 0.7, 0.8, 0.9], index=list("abcde"))
    scatter = pd.DataFrame(
        {"model": list("abcde"), "alignment": [0.1, 0.2, 0.3, 0.4, 0.5], "accuracy": [0.30, 0.33, 0.35, 0.41, 0.50]}
    )
    overlay = figures.theory_overlay(scatter, triplet)
    shape = channel_capacity(1 - triplet.to_numpy())
    b, a = np.polyfit(shape, scatter["accuracy"], 1)
    np.testing.assert_allclose(overlay["predicted"], a + b * shape)
    assert overlay.attrs["b"] == pytest.approx(b)


# ---------------------------------------------------------------------------------------------
# headless browser
# ---------------------------------------------------------------------------------------------
_PROBE = """<script>
window.__errors = [];
window.onerror = function (message) { window.__errors.push(String(message)); };
window.addEventListener('securitypolicyviolation', function (e) { window.__errors.push('CSP: ' + e.violatedDirective); });
(function () { var original = console.error;
  console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); }; })();
window.alert = function (x) { window.__errors.push('alert: ' + x); };
function visibleText(id) {
  var el = document.getElementById(id);
  if (!el) { return null; }
  var rect = el.getBoundingClientRect(), style = window.getComputedStyle(el);
  var shown = rect.width > 0 && rect.height > 0 && style.visibility !== 'hidden' && style.display !== 'none';
  return shown ? el.textContent : null;
}
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img.report-figure'), broken = 0;
  images.forEach(function (img) { if (!(img.complete && img.naturalWidth > 0)) { broken++; } });
  var table = document.getElementById('alignment_per_model'), sorted = null;
  if (table) {
    var header = table.querySelectorAll('th')[1];
    header.click(); header.click();  // descending by the first metric
    var values = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.cells[1].getAttribute('data-v')); });
    sorted = values.every(function (v, i) { return i === 0 || values[i - 1] >= v; }) && header.getAttribute('data-order') === 'desc';
  }
  // every hover circle lies over its image and is what the pointer finds there
  var circles = document.querySelectorAll('svg.hover circle'), hits = 0, inside = 0;
  circles.forEach(function (circle) {
    var img = circle.closest('.figwrap').querySelector('img').getBoundingClientRect();
    circle.scrollIntoView({block: 'center', inline: 'center'});
    var rect = circle.getBoundingClientRect(), x = rect.left + rect.width / 2, y = rect.top + rect.height / 2;
    img = circle.closest('.figwrap').querySelector('img').getBoundingClientRect();
    if (x > img.left && x < img.right && y > img.top && y < img.bottom) { inside++; }
    var found = document.elementFromPoint(x, y);
    if (found && found.tagName.toLowerCase() === 'circle') { hits++; }
  });
  var out = document.createElement('pre'); out.id = 'browser-check';
  out.textContent = JSON.stringify({errors: window.__errors, images: images.length, broken: broken, sorted: sorted,
    z2: visibleText('z2-definition'), notices: visibleText('notices'), circles: circles.length, inside: inside, hits: hits});
  document.body.appendChild(out);
});
</script>"""

_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_check(path: Path, tmp_path: Path) -> tuple[dict, str]:
    """Load the report in headless chromium with the probe: (what the probe found, the DOM)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("headless chromium is not installed (Debian: apt-get install chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("<head>", "<head>" + _PROBE, 1))
    run = subprocess.run(
        [
            browser,
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile1'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="browser-check">(.*?)</pre>', run.stdout, re.S)
    assert match, f"chromium produced no check result (rc {run.returncode}): {run.stderr[-2000:]}"
    check = json.loads(html.unescape(match.group(1)))
    console_errors = [
        line for line in run.stderr.splitlines() if ":CONSOLE" in line and ("Uncaught" in line or "rror" in line)
    ]
    assert check["errors"] == [] and console_errors == [], (check, console_errors)
    assert check["broken"] == 0 and check["images"] > 0
    assert check["sorted"] is True
    assert check["z2"] and "z²(x) = ((x − mean) / sd)²" in check["z2"]
    assert check["circles"] > 0 and check["inside"] == check["circles"]
    # circles of nearby models overlap each other; each centre still finds a circle
    assert check["hits"] == check["circles"]
    return check, run.stdout


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    _, path = report
    check, dom = browser_check(path, tmp_path)
    assert check["images"] == 3 + 2  # figures 3 and 4, and the alignment bars of two domains
    assert (
        check["notices"]
        .strip()
        .startswith("Alignment is averaged over 2 of the 6 domains of the study: animals, fruits;")
    )
    assert check["circles"] == 2 * 30
    assert EVIL in dom.replace("&lt;", "<").replace("&gt;", ">")  # shown as text, not run
    browser = _chromium()

    shot = path.parent / "screenshot.png"  # kept next to the report for a human look
    subprocess.run(
        [
            browser,
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1280,3000",
            f"--screenshot={shot}",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 3000)
        assert np.asarray(image.convert("L"), dtype=float).std() > 10  # not a blank page


@pytest.mark.integration
def test_report_on_real_published_robustness_numbers(tmp_path, mirror):
    """Robustness rows from the real 2022 timm snapshot (via to_result_rows, as the pipeline
    writes them) flow into Tables 1 and 2 unchanged."""
    from repalign.robustness import robustness_table, to_result_rows

    names = [f"timm:{line.strip()}" for line in (mirror / "paper_models.txt").read_text().splitlines() if line.strip()]
    names = names[::12]
    names.append("tflite:mobilenet_v2_1.0_224_quant")
    published = robustness_table(names)
    robust_rows = to_result_rows(published)
    rng = np.random.default_rng(3)
    alignment_rows = pd.DataFrame(
        [
            dict(model=m, stage="alignment", dataset=d, metric=k, similarity="cosine", value=rng.uniform(), status="ok")
            for m in names
            for d in ("peterson:animals", "peterson:fruits")
            for k in ("pearson", "triplet")
        ]
    )
    study = write_study(tmp_path / "study", pd.concat([alignment_rows, robust_rows], ignore_index=True))
    path = write_report(study, n_bootstrap=0)
    text = path.read_text()
    assert "No published robustness results for: tflite:mobilenet_v2_1.0_224_quant." in text
    table1 = pd.read_csv(path.parent / "table1_group_robustness.csv")
    groups = pd.read_csv(path.parent / "groups.csv")
    members = groups[(groups["metric"] == "pearson") & (groups["group"] == "high")]["model"]
    value = published.set_index(["model", "dataset", "metric"])["value"]
    expected = np.mean([value[(m, "imagenet-r", "top1")] for m in members if m in set(published["model"])])
    row = table1[(table1["metric"] == "pearson") & (table1["group"] == "high")].iloc[0]
    assert row["imagenet-r top1"] == pytest.approx(expected)
    table2 = pd.read_csv(path.parent / "table2_robustness_correlations.csv")
    assert len(table2) == 2 * 2 * 6 and table2["r_partial"].notna().all()
    # the published ImageNet top-1 as the covariate: every correlation equals scipy / pingouin
    csv = pd.read_csv(path.parent / "correlations.csv", dtype={"y_head": "string"})
    assert set(csv["covariate"]) == {"none", "imagenet_top1"}
    assert_correlations_match_oracle(csv, load_study(study).results)


# ---------------------------------------------------------------------------------------------
# a real study: offline models through alignment and few-shot, then the report
# ---------------------------------------------------------------------------------------------
REAL_MODELS = (
    "pixels:8",
    "pixels:16",
    "cifar_resnet:resnet20",
    "cifar_resnet:resnet32",
    "cifar_resnet:resnet44",
    "cifar_resnet:resnet56",
    "tflite:mobilenet_v1_0.25_128_quant",
)
REAL_CONFIG = """
[study]
name = "report-real"
output = "{output}"
seed = 0
report = false

[models]
include = [{models}]

[alignment]
# automobiles has no registered images: its rows fail, and the report must say so
human = ["peterson:animals", "peterson:fruits", "peterson:vegetables", "peterson:automobiles"]
n_bootstrap = 0

[fewshot]
datasets = ["mnist", "fashion_mnist"]
shots = [1, 5]
heads = ["linear"]
seeds = 2
max_eval_per_class = 5

[robustness]
source = "timm-2022-07-27"

[execution]
executor = "local"
jobs = 2
threads = 1
"""


@pytest.fixture(scope="module")
def real_report(tmp_path_factory, mirror):
    from repalign.study.config import parse_config
    from repalign.study.run import run_study

    out = tmp_path_factory.mktemp("real") / "study"
    models = ", ".join(f'"{m}"' for m in REAL_MODELS)
    run_study(parse_config(REAL_CONFIG.format(output=out, models=models)), live=False)
    return out, write_report(out, n_bootstrap=50)


@pytest.mark.integration
@pytest.mark.slow
def test_real_study_correlations_equal_scipy_for_every_row(real_report):
    study, path = real_report
    csv = pd.read_csv(path.parent / "correlations.csv", dtype={"y_head": "string"})
    assert_correlations_match_oracle(csv, load_study(study).results)
    assert set(csv["covariate"]) == {"none"}  # offline models have no published ImageNet top-1
    assert set(csv["y_stage"]) == {"fewshot"} and set(csv["y_dataset"]) == {"mnist", "fashion_mnist"}
    assert set(csv["n_models"]) == {len(REAL_MODELS)}
    # the plain correlation of 1-shot accuracy with Pearson alignment is shown beside the z² one
    one_shot = csv[(csv["x_metric"] == "pearson") & (csv["y_shots"] == 1) & (csv["y_dataset"] == "mnist")]
    assert sorted(one_shot["transform"]) == ["raw", "z2"]


@pytest.mark.integration
@pytest.mark.slow
def test_real_study_report_is_per_dataset_and_says_what_is_missing(real_report):
    study, path = real_report
    folder = path.parent
    for stem in ("figure3_mnist", "figure3_fashion_mnist", "figure4"):
        assert (folder / f"{stem}.png").is_file() and (folder / f"{stem}.pdf").is_file()
    data = analyze_study(study, n_bootstrap=0)
    assert data.notices[0] == (
        "Alignment is averaged over 3 of the 4 domains of the study: animals, fruits, vegetables; missing images "
        "for automobiles; supply them as a user dataset (see docs/data.md)."
    )
    robustness = " ".join(data.section("robustness").notes)
    assert "No model of this study has published robustness results" in robustness
    assert "these models have none" in robustness
    fewshot = " ".join(data.section("fewshot").notes)
    assert "use cifar100, which this study does not have" in fewshot
    assert "No partial correlations controlling for ImageNet top-1" in fewshot
    families = data.table("family_models").frame.set_index("model")["family"].to_dict()
    assert families == {
        "cifar_resnet:resnet20": "cifar_resnet",
        "cifar_resnet:resnet32": "cifar_resnet",
        "cifar_resnet:resnet44": "cifar_resnet",
        "cifar_resnet:resnet56": "cifar_resnet",
        "pixels:16": "pixels",
        "pixels:8": "pixels",
        "tflite:mobilenet_v1_0.25_128_quant": "tflite",
    }
    scatter = data.table("figure4_scatter").frame
    assert set(scatter["dataset"]) == {"mnist", "fashion_mnist"} and (scatter["n_domains"] == 3).all()


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.slow
def test_real_report_renders_in_headless_chromium(real_report, tmp_path):
    _, path = real_report
    check, _ = browser_check(path, tmp_path)
    # figures 3 and 4, and the alignment bars of the three domains with images
    assert check["images"] == 3 + 3 and check["circles"] == 2 * len(REAL_MODELS)
    assert check["notices"].strip().startswith("Alignment is averaged over 3 of the 4 domains of the study")
