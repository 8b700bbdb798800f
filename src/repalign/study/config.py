"""Study configuration: a TOML file parsed into frozen dataclasses, validated once.

Sections ``[study]``, ``[models]``, ``[alignment]``, ``[fewshot]``, ``[robustness]``,
``[execution]`` and ``[compare]``; a section that is left out takes all defaults, and a stage whose inputs
are empty is switched off. docs/study.md lists every key with its default (a test keeps
that list equal to the defaults of the dataclasses below). The defaults and the valid
names come from :mod:`repalign._options`, shared with the library functions and the CLI.

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

from repalign import _options as opt
from repalign._device import check_device
from repalign._io import tomllib
from repalign.errors import ConfigError, RepalignError, did_you_mean

#: ``[alignment] metrics``: "auto" (the dataset's defaults) or a list of metric names
METRIC_CHOICES = (opt.AUTO, *opt.ALIGNMENT_METRICS)
#: ``[robustness] source``: a snapshot, or "none" to switch the stage off
ROBUSTNESS_CHOICES = (opt.NO_ROBUSTNESS, *opt.ROBUSTNESS_SOURCES)


@dataclass(frozen=True)
class StudySection:
    name: str = "study"  # a config file's name (stem) when loaded from a file
    output: str = ""  # "" -> studies/<name>
    seed: int = opt.DEFAULT_SEED
    report: bool = True


@dataclass(frozen=True)
class ModelsSection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # model name -> a local weights file (``--weights``), e.g. { "cifar_resnet:resnet20" = "r20.pt" };
    # a relative path is relative to the config file
    weights: dict[str, str] = field(default_factory=dict)
    # the layers every model is read at (a list), or per model: a table of model name or glob
    # -> layers; a model gets the layers of every entry that matches it, else the default
    layers: tuple[str, ...] | dict[str, tuple[str, ...]] = (opt.DEFAULT_LAYER,)

    def layers_for(self, model: str) -> tuple[str, ...]:
        """The layers of ``model``, in the order given (the default layer when none match)."""
        if not isinstance(self.layers, dict):
            return self.layers
        matched = [layer for pattern, names in self.layers.items() if _matches(pattern, model) for layer in names]
        return tuple(dict.fromkeys(matched)) or (opt.DEFAULT_LAYER,)


@dataclass(frozen=True)
class AlignmentSection:
    human: tuple[str, ...] = ()
    # a sweep: every unit computes alignment under each similarity function (a string in the
    # file is a list of one)
    similarity: tuple[str, ...] = (opt.DEFAULT_SIMILARITY,)
    metrics: str | tuple[str, ...] = opt.AUTO  # "auto": the dataset's defaults
    ties: str = opt.DEFAULT_TIES  # tie rule of the "triplet" metric
    n_bootstrap: int = opt.DEFAULT_N_BOOTSTRAP


@dataclass(frozen=True)
class FewshotSection:
    datasets: tuple[str, ...] = ()
    shots: tuple[int, ...] = opt.DEFAULT_SHOTS
    heads: tuple[str, ...] = opt.HEADS
    n_seeds: int = opt.DEFAULT_N_SEEDS  # a count (seeds 0..n_seeds-1), as --n-seeds; [study] seed is a seed
    # None = the whole test split. TOML has no null, so the file says 0: translated here at the
    # config boundary in both directions (_Validator.build, StudyConfig.to_dict), nowhere else.
    max_eval_per_class: int | None = None


@dataclass(frozen=True)
class CompareSection:
    """Model-vs-model comparison on one image set (off while ``images`` is empty)."""

    images: str = ""  # a human dataset, a few-shot dataset or an image folder, as `repalign compare --images`
    methods: tuple[str, ...] = opt.DEFAULT_COMPARISON_METHODS
    similarity: str = opt.DEFAULT_SIMILARITY  # of the RSA methods' matrices


@dataclass(frozen=True)
class RobustnessSection:
    source: str = opt.NO_ROBUSTNESS


@dataclass(frozen=True)
class ExecutionSection:
    executor: str = opt.DEFAULT_EXECUTOR
    jobs: int = opt.DEFAULT_JOBS
    address: str = ""
    threads: int = 0
    device: str = opt.DEFAULT_DEVICE
    # Ray clusters (docs/cluster.md): seconds to join; a file holding the cluster's auth
    # token (its path only -- the token is never written to the study); GPU memory per GPU
    # for sizing units (0 = opt.DEFAULT_GPU_MEMORY_GB)
    connect_timeout: int = opt.DEFAULT_CONNECT_TIMEOUT_S
    token_file: str = ""
    gpu_memory_gb: int = 0
    # fit the few-shot heads of several models together (study/fewshot_batch.py)
    batch_fewshot: bool = opt.DEFAULT_BATCH_FEWSHOT


@dataclass(frozen=True)
class StudyConfig:
    """A whole study; build with :func:`load_config` or :meth:`from_dict`."""

    study: StudySection = field(default_factory=StudySection)
    models: ModelsSection = field(default_factory=ModelsSection)
    alignment: AlignmentSection = field(default_factory=AlignmentSection)
    fewshot: FewshotSection = field(default_factory=FewshotSection)
    robustness: RobustnessSection = field(default_factory=RobustnessSection)
    execution: ExecutionSection = field(default_factory=ExecutionSection)
    compare: CompareSection = field(default_factory=CompareSection)

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
        if self.robustness.source != opt.NO_ROBUSTNESS:
            stages.append("robustness")
        return tuple(stages)

    def stage_fingerprints(self) -> dict[str, str]:
        """sha256, per stage this study runs, of the settings that determine its values.

        A stage's values depend on its own section only -- and alignment also on ``[study]
        seed``, which seeds its bootstrap (few-shot splits and heads are seeded by seed
        index, robustness rows are published numbers). So changing ``[alignment] ties``
        recomputes a finished unit's alignment rows and keeps its few-shot rows.
        """
        d = self.to_dict()
        fingerprints = {}
        for stage in self.stages:
            settings: dict[str, Any] = {stage: d[stage]}
            if stage == "fewshot":  # hashed under its first name (seeds), so studies run before the rename resume
                settings[stage] = {("seeds" if k == "n_seeds" else k): v for k, v in d[stage].items()}
            if stage == "alignment":
                settings["seed"] = d["study"]["seed"]
            fingerprints[stage] = _sha256_json(settings)
        return fingerprints

    def results_fingerprint(self) -> str:
        """sha256 of everything that determines result values (not how they are executed).

        A finished unit whose fingerprint differs from the current config's is stale: on
        resume, the stages whose :meth:`stage_fingerprints` changed are computed again.
        """
        return _sha256_json(self.stage_fingerprints())

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
            out[f.name] = {k: _plain(v) for k, v in dataclasses.asdict(section).items()}
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
    """Read and validate a study config file (TOML).

    Paths in it -- ``[models] weights`` files, and ``[alignment] human`` / ``[fewshot] datasets``
    entries that are not built-in names -- are relative to the file's folder, not to the
    working directory; the config holds them resolved (absolute).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file not found: {path}. Pass the path of a TOML study config, e.g. configs/quickstart.toml"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the config as UTF-8"
        ) from None
    return parse_config(text, name=path.stem, origin=str(path), base_dir=path.resolve().parent)


