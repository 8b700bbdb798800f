"""What each stage of a unit reads, identified by content: the other half of the resume key.

A unit's rows depend on its settings (``StudyConfig.stage_fingerprints``) and on what its
stages read. This module names those inputs and gives each a digest, as
``{stage: {input: {part: digest}}}``, which the store records with the unit's rows and
compares on the next run (``repalign.store.compare_inputs``), so a changed input recomputes
exactly the stages that read it, and the dry run says which file changed:

``alignment``
    every human dataset: a registered one (Peterson) by the checksum table it is verified
    against; a user dataset by its manifest and every file or folder the manifest names
    (``sim.csv``, ``stimuli.txt``, ``images/``, ...); a Peterson pickle by its bytes.
``fewshot``
    every few-shot dataset: a registered one by its checksum table, a folder by its files.
both
    the model: its weights (``describe_model``'s identity, e.g. the sha256 of a
    ``torchscript:`` or TFLite file) and preprocessing, and the extraction code version --
    the parts of the embedding cache key that are not the images.

Files are hashed by content. A folder is hashed by content when it holds at most
:data:`CHEAP_FOLDER_BYTES` (image folders of similarity studies: a few MB), else by each
file's name, size and modification time. An input that cannot be identified here without
a download (weights not downloaded yet) has digest ``None``, which is never compared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repalign._io import sha256_file_remembered

if TYPE_CHECKING:  # plan imports this module (lazily); only the type is needed here
    from repalign.study.config import StudyConfig
    from repalign.study.plan import Unit

log = logging.getLogger(__name__)

#: folders up to this size are identified by content, larger ones by name + size + mtime
CHEAP_FOLDER_BYTES = 64 * 2**20

#: ``weights_status`` values whose weights are a file here, identified by content
_WEIGHTS_HERE = ("local", "cached")

Inputs = dict[str, dict[str, str | None]]  # input name -> part -> digest


class StudyInputs:
    """The inputs of a study's units. Data inputs are identified once per study, the model
    of each unit on demand (:meth:`for_unit`).

    Args:
        config: the study.
        humans: human dataset names produced by each ``[alignment] human`` entry
            (``HumanDataCheck.names``), so that inputs carry the names the rows carry.
    """

    def __init__(self, config: StudyConfig, humans: dict[str, list[str]]):
        self.config = config
        self.alignment: Inputs = {}
        if "alignment" in config.stages:
            for spec in config.alignment.human:
                parts = human_parts(spec)
                for name in humans.get(spec, [spec]):
                    self.alignment[name] = _peterson_parts(name) if _is_peterson(spec) else parts
        self.fewshot: Inputs = {}
        if "fewshot" in config.stages:
            self.fewshot = {name: fewshot_parts(name) for name in config.fewshot.datasets}

    def for_unit(self, unit: Unit) -> dict[str, Inputs]:
        """``{stage: {input: {part: digest}}}`` of every stage of ``unit``.

        The model's layers are a part of it when they are not the default alone (so a unit
        written before layers existed, which read the default, stays finished), and a change
        of ``[models] layers`` recomputes the unit's alignment and few-shot rows."""
        from repalign._options import DEFAULT_LAYER

        parts = model_parts(unit.model, weights=self.config.models.weights.get(unit.model))
        if unit.layers != (DEFAULT_LAYER,):
            parts["layers"] = ",".join(unit.layers)
        model = {unit.model: parts}
        out: dict[str, Inputs] = {}
        for stage in unit.stages:
            if stage == "alignment":
                out[stage] = {**self.alignment, **model}
            elif stage == "fewshot":
                out[stage] = {**self.fewshot, **model}
            else:  # robustness: published numbers, chosen by [robustness] source alone
                out[stage] = {}
        return out


def refresh_model(inputs: dict[str, Inputs], model: str, *, weights: str | None = None) -> dict[str, Inputs]:
    """``inputs`` with the model's unknown parts identified again: weights that were not
    here when the run was planned are after the unit ran (it downloaded them)."""
    if not any(None in stage.get(model, {}).values() for stage in inputs.values()):
        return inputs
    parts = model_parts(model, weights=weights)
    return {
        stage: {**values, model: {**values[model], **parts}} if model in values else values
        for stage, values in inputs.items()
    }


