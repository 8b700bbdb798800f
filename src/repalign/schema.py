"""The one tidy schema of study results (Parquet), shared by the pipeline and the analysis.

One row per (model, stage, dataset, metric, setting). Columns that do not apply to a
stage are null (e.g. ``head`` and ``shots`` for alignment rows).
"""

from __future__ import annotations

import pandas as pd

#: column name -> pandas dtype
RESULT_COLUMNS: dict[str, str] = {
    "model": "string",  # as configured, e.g. "tflite:mobilenet_v2_1.0_224_quant"
    "model_id": "string",  # resolved id, e.g. "timm:resnet50.a1_in1k"
    # alignment and fewshot: the layer the features were read from ("penultimate", "layer3",
    # a short TFLite alias, ...); null on robustness rows (published numbers of the whole model)
    "layer": "string",
    "stage": "string",  # "alignment" | "fewshot" | "robustness"
    "dataset": "string",  # "peterson:animals", "mnist", "imagenet-a", ...
    "metric": "string",  # "pearson" | "spearman" | "triplet" | "accuracy" | "top1" | "top5" | ...
    "similarity": "string",  # alignment: similarity function of the model matrix
    # alignment, metric "triplet" only: its tie rule ("exclude" | "half" | "strict"); null on
    # the other metrics, whose values do not depend on it
    "ties": "string",
    "head": "string",  # fewshot: "linear" | "mlp1" | "mlp2"
    "shots": "Int64",  # fewshot: examples per class
    "value": "float64",
    "ci_low": "float64",
    "ci_high": "float64",
    # alignment: bounds of the best alignment the human data allows (noise ceiling); null where unknown
    "ceiling_low": "float64",
    "ceiling_high": "float64",
    "n": "Int64",  # alignment: stimuli; fewshot: seeds
    "weights_match": "boolean",  # robustness: the published row describes exactly the embedded weights
    "status": "string",  # "ok" | "failed"
    "error": "string",
    "duration_s": "float64",
    "timestamp": "string",  # ISO 8601, UTC
    "unit": "string",  # id of the unit of work that produced the row
}


def empty_results() -> pd.DataFrame:
    return conform(pd.DataFrame(columns=list(RESULT_COLUMNS)))


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the schema's columns, in order, with the schema's dtypes."""
    frame = frame.copy()
    for column, dtype in RESULT_COLUMNS.items():
        if column not in frame:
            # a typed missing column: pandas 3 cannot cast an object column of pd.NA to float64
            frame[column] = pd.Series(float("nan") if dtype == "float64" else pd.NA, index=frame.index, dtype=dtype)
        elif dtype == "float64" and frame[column].dtype == object:
            frame[column] = pd.to_numeric(frame[column].where(frame[column].notna(), float("nan")))
    return frame[list(RESULT_COLUMNS)].astype(RESULT_COLUMNS)
