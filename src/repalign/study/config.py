"""Study configuration: a TOML file parsed into frozen dataclasses, validated once.

Every section and key, with its default (a section that is left out takes all defaults;
a stage whose inputs are empty is switched off)::

    [study]
    name = "quickstart"            # required-ish: defaults to the config file's stem
    output = "studies/<name>"      # study directory; relative paths are relative to the
                                   # current working directory (like every CLI path)
    seed = 0                       # seeds every random computation (bootstrap, splits, heads)
    report = true                  # write the HTML report when the run ends

    [models]
    include = [...]                # required: names, globs ("tflite:*"), presets "paper" / "offline"
    exclude = []                   # names or globs removed from the expansion

    [alignment]                    # off when `human` is empty
    human = []                     # e.g. ["peterson:animals", "peterson:fruits"] or "peterson"
    similarity = "cosine"          # model similarity: cosine, dot, neg_euclidean, pearson
    metrics = ["pearson", "spearman", "triplet"]   # also: kendall, triplet_accuracy
    n_bootstrap = 1000             # stimulus-bootstrap resamples for the CIs (0 = no CI)

    [fewshot]                      # off when `datasets` is empty
    datasets = []                  # e.g. ["mnist", "fashion_mnist", "cifar100"]
    shots = [1, 5, 10, 20, 40, 80]
    heads = ["linear", "mlp1", "mlp2"]
    seeds = 5
    max_eval_per_class = 0         # 0 = the whole test split

    [robustness]
    source = "none"                # "timm-2022-07-27" (the paper), "timm-2025-10-30" or "none"

    [execution]                    # how, not what: never changes a result value
    executor = "local"             # "local" or "ray"
    jobs = 1                       # local worker processes
    address = ""                   # ray: "" starts a local cluster, "auto" or "HOST:PORT" joins one
    threads = 0                    # torch/BLAS threads per unit; 0 = CPU cores // jobs
    device = "auto"                # "auto", "cpu", "cuda", "cuda:1", "mps"

Unknown keys, wrong types and impossible values raise :class:`~repalign.errors.ConfigError`
naming the key and, when parsed from a file, its line. Configs round-trip through
:meth:`StudyConfig.to_dict` / :meth:`StudyConfig.from_dict` / :meth:`StudyConfig.to_toml`,
which is how they cross into worker processes and Ray tasks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repalign._io import tomllib
from repalign.errors import ConfigError

# Mirrors repalign.alignment.SIMILARITY_METRICS / ALIGNMENT_METRICS (a test keeps them equal);
# repeated here so validating a config does not import numba.
SIMILARITIES = ("cosine", "dot", "neg_euclidean", "pearson")
ALIGNMENT_METRICS = ("pearson", "spearman", "kendall", "triplet", "triplet_accuracy")
DEFAULT_ALIGNMENT_METRICS = ("pearson", "spearman", "triplet")
HEADS = ("linear", "mlp1", "mlp2")
ROBUSTNESS_SOURCES = ("none", "timm-2022-07-27", "timm-2025-10-30")
EXECUTORS = ("local", "ray")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class StudySection:
    name: str = "study"
    output: str = ""  # "" -> studies/<name>
    seed: int = 0
    report: bool = True


@dataclass(frozen=True)
class ModelsSection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlignmentSection:
    human: tuple[str, ...] = ()
    similarity: str = "cosine"
    metrics: tuple[str, ...] = DEFAULT_ALIGNMENT_METRICS
    n_bootstrap: int = 1000


@dataclass(frozen=True)
class FewshotSection:
    datasets: tuple[str, ...] = ()
    shots: tuple[int, ...] = (1, 5, 10, 20, 40, 80)
    heads: tuple[str, ...] = HEADS
    seeds: int = 5
    # None = the whole test split. TOML has no null, so the file says 0: translated here at the
    # config boundary in both directions (_Validator.build, StudyConfig.to_dict), nowhere else.
    max_eval_per_class: int | None = None


@dataclass(frozen=True)
class RobustnessSection:
    source: str = "none"


@dataclass(frozen=True)
class ExecutionSection:
    executor: str = "local"
    jobs: int = 1
    address: str = ""
    threads: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class StudyConfig:
    """A whole study; build with :func:`load_config` or :meth:`from_dict`."""

    study: StudySection = field(default_factory=StudySection)
    models: ModelsSection = field(default_factory=ModelsSection)
    alignment: AlignmentSection = field(default_factory=AlignmentSection)
    fewshot: FewshotSection = field(default_factory=FewshotSection)
    robustness: RobustnessSection = field(default_factory=RobustnessSection)
    execution: ExecutionSection = field(default_factory=ExecutionSection)

    # -- derived -----------------------------------------------------------------------
    @property
    def output_dir(self) -> Path:
        """The study directory (absolute)."""
        return Path(self.study.output or f"studies/{self.study.name}").expanduser().resolve()

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this study runs, in order."""
        stages = []
        if self.alignment.human:
            stages.append("alignment")
        if self.fewshot.datasets:
            stages.append("fewshot")
        if self.robustness.source != "none":
            stages.append("robustness")
        return tuple(stages)

    def results_fingerprint(self) -> str:
        """sha256 of everything that determines result values (not how they are executed).

        A finished unit whose fingerprint differs from the current config's is stale and
        is computed again on resume.
        """
        d = self.to_dict()
        relevant = {k: d[k] for k in ("alignment", "fewshot", "robustness")}
        relevant["seed"] = d["study"]["seed"]
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()

    def replace(self, section: str, **changes: Any) -> StudyConfig:
        """A copy with ``changes`` applied to one section (validated again)."""
        d = self.to_dict()
        d[section].update(changes)
        return StudyConfig.from_dict(d)

    # -- round trip --------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (lists, not tuples): JSON/TOML serialisable."""
        out: dict[str, dict[str, Any]] = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            out[f.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}
        # the file's spelling of "no cap" (TOML has no null); also keeps results_fingerprint stable
        out["fewshot"]["max_eval_per_class"] = self.fewshot.max_eval_per_class or 0
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source_text: str | None = None, name: str | None = None) -> StudyConfig:
        """Validate a nested dict (as parsed from TOML) into a config.

        ``source_text`` (the TOML text) lets errors name the line of the offending key.
        """
        return _Validator(source_text).build(data, default_name=name)

    def to_toml(self) -> str:
        """TOML text that :func:`parse_config` reads back into an equal config."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike) -> StudyConfig:
    """Read and validate a study config file (TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file not found: {path}. Pass the path of a TOML study config, e.g. configs/quickstart.toml"
        )
    return parse_config(path.read_text(encoding="utf-8"), name=path.stem, origin=str(path))


