"""The model registry: name parsing, resolution errors, globs, presets, listing and the
`repalign models` CLI. Fast: nothing here builds a torch network."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from repalign.errors import InputError, UnknownNameError
from repalign.models import (
    OFFLINE_PRESET,
    PENULTIMATE,
    describe_model,
    expand_model_patterns,
    list_models,
    load_model,
    parse_model_name,
    resolve_model,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("timm:resnet50", ("timm", "resnet50", None, None)),
        ("timm:resnet50.a1_in1k", ("timm", "resnet50.a1_in1k", None, None)),
        ("timm:resnet18@random", ("timm", "resnet18", "random", 0)),
        ("timm:resnet18@random:7", ("timm", "resnet18", "random", 7)),
        ("cifar_resnet:resnet20@random:2", ("cifar_resnet", "resnet20", "random", 2)),
        ("tflite:mobilenet_v2_1.0_224_quant", ("tflite", "mobilenet_v2_1.0_224_quant", None, None)),
        ("pixels", ("pixels", "", None, None)),
        ("pixels:16", ("pixels", "16", None, None)),
        ("onnx:/tmp/a@b.onnx", ("onnx", "/tmp/a@b.onnx", None, None)),  # '@' in paths is not a variant
        ("  timm:resnet50 ", ("timm", "resnet50", None, None)),
    ],
)
def test_parse_model_name(name, expected):
    assert parse_model_name(name) == expected


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("", InputError, "non-empty"),
        ("resnet50", UnknownNameError, r"has no source.*timm:resnet50"),
        ("foo:bar", UnknownNameError, r"Unknown model source 'foo'"),
        ("timm:resnet18@rand", InputError, r"Unknown model variant '@rand'"),
        ("timm:resnet18@random:x", InputError, r"@random:SEED"),
        ("timm:", InputError, "names no model"),
    ],
)
def test_parse_model_name_errors(name, error, match):
    with pytest.raises(error, match=match):
        parse_model_name(name)


@pytest.mark.parametrize(
    "name, match",
    [
        ("timm:resnt50", r"Unknown timm model 'resnt50'. Did you mean: resnet50"),
        ("tflite:mobilenet_v2", r"Unknown TFLite model 'mobilenet_v2'. Did you mean: mobilenet_v2_1.0_224_quant"),
        ("cifar_resnet:resnet21", r"Unknown CIFAR ResNet 'resnet21'. Did you mean: .*resnet20"),
        ("torchvision:resnet81", r"Unknown torchvision model 'resnet81'. Did you mean: .*resnet18"),
        ("torchvision:resnet18.IMAGENET1K_V9", r"Unknown weights of torchvision:resnet18.*IMAGENET1K_V1"),
        ("timm:resnet50.a1_in1kk", r"Unknown pretrained tag 'a1_in1kk' of timm:resnet50.*a1_in1k"),
        ("timm:resnet50.nonsense", r"Valid tags: .*a1_in1k"),
    ],
)
def test_unknown_names_list_closest_valid_names(name, match):
    with pytest.raises(UnknownNameError, match=match):
        resolve_model(name)


def test_unknown_name_error_is_a_key_error_with_a_plain_message():
    with pytest.raises(KeyError) as info:
        resolve_model("timm:resnt50")
    assert str(info.value).startswith("Unknown timm model")


def test_legacy_timm_name_resolves_through_the_deprecation_map():
    spec = resolve_model("timm:ssl_resnet50")
    assert spec.resolved_id == "timm:resnet50.fb_ssl_yfcc100m_ft_in1k"
    assert spec.source == "timm" and spec.arch == "resnet50.fb_ssl_yfcc100m_ft_in1k"
    assert spec.extra["legacy_name"] == "ssl_resnet50"
    assert spec.name == "timm:ssl_resnet50"


def test_random_variants_carry_the_seed_in_their_id():
    assert resolve_model("timm:resnet18@random").resolved_id == "timm:resnet18.tv_in1k@random:0"
    assert resolve_model("timm:resnet18@random:3").seed == 3
    assert resolve_model("cifar_resnet:resnet20@random:1").resolved_id == "cifar_resnet:resnet20@random:1"


def test_pixels_resolution_and_errors():
    assert resolve_model("pixels").resolved_id == "pixels:32"
    assert resolve_model("pixels:8").resolved_id == "pixels:8"
    with pytest.raises(InputError, match="pixels:SIZE"):
        resolve_model("pixels:big")


def test_offline_preset_and_globs():
    assert expand_model_patterns(["offline"]) == list(OFFLINE_PRESET)
    tflite = expand_model_patterns(["tflite:*"])
    assert len(tflite) == 6 and all(n.startswith("tflite:") for n in tflite)
    assert expand_model_patterns(["cifar_resnet:resnet[23]*"]) == ["cifar_resnet:resnet20", "cifar_resnet:resnet32"]
    # a glob without a source matches the part after it, across sources
    assert "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor" in expand_model_patterns(["*embedding*"])


def test_expand_keeps_order_drops_repeats_and_excludes():
    names = expand_model_patterns(
        ["pixels", "tflite:*", "pixels", "cifar_resnet:resnet20"], exclude=["*mobilenet_v1*", "pixels"]
    )
    assert names == [
        "tflite:mobilenet_v2_1.0_224_quant",
        "tflite:tf2_mobilenet_v2_1.0_224_ptq",
        "cifar_resnet:resnet20",
    ]
    assert expand_model_patterns("offline", exclude="offline") == []


def test_expand_rejects_bad_names_and_empty_globs():
    with pytest.raises(UnknownNameError, match="Did you mean: resnet50"):
        expand_model_patterns(["timm:resnt50"])
    with pytest.raises(UnknownNameError, match="matches no model"):
        expand_model_patterns(["tflite:*nothing*"])
    with pytest.raises(UnknownNameError, match="Unknown model source 'x'"):
        expand_model_patterns(["x:y"])


@pytest.mark.integration
def test_paper_preset_has_the_490_study_models(mirror):
    names = expand_model_patterns(["paper"])
    assert len(names) == 490 and len(set(names)) == 490
    lines = (mirror / "paper_models.txt").read_text().splitlines()
    expected = [f"timm:{line.strip()}" for line in lines if line.strip()]
    assert names == expected


@pytest.mark.integration
def test_list_models_reports_ids_and_weight_status(mirror):
    table = list_models(source="tflite")
    assert list(table.columns) == ["name", "source", "resolved_id", "weights", "note"]
    assert len(table) == 6
    assert set(table["weights"]) <= {"cached", "local"}  # the mirror holds them
    offline = list_models("offline").set_index("name")
    assert offline.loc["pixels", "weights"] == "builtin"
    assert offline.loc["timm:resnet18@random", "weights"] == "random"
    assert offline.loc["timm:resnet18@random", "resolved_id"] == "timm:resnet18.tv_in1k@random:0"


def test_list_models_single_name_and_errors():
    row = list_models("timm:ssl_resnet50").iloc[0]
    assert row["resolved_id"] == "timm:resnet50.fb_ssl_yfcc100m_ft_in1k"
    assert row["weights"] in ("download", "cached")
    with pytest.raises(UnknownNameError, match="Did you mean"):
        list_models("timm:resnt50")
    with pytest.raises(UnknownNameError, match="Unknown model source"):
        list_models(source="nope")
    with pytest.raises(UnknownNameError, match="No model matches"):
        list_models("tflite:*zzz*")


def test_pixels_handle_matches_an_independent_resize(rng):
    from PIL import Image

    image = Image.fromarray(rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8))
    handle = load_model("pixels:8")
    batch = np.stack([handle.transform(image)] * 2)
    features = handle.forward(batch)[PENULTIMATE]
    expected = np.asarray(image.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32).reshape(-1) / 255
    assert features.shape == (2, 192) and features.dtype == np.float32
    np.testing.assert_array_equal(features[0], expected)
    described = describe_model("pixels:8")
    assert described["identity"] == handle.identity and described["preprocess_config"] == handle.preprocess_config
    with pytest.raises(InputError, match="only the layer 'penultimate'"):
        handle.forward(batch, layers=["logits"])
    with pytest.raises(InputError, match="no weights file"):
        load_model("pixels", weights="x.pt")


def test_importing_the_registry_does_not_import_torch():
    code = (
        "import sys, repalign.models as m; m.resolve_model('pixels'); m.parse_model_name('timm:x@random');"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _cli(*args):
    from repalign.cli import main

    return main(list(args))


@pytest.mark.integration
def test_cli_models_json_and_csv(mirror, capsys):
    assert _cli("models", "tflite:*embedding*", "--format", "json") == 0
    records = json.loads(capsys.readouterr().out)
    assert records == [
        {
            "name": "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor",
            "source": "tflite",
            "resolved_id": "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor",
            "weights": records[0]["weights"],
            "note": "",
        }
    ]
    assert records[0]["weights"] in ("cached", "local")
    assert _cli("models", "--source", "cifar_resnet", "--format", "csv") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "name,source,resolved_id,weights,note" and len(lines) == 5
    assert _cli("models", "offline") == 0
    assert "12 models" in capsys.readouterr().out


def test_cli_models_bad_name_is_a_one_line_error(capsys):
    assert _cli("models", "timm:resnt50") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("repalign: error: Unknown timm model 'resnt50'") and "\n" not in err
