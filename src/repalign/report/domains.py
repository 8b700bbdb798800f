"""Which human datasets (domains) a study's alignment averages cover, and what the reader is told.

The paper averages every alignment metric over the six Peterson domains. A study may be
configured with fewer, or some configured domains may have produced no rows (e.g. Peterson
domains without registered images). :func:`domain_coverage` compares the configured human
datasets (``config["alignment"]["human"]``, where ``"peterson"`` means all six domains) with
the domains present in the alignment averages, and :func:`coverage_note` words it for the
top of the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

PETERSON = "peterson"


def peterson_domains() -> tuple[str, ...]:
    """The six Peterson domains, from the data layer (defined once there)."""
    from repalign.data.human import PETERSON_DOMAINS

    return tuple(PETERSON_DOMAINS)


def configured_human(config: Mapping[str, Any]) -> list[str]:
    """The study's configured human datasets as row names: ``"peterson"`` -> six ``peterson:<domain>``.

    Other entries (user datasets given by path) are kept as written: their row name is only
    known once the dataset is loaded, so they are matched by presence, not by name.
    """
    human = (config.get("alignment") or {}).get("human") or []
    if isinstance(human, str):
        human = [human]
    names: list[str] = []
    for spec in human:
        spec = str(spec)
        expanded = [f"{PETERSON}:{d}" for d in peterson_domains()] if spec == PETERSON else [spec]
        names.extend(n for n in expanded if n not in names)
    return names


@dataclass(frozen=True)
class DomainCoverage:
    """Configured and averaged human datasets of one study."""

    configured: tuple[str, ...]  # as row names where known ("peterson:animals", or a user spec)
    averaged: tuple[str, ...]  # the datasets every model's average is taken over
    missing: tuple[str, ...]  # configured, not averaged
    reasons: Mapping[str, str]  # missing dataset -> why (the failed rows' error), when known

    @property
    def complete(self) -> bool:
        return not self.missing


def domain_coverage(
    config: Mapping[str, Any], averaged: Sequence[str], failures: pd.DataFrame | None = None
) -> DomainCoverage:
    """Compare the configured human datasets with those the alignment averages use.

    Args:
        config: the study's resolved config (``load_study(...).config``).
        averaged: the datasets of the averages (``model_alignment(...).attrs["domains"]``).
        failures: the study's result rows (failed alignment rows give the reasons).
    """
    configured = configured_human(config)
    averaged = [str(d) for d in averaged]
    known = [c for c in configured if c.startswith(f"{PETERSON}:")]
    user_specs = [c for c in configured if c not in known]
    user_present = [d for d in averaged if not d.startswith(f"{PETERSON}:")]
    missing = [c for c in known if c not in averaged]
    # a user dataset's row name is its manifest's name, not its path: count them
    missing += user_specs[len(user_present) :]
    reasons: dict[str, str] = {}
    if failures is not None and len(failures) and "error" in failures:
        rows = failures[(failures["stage"] == "alignment") & (failures["status"] == "failed")]
        for dataset in missing:
            errors = rows.loc[rows["dataset"] == dataset, "error"].dropna().astype(str)
            if len(errors):
                reasons[dataset] = errors.iloc[0]
    return DomainCoverage(
        configured=tuple(known + user_specs) if configured else tuple(averaged),
        averaged=tuple(averaged),
        missing=tuple(missing),
        reasons=reasons,
    )


def short_name(dataset: str) -> str:
    """ "peterson:animals" -> "animals"; other names unchanged."""
    return dataset.split(":", 1)[1] if dataset.startswith(f"{PETERSON}:") else dataset


def coverage_note(coverage: DomainCoverage) -> str | None:
    """The plain-words note for the top of the report, or None when every configured domain is averaged.

    Example: "Alignment is averaged over 3 of the 6 domains of the study: animals, fruits,
    vegetables; missing images for automobiles, furniture, various; supply them as a user
    dataset (see docs/data.md)."
    """
    if coverage.complete:
        return None
    averaged = ", ".join(short_name(d) for d in coverage.averaged) or "none"
    no_images = [d for d in coverage.missing if _is_missing_images(d, coverage.reasons.get(d))]
    other = [d for d in coverage.missing if d not in no_images]
    parts = [f"Alignment is averaged over {len(coverage.averaged)} of the {len(coverage.configured)} domains "]
    parts.append(f"of the study: {averaged}")
    if no_images:
        names = ", ".join(short_name(d) for d in no_images)
        parts.append(f"; missing images for {names}; supply them as a user dataset (see docs/data.md)")
    if other:
        names = ", ".join(short_name(d) for d in other)
        parts.append(f"; no results for {names} (see Failures; rerun `repalign run CONFIG` to retry them)")
    return "".join(parts) + "."


def _is_missing_images(dataset: str, reason: str | None) -> bool:
    if reason is not None:
        return "image" in reason.lower()
    from repalign.data.human import PETERSON_IMAGE_DATASETS

    # no failed row to read: a Peterson domain without registered images has none to give
    return dataset.startswith(f"{PETERSON}:") and short_name(dataset) not in PETERSON_IMAGE_DATASETS


def paper_domains_note(coverage: DomainCoverage) -> str | None:
    """A reminder when the study (completely averaged) uses fewer Peterson domains than the paper's six."""
    if not coverage.complete:
        return None  # coverage_note says it already
    peterson = [d for d in coverage.averaged if d.startswith(f"{PETERSON}:")]
    if not peterson or len(peterson) == len(peterson_domains()):
        return None
    return (
        f"Alignment is averaged over the {len(peterson)} Peterson domains this study is configured with "
        f"({', '.join(short_name(d) for d in peterson)}); the paper averages over all {len(peterson_domains())}."
    )


__all__ = [
    "DomainCoverage",
    "configured_human",
    "coverage_note",
    "domain_coverage",
    "paper_domains_note",
    "peterson_domains",
    "short_name",
]