def parse_config(
    text: str, *, name: str | None = None, origin: str = "config", base_dir: str | os.PathLike | None = None
) -> StudyConfig:
    """Validate TOML text into a config; relative paths in it are resolved against ``base_dir``
    (None: left as written, i.e. relative to the working directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    config = StudyConfig.from_dict(data, source_text=text, name=name)
    return config if base_dir is None else _resolve_paths(config, Path(base_dir))


def _resolve_paths(config: StudyConfig, base: Path) -> StudyConfig:
    """The config with its relative paths made absolute against ``base`` (the config's folder).

    A built-in name (``peterson:animals``, ``mnist``) is never a path; any other entry is one
    when it exists under ``base`` or is written like a path (a separator, a suffix, ``~``).
    """
    from repalign.data.fewshot_datasets import FEWSHOT_DATASETS

    def resolved(entry: str) -> str:
        path = Path(entry).expanduser()
        if path.is_absolute():
            return entry
        return str((base / path).resolve())

    def is_path(entry: str) -> bool:
        return (
            "/" in entry
            or os.sep in entry
            or entry.startswith("~")
            or bool(Path(entry).suffix)
            or (base / entry).exists()
        )

    human = tuple(
        resolved(h) if not (h == "peterson" or h.startswith("peterson:")) and is_path(h) else h
        for h in config.alignment.human
    )
    datasets = tuple(resolved(d) if d not in FEWSHOT_DATASETS and is_path(d) else d for d in config.fewshot.datasets)
    weights = {model: resolved(path) for model, path in config.models.weights.items()}
    return dataclasses.replace(
        config,
        models=dataclasses.replace(config.models, weights=weights),
        alignment=dataclasses.replace(config.alignment, human=human),
        fewshot=dataclasses.replace(config.fewshot, datasets=datasets),
    )


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
    "compare": CompareSection,
}

#: keys renamed for one spelling everywhere: section -> {old spelling: new spelling}; the old
#: one is still read
_RENAMED_KEYS = {"fewshot": {"seeds": "n_seeds"}}


_UNSET = object()


@dataclass(frozen=True)
class _Given:
    """The keys given for one section, and the defaults of its dataclass."""

    name: str
    values: dict[str, Any]
    cls: type

    def default(self, key: str) -> Any:
        f = next(f for f in dataclasses.fields(self.cls) if f.name == key)
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    def get(self, key: str, default: Any = _UNSET) -> Any:
        if key in self.values:
            return self.values[key]
        return self.default(key) if default is _UNSET else default


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
        data = self.renamed(data)
        for section, cls in _SECTIONS.items():
            valid = {f.name for f in dataclasses.fields(cls)}
            for key in data.get(section, {}):
                if key not in valid:
                    hint = did_you_mean(key, valid) or f" Valid keys: {', '.join(sorted(valid))}."
                    raise self.fail(section, key, f"unknown key.{hint}")

        s = self.section(data, "study")
        study = StudySection(
            name=self.study_name(s, "name", default_name or s.default("name")),
            output=self.string(s, "output"),
            seed=self.integer(s, "seed", minimum=0, maximum=opt.MAX_SEED),
            report=self.boolean(s, "report"),
        )
        m = self.section(data, "models")
        if "include" not in m.values:
            raise self.fail(
                "models", "include", 'is required: list the models to study, e.g. include = ["pixels", "tflite:*"]'
            )
        models = ModelsSection(
            include=self.strings(m, "include", nonempty=True),
            exclude=self.strings(m, "exclude"),
            weights=self.weights(m, "weights"),
            layers=self.layers(m, "layers"),
        )
        a = self.section(data, "alignment")
        alignment = AlignmentSection(
            human=self.strings(a, "human"),
            similarity=self.choices(a, "similarity", opt.SIMILARITY_METRICS),
            metrics=self.metrics(a, "metrics"),
            ties=self.choice(a, "ties", opt.TIE_MODES),
            n_bootstrap=self.integer(a, "n_bootstrap", minimum=0, maximum=opt.MAX_N_BOOTSTRAP),
        )
        f = self.section(data, "fewshot")
        fewshot = FewshotSection(
            datasets=self.strings(f, "datasets"),
            shots=tuple(sorted(set(self.integers(f, "shots", minimum=1)))),
            heads=self.choices(f, "heads", opt.HEADS),
            n_seeds=self.integer(f, "n_seeds", minimum=1),
            max_eval_per_class=self.cap(f, "max_eval_per_class"),
        )
        r = self.section(data, "robustness")
        robustness = RobustnessSection(source=self.choice(r, "source", ROBUSTNESS_CHOICES))
        e = self.section(data, "execution")
        execution = ExecutionSection(
            executor=self.choice(e, "executor", opt.EXECUTORS),
            jobs=self.integer(e, "jobs", minimum=1),
            address=self.address(e, "address"),
            threads=self.integer(e, "threads", minimum=0, maximum=opt.MAX_THREADS),
            device=self.device(e, "device"),
            connect_timeout=self.integer(e, "connect_timeout", minimum=1, maximum=3600),
            token_file=self.string(e, "token_file"),
            gpu_memory_gb=self.integer(e, "gpu_memory_gb", minimum=0, maximum=4096),
            batch_fewshot=self.boolean(e, "batch_fewshot"),
        )
        c = self.section(data, "compare")
        compare = CompareSection(
            images=self.string(c, "images"),
            methods=self.choices(c, "methods", opt.COMPARISON_METHODS),
            similarity=self.choice(c, "similarity", opt.SIMILARITY_METRICS),
        )
        return StudyConfig(study, models, alignment, fewshot, robustness, execution, compare)

    def renamed(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with old key spellings under their new names (both given: an error)."""
        data = dict(data)
        for section, renames in _RENAMED_KEYS.items():
            values = data.get(section)
            if not isinstance(values, dict):
                continue
            values = dict(values)
            for old, new in renames.items():
                if old in values:
                    if new in values:
                        raise self.fail(section, old, f"is the old spelling of {new}; give {new} only")
                    values[new] = values.pop(old)
            data[section] = values
        return data

    # -- typed getters: each reads one key of a section, or the dataclass's default -----
    def section(self, data: dict[str, Any], name: str) -> _Given:
        return _Given(name, data.get(name, {}), _SECTIONS[name])

    def string(self, d: _Given, key, default=_UNSET, *, nonempty=False) -> str:
        value = d.get(key, default)
        if not isinstance(value, str):
            raise self.fail(d.name, key, f"expected a string, got {_type(value)}")
        if nonempty and not value.strip():
            raise self.fail(d.name, key, "must not be empty")
        return value

    def boolean(self, d: _Given, key) -> bool:
        value = d.get(key)
        if not isinstance(value, bool):
            raise self.fail(d.name, key, f"expected true or false, got {_type(value)}")
        return value

    def integer(self, d: _Given, key, *, minimum=None, maximum=None) -> int:
        value = d.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(d.name, key, f"expected an integer, got {_type(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(d.name, key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.fail(d.name, key, f"must be <= {maximum}, got {value}")
        return value

    def study_name(self, d: _Given, key, default) -> str:
        """The study's name names its directory (``studies/<name>``): one path component,
        so it can never point elsewhere; ``output`` is where an explicit path goes."""
        value = self.string(d, key, default, nonempty=True)
        if not is_safe_name(value):
            raise self.fail(
                d.name,
                key,
                f"{value!r} is not a plain name: no '/', '\\', '..', control characters or surrounding spaces. "
                "Put a path in [study] output instead",
            )
        return value

    def address(self, d: _Given, key) -> str:
        value = self.string(d, key)
        if value and not _RAY_ADDRESS.fullmatch(value):
            raise self.fail(d.name, key, f'{value!r} is not a Ray address: use "auto", HOST:PORT or ray://HOST:PORT')
        return value

    def strings(self, d: _Given, key, *, nonempty=False) -> tuple[str, ...]:
        value = d.get(key)
        if isinstance(value, str):  # a single name is a list of one
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(d.name, key, f"expected a list of non-empty strings, got {_type(value)}")
        if nonempty and not value:
            raise self.fail(d.name, key, "must list at least one entry")
        return tuple(dict.fromkeys(value))  # drop duplicates, keep order

    def weights(self, d: _Given, key) -> dict[str, str]:
        """A table of model name -> weights file path."""
        from repalign.models import parse_model_name

        value = d.get(key)
        if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
            raise self.fail(
                d.name,
                key,
                f'expected a table of model name = "weights file", e.g. {{ "timm:resnet50" = "r50.pt" }}, '
                f"got {_type(value)}",
            )
        for model in value:
            try:
                parse_model_name(model)
            except RepalignError as exc:
                raise self.fail(d.name, key, f"{model!r}: {exc}") from None
        return dict(value)

    def cap(self, d: _Given, key) -> int | None:
        """An optional positive cap: the file's 0 (or no key) means none (TOML has no null)."""
        if key not in d.values:
            return d.default(key)
        return self.integer(d, key, minimum=0) or None

    def integers(self, d: _Given, key, *, minimum=None) -> tuple[int, ...]:
        value = d.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise self.fail(d.name, key, f"expected a non-empty list of integers, got {_type(value)}")
        bad = [v for v in value if minimum is not None and v < minimum]
        if bad:
            raise self.fail(d.name, key, f"every entry must be >= {minimum}, got {bad[0]}")
        return tuple(value)

    def choice(self, d: _Given, key, valid) -> str:
        value = self.string(d, key)
        self.check_choice(d, key, value, valid)
        return value

    def choices(self, d: _Given, key, valid) -> tuple[str, ...]:
        values = self.strings(d, key, nonempty=True)
        for value in values:
            self.check_choice(d, key, value, valid)
        return values

    def check_choice(self, d: _Given, key, value, valid) -> None:
        if value not in valid:
            hint = did_you_mean(value, valid) or ""
            raise self.fail(d.name, key, f"unknown value '{value}'.{hint} Valid: {', '.join(valid)}")

    def metrics(self, d: _Given, key) -> str | tuple[str, ...]:
        """Either "auto" (alone: a string or a list of one) or a list of metric names."""
        values = self.choices(d, key, METRIC_CHOICES)
        if opt.AUTO not in values:
            return values
        if len(values) > 1:
            raise self.fail(d.name, key, f'"{opt.AUTO}" stands alone: give "auto" or a list of metric names')
        return opt.AUTO

    def layers(self, d: _Given, key) -> tuple[str, ...] | dict[str, tuple[str, ...]]:
        """A list of layer names (every model), or a table of model name or glob -> layers."""
        value = d.get(key)
        if not isinstance(value, dict):
            return self.strings(d, key, nonempty=True)
        if not value:
            raise self.fail(
                d.name, key, 'the table names no model; e.g. layers = {"timm:*" = ["penultimate", "layer3"]}'
            )
        out = {}
        for pattern, names in value.items():
            if not pattern.strip():
                raise self.fail(d.name, key, "a model name or glob must not be empty")
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not names or not all(isinstance(v, str) and v.strip() for v in names):
                raise self.fail(
                    d.name, key, f"'{pattern}': expected a non-empty list of layer names, got {_type(names)}"
                )
            out[pattern] = tuple(dict.fromkeys(names))
        return out

    def device(self, d: _Given, key) -> str:
        value = self.string(d, key)
        try:
            return check_device(value)
        except RepalignError as exc:
            raise self.fail(d.name, key, str(exc)) from None


#: ``[execution] address``: "auto", "local", HOST:PORT or ray://HOST:PORT (a port 1-65535)
_RAY_ADDRESS = re.compile(
    r"auto|local|(ray://)?([A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:.]+\]):"
    r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)


def is_safe_name(name: str) -> bool:
    """True for a name that is one path component: no separators, not ``.``/``..``, no
    control characters, no surrounding spaces, at most 255 bytes (a file name's limit)."""
    return (
        bool(name)
        and name == name.strip()
        and name not in (".", "..")
        and not any(c in name for c in "/\\")
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
        and len(name.encode("utf-8", "surrogatepass")) <= 255
    )


def _matches(pattern: str, model: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(model, pattern)


def _plain(value: Any) -> Any:
    """Tuples as lists, also inside a table: JSON/TOML serialisable."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


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
    if isinstance(value, dict):  # an inline table; keys quoted (model names hold ':' and '*')
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