def parse_config(text: str, *, name: str | None = None, origin: str = "config") -> StudyConfig:
    """Validate TOML text into a config."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    return StudyConfig.from_dict(data, source_text=text, name=name)


def as_config(config: StudyConfig | dict | str | os.PathLike) -> StudyConfig:
    """Accept a config object, a nested dict, or the path of a TOML file."""
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, dict):
        return StudyConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise ConfigError(f"Expected a StudyConfig, a dict or a path to a TOML file, got {type(config).__name__}")


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
_SECTIONS = {
    "study": StudySection,
    "models": ModelsSection,
    "alignment": AlignmentSection,
    "fewshot": FewshotSection,
    "robustness": RobustnessSection,
    "execution": ExecutionSection,
}


class _Validator:
    def __init__(self, text: str | None):
        self.text = text

    def fail(self, section: str, key: str | None, message: str) -> ConfigError:
        where = f"[{section}]" if key is None else f"{section}.{key}"
        line = _find_line(self.text, section, key) if self.text else None
        at = f" (line {line})" if line else ""
        return ConfigError(f"{where}{at}: {message}")

    def build(self, data: dict[str, Any], *, default_name: str | None) -> StudyConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"A study config is a table of sections, got {type(data).__name__}")
        for section in data:
            if section not in _SECTIONS:
                raise self.fail(section, None, f"unknown section. Valid sections: {', '.join(_SECTIONS)}")
            if not isinstance(data[section], dict):
                raise self.fail(section, None, f"must be a table ([{section}]), got {_type(data[section])}")
        for section, cls in _SECTIONS.items():
            valid = {f.name for f in dataclasses.fields(cls)}
            for key in data.get(section, {}):
                if key not in valid:
                    from repalign.errors import did_you_mean

                    hint = did_you_mean(key, valid) or f" Valid keys: {', '.join(sorted(valid))}."
                    raise self.fail(section, key, f"unknown key.{hint}")

        s = data.get("study", {})
        study = StudySection(
            name=self.string(s, "study", "name", default_name or "study", nonempty=True),
            output=self.string(s, "study", "output", ""),
            seed=self.integer(s, "study", "seed", 0, minimum=0),
            report=self.boolean(s, "study", "report", True),
        )
        m = data.get("models", {})
        if "include" not in m:
            raise self.fail(
                "models", "include", 'is required: list the models to study, e.g. include = ["pixels", "tflite:*"]'
            )
        models = ModelsSection(
            include=self.strings(m, "models", "include", (), nonempty=True),
            exclude=self.strings(m, "models", "exclude", ()),
        )
        a = data.get("alignment", {})
        alignment = AlignmentSection(
            human=self.strings(a, "alignment", "human", ()),
            similarity=self.choice(a, "alignment", "similarity", "cosine", SIMILARITIES),
            metrics=self.choices(a, "alignment", "metrics", DEFAULT_ALIGNMENT_METRICS, ALIGNMENT_METRICS),
            n_bootstrap=self.integer(a, "alignment", "n_bootstrap", 1000, minimum=0),
        )
        f = data.get("fewshot", {})
        shots = self.integers(f, "fewshot", "shots", (1, 5, 10, 20, 40, 80), minimum=1)
        max_eval = self.integer(f, "fewshot", "max_eval_per_class", 0, minimum=0)
        fewshot = FewshotSection(
            datasets=self.strings(f, "fewshot", "datasets", ()),
            shots=tuple(sorted(set(shots))),
            heads=self.choices(f, "fewshot", "heads", HEADS, HEADS),
            seeds=self.integer(f, "fewshot", "seeds", 5, minimum=1),
            max_eval_per_class=max_eval or None,  # 0 in the file = no cap (see FewshotSection)
        )
        r = data.get("robustness", {})
        robustness = RobustnessSection(source=self.choice(r, "robustness", "source", "none", ROBUSTNESS_SOURCES))
        e = data.get("execution", {})
        device = self.string(e, "execution", "device", "auto")
        if not _DEVICE_RE.match(device):
            raise self.fail("execution", "device", f"'{device}' is not a device. Use auto, cpu, cuda, cuda:N or mps")
        execution = ExecutionSection(
            executor=self.choice(e, "execution", "executor", "local", EXECUTORS),
            jobs=self.integer(e, "execution", "jobs", 1, minimum=1),
            address=self.string(e, "execution", "address", ""),
            threads=self.integer(e, "execution", "threads", 0, minimum=0),
            device=device,
        )
        return StudyConfig(study, models, alignment, fewshot, robustness, execution)

    # -- typed getters -----------------------------------------------------------------
    def string(self, d, section, key, default, *, nonempty=False) -> str:
        value = d.get(key, default)
        if not isinstance(value, str):
            raise self.fail(section, key, f"expected a string, got {_type(value)}")
        if nonempty and not value.strip():
            raise self.fail(section, key, "must not be empty")
        return value

    def boolean(self, d, section, key, default) -> bool:
        value = d.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(section, key, f"expected true or false, got {_type(value)}")
        return value

    def integer(self, d, section, key, default, *, minimum=None) -> int:
        value = d.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(section, key, f"expected an integer, got {_type(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(section, key, f"must be >= {minimum}, got {value}")
        return value

    def strings(self, d, section, key, default, *, nonempty=False) -> tuple[str, ...]:
        value = d.get(key, default)
        if isinstance(value, str):  # a single name is a list of one
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(section, key, f"expected a list of non-empty strings, got {_type(value)}")
        if nonempty and not value:
            raise self.fail(section, key, "must list at least one entry")
        return tuple(dict.fromkeys(value))  # drop duplicates, keep order

    def integers(self, d, section, key, default, *, minimum=None) -> tuple[int, ...]:
        value = d.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise self.fail(section, key, f"expected a non-empty list of integers, got {_type(value)}")
        bad = [v for v in value if minimum is not None and v < minimum]
        if bad:
            raise self.fail(section, key, f"every entry must be >= {minimum}, got {bad[0]}")
        return tuple(value)

    def choice(self, d, section, key, default, valid) -> str:
        value = self.string(d, section, key, default)
        if value not in valid:
            from repalign.errors import did_you_mean

            hint = did_you_mean(value, valid) or ""
            raise self.fail(section, key, f"unknown value '{value}'.{hint} Valid: {', '.join(valid)}")
        return value

    def choices(self, d, section, key, default, valid) -> tuple[str, ...]:
        values = self.strings(d, section, key, default, nonempty=True)
        for value in values:
            if value not in valid:
                from repalign.errors import did_you_mean

                hint = did_you_mean(value, valid) or ""
                raise self.fail(section, key, f"unknown value '{value}'.{hint} Valid: {', '.join(valid)}")
        return values


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (list, tuple)):
        return f"list {list(value)!r}"[:80]
    return type(value).__name__


def _find_line(text: str, section: str, key: str | None) -> int | None:
    """1-based line where ``key`` is set inside ``[section]`` (or of the header itself)."""
    current = None
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
    for number, line in enumerate(text.splitlines(), start=1):
        match = header.match(line)
        if match:
            current = match.group(1)
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
        # dotted keys at top level: study.name = ...
        if key is not None and current is None and re.match(rf"^\s*{re.escape(section)}\.{re.escape(key)}\s*=", line):
            return number
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
