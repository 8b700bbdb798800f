"""What each unit asks a Ray cluster for, against timm's published benchmark read independently."""

from __future__ import annotations

import pandas as pd
import pytest

from repalign import _options as opt
from repalign.study.plan import Unit, unit_id
from repalign.study.sizing import gpu_share, largest_first, model_bytes, unit_resources

pytestmark = pytest.mark.integration

GIB = 1 << 30
MODELS = ["timm:resnet18", "timm:resnet50", "timm:vit_giant_patch14_clip_224", "pixels"]


def units(models):
    return [Unit(unit_id(m), m, ("alignment",)) for m in models]


@pytest.fixture(scope="module")
def published(mirror):
    """timm's inference benchmark, read with pandas (not through repalign)."""
    path = next(mirror.glob("timm_results/**/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv"))
    table = pd.read_csv(path).sort_values("infer_img_size", kind="stable")
    return table.drop_duplicates("model", keep="last").set_index("model")  # at its largest benchmarked size


def expected_bytes(row) -> float:
    return row["param_count"] * 1e6 * 4 + row["infer_macts"] * 1e6 * 4 * opt.SIZING_BATCH_IMAGES


def test_memory_comes_from_the_published_parameters_and_activations(published):
    got = unit_resources(units(MODELS), gpus=False)
    for model in MODELS[:3]:
        row = published.loc[model.removeprefix("timm:")]
        assert got[unit_id(model)].memory_bytes == pytest.approx(
            opt.UNIT_BASE_MEMORY_BYTES + expected_bytes(row), abs=1
        )
        assert got[unit_id(model)].num_gpus == 0  # no GPUs in the cluster: none asked for
    # a model of unpublished size: the base plus the documented allowance
    assert got[unit_id("pixels")].memory_bytes == opt.UNIT_BASE_MEMORY_BYTES + opt.UNKNOWN_MODEL_BYTES


def test_small_models_share_a_gpu_and_giants_get_one_each(published):
    got = unit_resources(units(MODELS), gpus=True, gpu_memory_gb=16)
    assert got[unit_id("timm:resnet18")].num_gpus == 0.125  # eight to a 16 GiB GPU
    assert got[unit_id("timm:vit_giant_patch14_clip_224")].num_gpus == 1.0
    assert got[unit_id("pixels")].num_gpus == 1.0  # unknown size: never shares
    # a larger GPU holds more of them
    big = unit_resources(units(MODELS), gpus=True, gpu_memory_gb=80)
    assert big[unit_id("timm:vit_giant_patch14_clip_224")].num_gpus == 0.25


def test_no_published_model_shares_a_gpu_with_another_it_does_not_fit_beside(published):
    """Over every model of the benchmark: the share holds the model, and a model needing more
    than half a GPU takes all of it -- so two of them never land on one GPU."""
    from repalign.study.estimate import ModelSize

    gpu = 16 * GIB
    for name, row in published.dropna(subset=["param_count", "infer_macts"]).iterrows():
        size = ModelSize(row["param_count"], row["infer_gmacs"], row["infer_macts"], "benchmark")
        need = expected_bytes(row) + opt.GPU_CONTEXT_BYTES
        share = gpu_share(size, gpu)
        assert share in opt.GPU_SHARES, name
        assert share * gpu >= need or share == 1.0, name
        if need > gpu / 2:
            assert share == 1.0, name
        assert model_bytes(size) == pytest.approx(expected_bytes(row), abs=1)


def test_largest_units_come_first_and_requests_fit_a_node(published):
    plan = units(["timm:resnet18", "pixels", "timm:vit_giant_patch14_clip_224", "timm:resnet50"])
    got = unit_resources(plan, gpus=False, node_memory_bytes=4 * GIB)
    order = [u.model for u in largest_first(plan, got)]
    assert order == ["pixels", "timm:vit_giant_patch14_clip_224", "timm:resnet50", "timm:resnet18"]
    assert published.loc["vit_giant_patch14_clip_224", "infer_gmacs"] > published.loc["resnet50", "infer_gmacs"]
    # the giant needs more than any node offers: it asks for a whole node instead of waiting forever
    assert got[unit_id("timm:vit_giant_patch14_clip_224")].memory_bytes == 4 * GIB
    assert got[unit_id("timm:resnet18")].memory_bytes < 4 * GIB