# ---------------------------------------------------------------------------------------
# the parts of each kind of input
# ---------------------------------------------------------------------------------------
def human_parts(spec: str) -> dict[str, str | None]:
    """The files a human dataset entry reads -> digests (see the module docstring)."""
    from repalign.data.human import MANIFEST_NAMES, read_manifest

    if _is_peterson(spec):
        return {}  # per domain: _peterson_parts
    path = Path(spec).expanduser()
    if path.is_dir():
        found = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
        if not found:
            return {"manifest": "missing"}
        path = found[0]
    if not path.is_file():
        return {path.name: "missing"}
    parts = {path.name: file_digest(path)}
    if path.suffix.lower() in (".pkl", ".pickle"):
        return parts
    try:
        manifest = read_manifest(path)
    except Exception:  # the loader says what is wrong; here the manifest's digest suffices
        return parts
    root = path.parent
    for value in manifest.values():  # every file or folder the manifest names, whatever its key
        if isinstance(value, str) and value and (root / value).exists():
            target = root / value
            parts[f"{value}/" if target.is_dir() else value] = (
                folder_digest(target) if target.is_dir() else file_digest(target)
            )
    return parts


def _is_peterson(spec: str) -> bool:
    return spec == "peterson" or spec.startswith("peterson:")


def _peterson_parts(name: str) -> dict[str, str | None]:
    """A Peterson domain: its similarity file and (where registered) its images, each by
    the checksum table the data layer verifies them against."""
    from repalign.data.human import PETERSON_IMAGE_DATASETS

    parts = {"peterson-similarity": registered_digest("peterson-similarity")}
    images = PETERSON_IMAGE_DATASETS.get(name.split(":", 1)[-1])
    if images is not None:
        parts[images] = registered_digest(images)
    return parts


def fewshot_parts(name: str) -> dict[str, str | None]:
    from repalign.data.fewshot_datasets import FEWSHOT_DATASETS

    if name in FEWSHOT_DATASETS:
        return {"dataset": registered_digest(name)}
    path = Path(name).expanduser()
    return {"files": folder_digest(path) if path.is_dir() else "missing"}


def model_parts(model: str, *, weights: str | None = None) -> dict[str, str | None]:
    """The model's weights and preprocessing (as the embedding cache keys them), and the
    extraction code version. Weights not here (to be downloaded) are ``None``: unknown.
    ``weights``: the config's local weights file for the model."""
    from repalign.embed import EXTRACTION_CODE_VERSION
    from repalign.models import describe_model, weights_status

    parts: dict[str, str | None] = {"weights": None, "preprocess": None, "extraction": EXTRACTION_CODE_VERSION}
    try:
        status = weights_status(model, weights=weights)
        if status not in _WEIGHTS_HERE:  # random / builtin: the name says it all; download: not known yet
            parts["weights"] = None if status == "download" else status
            return parts
        info = describe_model(model, weights=weights)
    except Exception as exc:  # a model that cannot be described fails in its unit, and says why there
        log.debug("inputs of %s: %s", model, exc)
        return parts
    parts["weights"] = _digest(info["identity"])
    parts["preprocess"] = _digest(info["preprocess_config"])
    return parts


# ---------------------------------------------------------------------------------------
# digests
# ---------------------------------------------------------------------------------------
def registered_digest(name: str) -> str:
    """A registered dataset by the checksums it is verified against (nothing is read)."""
    from repalign.data import get_dataset

    spec = get_dataset(name)
    table = [[f.relpath, f.checksum_key] for f in spec.files]
    if spec.archive is not None:
        table.append([spec.archive.filename, spec.archive.sha256])
    return "registry:" + _digest(table)


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes (remembered per path, size and mtime in this process)."""
    try:
        return f"sha256:{sha256_file_remembered(path)}"
    except OSError:
        return "missing"


def folder_digest(folder: Path) -> str:
    """A folder's files (recursively, by relative path): ``content:<hex>`` when it is cheap
    to read (<= CHEAP_FOLDER_BYTES), else ``stat:<hex>`` of names, sizes and mtimes."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue  # a dangling link: nothing that can be read
            files.append((path.relative_to(folder).as_posix(), path, stat))
    if sum(stat.st_size for _, _, stat in files) <= CHEAP_FOLDER_BYTES:
        return "content:" + _digest([[rel, file_digest(path)] for rel, path, _ in files])
    return "stat:" + _digest([[rel, stat.st_size, stat.st_mtime_ns] for rel, _, stat in files])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
