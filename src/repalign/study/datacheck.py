"""What a study's data provides, looked at before any work.

Two questions, answered in plain words by ``repalign run --dry-run`` and at the start of
``repalign run``:

* Which human datasets (domains) alignment will be averaged over. A domain without images
  (today Peterson automobiles, furniture and various: only their similarity matrices exist)
  gets no alignment rows, so a model's average covers fewer domains than the config lists:
  "Alignment will be averaged over 3 of the 6 domains of the study: animals, fruits,
  vegetables; missing images for automobiles, furniture, various; supply them as a user
  dataset (see docs/data.md)".
* Which datasets are not on this machine yet ("cifar100: not downloaded yet (169 MB from
  upstream)"), so a dry run can say what the run will download -- or cannot, offline.

A dry run looks with ``fetch=False``: inside :func:`repalign.data.read_only`, files are read
where they already are (the data home, or the mirror in place) and nothing is copied,
downloaded or written. A real run looks with ``fetch=True`` (it fetches the human datasets
its units need anyway), so what it says is what its units will find.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from repalign.errors import ConfigError, InputError, MissingDataError, RepalignError, UnknownNameError
from repalign.study.config import StudyConfig

log = logging.getLogger(__name__)

#: prefix dropped when a Peterson domain is named in a message ("peterson:animals" -> "animals")
_PETERSON_PREFIX = "peterson:"


@dataclass
class HumanDataCheck:
    """The human datasets of a study and whether alignment can be computed on each.

    Attributes:
        domains: every human dataset that loaded, in config order.
        names: config entry -> the names of the datasets it gives (also for a registered
            entry that is not here yet), as its rows will carry them.
        with_images: those alignment is computed on (their images are here, or -- in a dry
            run -- will be downloaded by the run).
        without_images: those with no images anywhere: their alignment step is a ``skipped`` row.
        unreachable: dataset -> why its registered images cannot be had on this machine.
        unloadable: config entry -> why it could not be loaded at all.
        to_fetch: dataset -> what the run will download for it (dry run only).
        images: dataset -> its images, for those present now (the dry run's cache check).
    """

    domains: list[str] = field(default_factory=list)
    names: dict[str, list[str]] = field(default_factory=dict)
    with_images: list[str] = field(default_factory=list)
    without_images: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    unloadable: dict[str, str] = field(default_factory=dict)
    to_fetch: dict[str, str] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str | None:
        """One plain sentence: the domains alignment will be averaged over, and why any are left out."""
        if not self.domains and not self.unloadable:
            return None
        n, k = len(self.domains), len(self.with_images)
        names = _names(self.with_images)
        if n == 0:
            parts = ["Alignment: none of the study's human datasets is here yet"]
        elif n == 1 and k == 1:
            parts = [f"Alignment will be computed on the study's one domain: {names}"]
        elif k == n:
            parts = [f"Alignment will be averaged over all {n} domains of the study: {names}"]
        elif k == 0:
            parts = [f"Alignment will have none of the {n} domains of the study to average over"]
        else:
            parts = [f"Alignment will be averaged over {k} of the {n} domains of the study: {names}"]
        if self.without_images:
            parts.append(f"missing images for {_names(self.without_images)}")
            parts.append("supply them as a user dataset (see docs/data.md)")
        for why, which in _grouped(self.unreachable).items():
            parts.append(f"no images of {_names(which)} here ({why})")
        for why, which in _grouped(self.unloadable).items():
            parts.append(f"{', '.join(which)} not loaded ({why})")
        return "; ".join(parts)


def check_human_data(config: StudyConfig, *, fetch: bool) -> HumanDataCheck:
    """Load the study's human datasets and sort them by what alignment can do with each.

    Args:
        config: the study.
        fetch: fetch what is missing (a real run), or look read-only at what is present (a
            dry run: nothing is copied, downloaded or written).

    Raises:
        ConfigError: before any work, for an entry that can never load -- an unknown name
            (with the closest valid ones), a path that does not exist, a user dataset whose
            manifest or files are invalid -- and for two entries that give datasets of the
            same name (their rows could not be told apart). A registered dataset that is
            only not here yet is a note, not an error.
    """
    from repalign.data import read_only
    from repalign.data.human import load_human

    check = HumanDataCheck()
    if "alignment" not in config.stages:
        return check
    with contextlib.nullcontext() if fetch else read_only():
        for spec in config.alignment.human:
            try:
                humans = load_human(spec)
            except Exception as exc:
                dataset = getattr(exc, "dataset", None)  # a registered dataset that is not here
                if dataset is None and isinstance(exc, (UnknownNameError, InputError, MissingDataError)):
                    raise ConfigError(f"alignment.human: {spec!r}: {_one_line(exc)}") from None
                # said in the plan; the units record it as failed rows
                check.unloadable[spec] = data_note(dataset) if dataset else _one_line(exc)
                check.names[spec] = _registered_names(spec)
                continue
            check.names[spec] = [human.name for human in humans]
            for human in humans:
                _sort_one(check, human, fetch=fetch)
    _check_distinct_names(check.names)
    return check


def _registered_names(spec: str) -> list[str]:
    """The dataset names a registered entry gives ("peterson" -> its six domains)."""
    from repalign.data.human import PETERSON_DOMAINS

    return [f"peterson:{d}" for d in PETERSON_DOMAINS] if spec == "peterson" else [spec]


def _check_distinct_names(names: dict[str, list[str]]) -> None:
    """Every human dataset of a study has its own name, and a user dataset never takes a
    built-in one: rows are told apart by name alone."""
    from repalign.data.human import list_human_datasets

    builtin = set(list_human_datasets())
    seen: dict[str, str] = {}
    for spec, given in names.items():
        for name in given:
            if name in seen:
                raise ConfigError(
                    f"alignment.human: {seen[name]!r} and {spec!r} both give a dataset named {name!r}, so their rows "
                    "could not be told apart; list it once, or give each user dataset its own name (the manifest's "
                    "'name' key)"
                )
            if name in builtin and _is_user_manifest(spec):
                raise ConfigError(
                    f"alignment.human: {spec!r} is named {name!r}, the name of a built-in dataset; give it another "
                    "name (the manifest's 'name' key)"
                )
            seen[name] = spec


def _is_user_manifest(spec: str) -> bool:
    """A user dataset described by a manifest (a Peterson pickle carries Peterson's own names)."""
    from pathlib import Path

    return not (spec == "peterson" or spec.startswith("peterson:")) and Path(spec).suffix.lower() not in (
        ".pkl",
        ".pickle",
    )


def check_weights_files(config: StudyConfig, models: list[str]) -> None:
    """Every ``[models] weights`` entry names one of the study's models and a file that exists.

    Raises:
        ConfigError: naming the entry (the dry run stops here too, before any work).
    """
    from pathlib import Path

    from repalign.errors import did_you_mean

    for model, path in config.models.weights.items():
        if model not in models:
            hint = did_you_mean(model, models) or " Give the exact name of a model the study includes."
            raise ConfigError(f"models.weights: {model!r} is not one of the study's models.{hint}")
        if not Path(path).is_file():
            raise ConfigError(f"models.weights: {model!r}: weights file not found: {path}")


def check_fewshot_names(config: StudyConfig) -> None:
    """Every few-shot dataset is a registered name or an existing folder, and no two share a
    name (rows carry the dataset's name). Reads no data.

    Raises:
        ConfigError: naming the entry, with the closest valid names for a typo.
    """
    from pathlib import Path

    from repalign.data import read_only
    from repalign.data.fewshot_datasets import FEWSHOT_DATASETS, load_fewshot_dataset

    if "fewshot" not in config.stages:
        return
    seen: dict[str, str] = {}
    for entry in config.fewshot.datasets:
        path = Path(entry).expanduser()
        if entry not in FEWSHOT_DATASETS and not path.is_dir():
            try:
                with read_only():  # a name or path that does not exist fails at once, loading nothing
                    load_fewshot_dataset(entry)
            except RepalignError as exc:
                raise ConfigError(f"fewshot.datasets: {entry!r}: {_one_line(exc)}") from None
        name = entry if entry in FEWSHOT_DATASETS else path.resolve().name
        if name in seen:
            raise ConfigError(
                f"fewshot.datasets: {seen[name]!r} and {entry!r} are both named {name!r}, so their rows could not be "
                "told apart; rename one of the folders"
            )
        seen[name] = entry


def _sort_one(check: HumanDataCheck, human, *, fetch: bool) -> None:
    from repalign.data import dataset_status, downloads_disabled

    check.domains.append(human.name)
    if human.has_images:
        check.with_images.append(human.name)
        try:
            check.images[human.name] = human.images()
        except Exception as exc:  # files vanished since loading: not checkable, the run will say
            log.debug("images of %s: %s", human.name, exc)
        return
    if human.images_dataset is None:  # no images anywhere: nothing to fetch
        check.without_images.append(human.name)
        return
    status = dataset_status(human.images_dataset)
    if not fetch and status == "download" and not downloads_disabled():
        check.with_images.append(human.name)  # the run downloads them
        check.to_fetch[human.name] = data_note(human.images_dataset)
        return
    # what the fetch said, or -- not fetched, in a dry run -- where the dataset stands
    absent = status in ("download", "unavailable")
    check.unreachable[human.name] = data_note(human.images_dataset) if absent else human.missing_images_reason


def data_note(name: str) -> str:
    """Where registered dataset ``name`` stands on this machine, e.g. "cifar100: not
    downloaded yet (169 MB from upstream)" (reads nothing but names)."""
    from repalign.data import describe_status

    return f"{name}: {describe_status(name)}"


def check_fewshot_data(config: StudyConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Read-only look at the few-shot datasets (a dry run): ``(images, notes)``.

    ``images``: dataset -> the images its splits use (what a unit embeds), for the datasets
    present now; ``notes``: dataset -> why the others are not (e.g. not downloaded yet).
    """
    from repalign.data import dataset_status, read_only
    from repalign.data.fewshot_datasets import FEWSHOT_DATASETS
    from repalign.data.images import SubsetImageSet
    from repalign.errors import ChecksumError
    from repalign.study.plan import fewshot_inputs

    images: dict[str, Any] = {}
    notes: dict[str, str] = {}
    if "fewshot" not in config.stages:
        return images, notes
    with read_only():
        for name in config.fewshot.datasets:
            try:
                data, splits = fewshot_inputs(name, config)
            except Exception as exc:  # e.g. CIFAR-100 not downloaded yet: said in the plan, not fatal
                absent = name in FEWSHOT_DATASETS and dataset_status(name) != "present"
                if absent and not isinstance(exc, ChecksumError):
                    notes[name] = data_note(name)
                else:
                    notes[name] = f"{name}: {_one_line(exc)}"
                continue
            images[name] = SubsetImageSet(data.images, splits.used_indices())
    return images, notes


def _grouped(reasons: dict[str, str]) -> dict[str, list[str]]:
    """{name: why} -> {why: names}: one reason is said once (e.g. three Peterson domains
    waiting for the same similarity file)."""
    out: dict[str, list[str]] = {}
    for name, why in reasons.items():
        out.setdefault(why, []).append(name)
    return out


def _names(datasets: list[str]) -> str:
    return ", ".join(d[len(_PETERSON_PREFIX) :] if d.startswith(_PETERSON_PREFIX) else d for d in datasets)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
