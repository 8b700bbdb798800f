"""Where timm's own name resolution does not give the weights a 2022 (pre-0.9) name meant.

The study's 490 model names (``paper_models.txt``) are timm names of July 2022, and its
robustness numbers are timm's results of 2022-07-27, keyed by those names. timm >= 0.9
resolves them through its deprecation map and, for names that are still architectures, to
the architecture's *current* default tag. Three things go wrong, each found by comparing
timm's 2022 results (``timm_results/2022-07-27``) with its 2025 results per ``arch.tag``
(``timm_results/2025-10-30``): same ImageNet top-1 at the same image size within 0.03
percentage points means the same weights. ``tests/test_models_timm_names.py`` re-checks
every entry against those files, and ``tests/test_robustness.py`` checks, for every name of
the 2022 tables (not only the study's), that no other 2025 tag of the architecture matches
its 2022 top-1 and top-5 better than the tag it resolves to.
"""

from __future__ import annotations

#: Removed from timm without a deprecation entry. gluon_xception65 (GluonCV's port of the
#: TF DeepLab Modified Aligned Xception-65) has no successor under its name; its nearest
#: equivalent is the same architecture with the TF DeepLab ImageNet weights:
#: 39.92 M parameters, 299 px, crop 0.903 in both; top-1 79.72 (2022) vs 79.56 (2025).
#: The substitution is reported in the resolved spec (``extra["substitute"]``).
REMOVED_SUBSTITUTES: dict[str, str] = {
    "gluon_xception65": "xception65.tf_in1k",
}

#: timm's deprecation map sends ig_resnext101_32x{16,32,48}d to the 32x8d model (a copy
#: slip in timm/models/resnet.py): 88.79 M parameters instead of 194.03 M for 32x16d.
DEPRECATION_FIXES: dict[str, str] = {
    "ig_resnext101_32x16d": "resnext101_32x16d.fb_wsl_ig1b_ft_in1k",
    "ig_resnext101_32x32d": "resnext101_32x32d.fb_wsl_ig1b_ft_in1k",
    "ig_resnext101_32x48d": "resnext101_32x48d.fb_wsl_ig1b_ft_in1k",
}

#: Bare architecture names whose default tag changed after 2022-07-27 (timm made newer,
#: better weights the default). The legacy name keeps meaning the 2022 weights; ask for
#: the new ones explicitly, e.g. ``timm:resnet18.a1_in1k``.
LEGACY_DEFAULT_TAGS: dict[str, str] = {
    "convnext_base": "fb_in1k",
    "convnext_large": "fb_in1k",
    "convnext_nano": "d1h_in1k",  # 2022 top-1/top-5 81.476/95.660; d1h 81.474/95.670, default in12k 82.882
    "convnext_small": "fb_in1k",
    "convnext_tiny": "fb_in1k",
    "efficientnet_b1": "ft_in1k",
    "hrnet_w18": "ms_in1k",
    "hrnet_w18_small": "ms_in1k",
    "hrnet_w18_small_v2": "ms_in1k",
    "regnetx_008": "pycls_in1k",
    "regnetx_016": "pycls_in1k",
    "regnetx_032": "pycls_in1k",
    "regnetx_080": "pycls_in1k",
    "regnetx_160": "pycls_in1k",
    "regnetx_320": "pycls_in1k",
    "regnety_004": "pycls_in1k",
    "regnety_016": "pycls_in1k",
    "regnety_120": "pycls_in1k",
    "regnety_160": "deit_in1k",
    "regnety_320": "pycls_in1k",
    "resnet18": "tv_in1k",
    "resnet34": "bt_in1k",
    "seresnet50": "ra2_in1k",
    "seresnextaa101d_32x8d": "ah_in1k",  # 2022 84.572/97.070 at 288 px; ah 84.580/97.062, default sw_in12k 86.530
    # 2022 83.218/96.326; ms_in1k 83.228/96.326, the default ms_in22k_ft_in1k 83.330/96.996 (ImageNet-22k
    # pretraining): close in top-1, so only the top-5 gives it away
    "swin_small_patch4_window7_224": "ms_in1k",
    "tf_efficientnet_b0": "aa_in1k",
    "tf_efficientnet_b1": "aa_in1k",
    "tf_efficientnet_b2": "aa_in1k",
    "tf_efficientnet_b3": "aa_in1k",
    "tf_efficientnet_b4": "aa_in1k",
    "tf_efficientnet_b5": "ra_in1k",
    "tf_efficientnet_b6": "aa_in1k",
    "tf_efficientnet_b7": "ra_in1k",
    "tf_efficientnet_b8": "ra_in1k",  # 2022 85.368/97.392; ra 85.344/97.392, the default ap 85.358/97.298
    "tf_efficientnetv2_b3": "in1k",
    "tf_efficientnetv2_l": "in1k",
    "tf_efficientnetv2_m": "in1k",
    "tf_efficientnetv2_s": "in1k",
    "vit_base_patch16_224": "augreg_in21k_ft_in1k",
    "vit_base_patch8_224": "augreg_in21k_ft_in1k",
    # timm's default is the ImageNet-21k (11k-class) checkpoint; the 2022 name was the
    # ImageNet-1k fine-tune (top-1 84.27 vs 84.28).
    "vit_base_patch16_224_miil": "in21k_ft_in1k",
}
