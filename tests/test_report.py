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


def write_study(path: Path, rows: pd.DataFrame, *, name: str = "synthetic <study>") -> Path:
    """Write rows as a study directory through the result store (one unit per model)."""
    store = StudyStore(path)
    with store.locked():
        store.write_config(f'[study]\nname = "{name}"\nseed = 0\n\n[robustness]\nsource = "none"\n')
        store.write_manifest(new_manifest())
        for i, (_, unit) in enumerate(rows.groupby("model", sort=False)):
            store.write_unit(f"unit{i:04d}", unit.assign(unit=f"unit{i:04d}"), fingerprint="synthetic")
    return store.path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rows = synthetic_rows()
    study = write_study(tmp_path_factory.mktemp("study") / "synthetic", rows)
    path = write_report(study, n_bootstrap=100)
    return study, path


# ---------------------------------------------------------------------------------------------
# files and content
# ---------------------------------------------------------------------------------------------
def test_report_writes_html_csv_png_pdf(report):
    study, path = report
    assert path == study / "report" / "report.html"
    folder = path.parent
    for stem in ("figure3", "figure4"):
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
        "figure3_correlations",
        "groups",
    ):
        assert (folder / f"{name}.csv").is_file(), name
    for file in (path, folder / "figure3.png", folder / "table1_group_robustness.csv"):
        assert file.stat().st_mode & 0o777 == 0o644, file  # shareable, unlike mkstemp's 0600
    text = path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 2
    assert all(base64.b64decode(image)[:4] == b"\x89PNG" for image in images)
    assert "http://" not in text and "https://" not in text  # self-contained


def test_every_model_name_and_error_is_escaped(report):
    _, path = report
    text = path.read_text()
    assert EVIL not in text and "<b>" not in text and "<img src=x" not in text
    assert html.escape(EVIL) in text
    assert "synthetic &lt;study&gt;" in text
    assert text.count("<script>") == 1  # only the report's own sorting script


def test_table2_equals_stats_called_directly(report):
    study, path = report
    loaded = load_study(study)
    alignment = tables.alignment_per_model(loaded.alignment)
    rob = tables.robustness_per_model(loaded.robustness)
    table = pd.read_csv(path.parent / "table2_robustness_correlations.csv")
    assert len(table) == 3 * 6
    row = table[(table["alignment"] == "z2 pearson") & (table["robustness"] == "imagenet-a top1")].iloc[0]
    z2 = stats.z2_transform(alignment["pearson"])
    direct = stats.correlation(z2, rob.loc[z2.index, "imagenet-a top1"])
    partial = stats.partial_correlation(z2, rob.loc[z2.index, "imagenet-a top1"], rob.loc[z2.index, "imagenet top1"])
    assert row["r"] == pytest.approx(direct["r"]) and row["p"] == pytest.approx(direct["p"])
    assert row["r_partial"] == pytest.approx(partial["r"]) and row["p_partial"] == pytest.approx(partial["p"])
    frame = pd.DataFrame({"x": z2, "y": rob.loc[z2.index, "imagenet-a top1"], "c": rob.loc[z2.index, "imagenet top1"]})
    with stats.correlations._pingouin_unrounded():
        ref = pingouin.partial_corr(data=frame, x="x", y="y", covar="c").iloc[0]
    assert row["r_partial"] == pytest.approx(ref["r"]) and row["p_partial"] == pytest.approx(ref["p_val"])
    assert (row["ci_partial_low"], row["ci_partial_high"]) == pytest.approx(tuple(ref["CI95"]))
    ci = scipy.stats.pearsonr(frame["x"], frame["y"]).confidence_interval()
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["r"] > 0.5  # the planted relation between z^2 alignment and ImageNet-A accuracy
    assert row["boot_low"] < row["r"] < row["boot_high"]


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


def test_report_shows_the_planted_u_shape(report):
    _, path = report
    table = pd.read_csv(path.parent / "u_shape_tests.csv")
    assert table.set_index("test")["shape"].to_dict() == {"quadratic": "U", "two-lines": "U"}


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
        "families",
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
            ["figure3.png", "figure4.png", "u_shape_tests.csv"],
            "This study has no few-shot results",
        ),
        (
            {},
            4,
            ["figure3.png", "table1_group_robustness.csv", "metric_correlations.csv"],
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
        ("timm:mobilenetv3_large_100@random", "mobilenetv3", "standard"),
        ("pixels:32", "pixels", "standard"),
    ],
)
def test_parse_architecture(model_id, family, variant):
    info = tables.parse_architecture(model_id)
    assert (info.family, info.variant) == (family, variant)


def test_parse_architecture_uses_timm_metadata():
    assert tables.parse_architecture("vit_base_patch16_224", pretrain="in21k").in21k
    assert tables.parse_architecture("some_net", pretrain="in1k-dist").distilled


def test_family_table_groups_by_family_and_variant():
    alignment = pd.DataFrame(
        {"pearson": [0.1, 0.3, 0.5, 0.7]},
        index=["timm:resnet50", "timm:resnet101", "deit_base_distilled_patch16_224", "deit_small_patch16_224"],
    )
    one_shot = pd.Series([0.2, 0.4, 0.6, 0.8], index=alignment.index)
    per_model, per_family = tables.family_table(alignment, one_shot)
    assert per_model["family"].tolist() == ["resnet", "resnet", "deit", "deit"]
    resnet = per_family[per_family["family"] == "resnet"].iloc[0]
    assert resnet["n_models"] == 2 and resnet["pearson"] == pytest.approx(0.2)
    assert resnet["one_shot_accuracy"] == pytest.approx(0.3)
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
  var out = document.createElement('pre'); out.id = 'browser-check';
  out.textContent = JSON.stringify({errors: window.__errors, images: images.length, broken: broken, sorted: sorted});
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


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("headless chromium is not installed (Debian: apt-get install chromium)")
    _, path = report
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
    assert check["images"] == 2 and check["broken"] == 0
    assert check["sorted"] is True
    assert EVIL in run.stdout.replace("&lt;", "<").replace("&gt;", ">")  # shown as text, not run

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
    assert len(table2) == 2 * 6 and table2["r_partial"].notna().all()
