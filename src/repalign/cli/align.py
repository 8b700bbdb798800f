"""``repalign align``: alignment of a model (or precomputed embeddings) with human datasets.

Two ways to give the model side:

* ``repalign align MODEL --human peterson:animals``: embeddings are extracted from the
  dataset's images (through the embedding cache) and records carry ``model``/``model_id``;
* ``repalign align --embeddings FILE --human DATASET``: ``FILE`` is an embeddings file as
  ``repalign embed --out`` writes it (docs/own-data.md): an ``.npz`` with ``embeddings`` and
  ``stimuli`` (rows matched to the dataset's stimulus names, so one file can serve several
  datasets; records carry the ``model``/``model_id`` the file names), or an ``.npy`` with one
  row per stimulus in the dataset's order.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from repalign import _options as opt
from repalign.cli._output import (
    CommaList,
    add_device_option,
    add_format_option,
    add_layer_option,
    bootstrap_option,
    comma_values,
    emit,
    seed_option,
)
from repalign.errors import InputError, MissingDataError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "align",
        help="alignment of a model or of precomputed embeddings with human similarity data",
        description="Compare a model's similarity matrix with human similarity judgments: Pearson / "
        "Spearman / Kendall correlation of the pairwise similarities and exact triplet agreement, with "
        "stimulus-bootstrap 95% confidence intervals. See docs/alignment.md.",
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="model name, e.g. timm:resnet50 (or use --embeddings)"
    )
    parser.add_argument(
        "--embeddings",
        metavar="FILE",
        type=Path,
        help="an embeddings file: .npz with 'embeddings' and 'stimuli' (as embed --out writes), or .npy "
        "(rows in the dataset's stimulus order)",
    )
    parser.add_argument(
        "--human",
        required=True,
        action=CommaList,
        metavar="DATASET[,DATASET...]",
        help="human datasets: peterson, peterson:animals, ..., a user dataset folder/manifest, or one matrix "
        "file (sim.csv, rdm.npy; square or condensed in pdist order)",
    )
    parser.add_argument(
        "--human-names",
        metavar="FILE",
        help="names file of a --human matrix file without names (one name a line, in matrix order)",
    )
    parser.add_argument(
        "--dissimilarity",
        action="store_true",
        help="the --human matrix file holds dissimilarities (distances), not similarities",
    )
    parser.add_argument(
        "--similarity",
        choices=opt.SIMILARITY_METRICS,
        default=opt.DEFAULT_SIMILARITY,
        help="model similarity (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics",
        action=CommaList,
        default=opt.AUTO,
        metavar="M[,M...]",
        help=f"comma-separated, from {', '.join(opt.ALIGNMENT_METRICS)}, or auto (the default): "
        f"{','.join(opt.DEFAULT_METRICS)} where a dataset has a similarity matrix, plus triplet_accuracy "
        "where it has triplet judgments",
    )
    parser.add_argument(
        "--ties",
        choices=opt.TIE_MODES,
        default=opt.DEFAULT_TIES,
        help="tie rule of the triplet metric: exclude (left out), half (half credit) or strict (the paper's "
        "Definition 3.5: a tie is bit 0) (default: %(default)s)",
    )
    # the count is --n-bootstrap everywhere (align, report, the TOML's n_bootstrap); --bootstrap,
    # the old spelling, still works and is not shown
    parser.add_argument(
        "--bootstrap", dest="n_bootstrap", type=bootstrap_option(), default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--n-bootstrap",
        type=bootstrap_option(),
        default=opt.DEFAULT_N_BOOTSTRAP,
        metavar="N",
        help=f"stimulus-bootstrap resamples, 0 = no CI, at most {opt.MAX_N_BOOTSTRAP} (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=seed_option(), default=opt.DEFAULT_SEED, help="bootstrap seed (default: %(default)s)"
    )
    add_device_option(parser, note="MODEL only: ")
    add_layer_option(parser, what="all from one forward pass (with --embeddings FILE: the file's layers to score)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="MODEL only: images per batch")
    parser.add_argument("--weights", metavar="PATH", help="MODEL only: a local weights file for the model")
    add_format_option(parser)
    parser.set_defaults(handler=run_align)


def run_align(args) -> int:
    from repalign.alignment import ALIGNMENT_METRICS, compute_alignment
    from repalign.errors import unknown_name

    if (args.model is None) == (args.embeddings is None):
        raise InputError("Give either a MODEL or --embeddings FILE (exactly one of them)")
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if not metrics:
        raise InputError("--metrics is empty; give e.g. --metrics pearson,spearman,triplet")
    if metrics == (opt.AUTO,):
        metrics = None  # the dataset's defaults
    for metric in metrics or ():  # before any (slow) embedding extraction
        if metric not in ALIGNMENT_METRICS:
            raise unknown_name("alignment metric", metric, ALIGNMENT_METRICS)
    if args.embeddings is not None and args.batch_size is not None:
        raise InputError("--batch-size applies to MODEL only, not to --embeddings")
    if args.embeddings is not None and args.weights is not None:
        raise InputError("--weights applies to MODEL only; the embeddings in --embeddings are computed already")
    if args.model is not None:  # cuda asked for and absent is an error even when every embedding is cached
        from repalign._device import require_device

        require_device(args.device)
    datasets = _load_datasets(args.human, names=args.human_names, dissimilarity=args.dissimilarity)
    provider = (
        _ModelEmbeddings(args) if args.model is not None else _FileEmbeddings(args.embeddings, comma_values(args.layer))
    )

    records = []
    for human in datasets:
        by_layer = provider.for_dataset(human, many=len(datasets) > 1)
        if by_layer is None:
            continue
        for layer, embeddings in by_layer.items():
            rows = compute_alignment(
                embeddings,
                human,
                similarity=args.similarity,
                metrics=metrics,
                n_bootstrap=args.n_bootstrap,
                random_state=args.seed,
                ties=args.ties,
                progress=sys.stderr.isatty(),
            )
            layer_column = {} if layer is None else {"layer": layer}
            records.extend({**provider.identity, **layer_column, **row} for row in rows.to_dict(orient="records"))
    if not records:
        raise MissingDataError(f"No dataset in '{args.human}' could be scored (see the warnings above)")
    if args.format == "table":
        records, title = _compact_for_terminal(records)
        emit(records, "table", title=title)
    else:
        emit(records, args.format)
    return 0


def _compact_for_terminal(records: list[dict]) -> tuple[list[dict], str]:
    """Move columns that hold one value for every record into the table's title."""
    shared = [c for c in ("model", "model_id", "layer", "similarity", "n") if c in records[0]]
    shared = [c for c in shared if len({r[c] for r in records}) == 1]
    details = [f"{c}={records[0][c]}" for c in shared]
    # ties is set on triplet records only (null on the others): one rule for all goes to the title
    tie_rules = {r["ties"] for r in records if r.get("ties") is not None}
    if len(tie_rules) <= 1:
        shared.append("ties")
        details += [f"ties={rule} (triplet)" for rule in tie_rules]
    # ceilings where no dataset has one (most data: no repeated judgments): not worth two columns
    shared += [c for c in ("ceiling_low", "ceiling_high") if all(math.isnan(r[c]) for r in records)]
    title = "Alignment with human similarity, 95% stimulus-bootstrap CI"
    compact = [{k: v for k, v in r.items() if k not in shared} for r in records]
    return compact, f"{title}\n{', '.join(details)}" if details else title


def _load_datasets(spec: str, *, names: str | None = None, dissimilarity: bool = False) -> list:
    from repalign.data.human import load_human

    datasets = []
    for part in (p.strip() for p in spec.split(",")):
        if part:
            datasets.extend(load_human(part, names=names, dissimilarity=dissimilarity))
    if not datasets:
        raise InputError(f"--human '{spec}' names no dataset")
    return datasets


class _ModelEmbeddings:
    """Embeddings extracted from each dataset's images by a named model."""

    def __init__(self, args):
        from repalign.models import resolve_model

        self.args = args
        spec = resolve_model(args.model)
        self.identity = {"model": args.model, "model_id": spec.resolved_id}

    def for_dataset(self, human, *, many: bool):
        from repalign.embed import extract_embeddings

        if many and human.image_paths is None:
            # scoring "peterson" as a whole: skip the domains without images, say so
            log.warning("Skipping %s: its images are not available (only its similarity matrix is)", human.name)
            return None
        images = human.images()  # MissingDataError naming the files when a single dataset lacks them
        # a list: {layer: embeddings}, every layer from one forward pass (and one cache entry each)
        return extract_embeddings(
            self.args.model,
            images,
            layer=comma_values(self.args.layer) or [opt.DEFAULT_LAYER],
            device=self.args.device,
            batch_size=self.args.batch_size,
            weights=self.args.weights,
            progress=True,
        )


class _FileEmbeddings:
    """Precomputed embeddings from an embeddings file: .npz (rows named) or .npy (dataset order);
    ``layers``: the file's layers to score (None: its only one)."""

    def __init__(self, path: Path, layers: list[str] | None = None):
        from repalign.embed import read_embeddings_file

        files = [read_embeddings_file(path, layer=layer) for layer in (layers or [None])]
        self.source = path.name
        # the model the file says produced it: records then read as those of `align MODEL`
        first = files[0]
        self.identity = {k: v for k, v in (("model", first.model), ("model_id", first.model_id)) if v is not None}
        self.names = first.stimuli
        # a layer the file does not name (a bare array) is no layer key
        self.by_layer = {file.layer: file.embeddings for file in files}

    def for_dataset(self, human, *, many: bool):
        from repalign.embed import NoMatchingStimuliError, match_stimuli

        try:
            return {
                layer: match_stimuli(embeddings, self.names, human, source=self.source)
                for layer, embeddings in self.by_layer.items()
            }
        except NoMatchingStimuliError:
            if not many:
                raise
            # one file for several datasets: a dataset it holds nothing of is skipped, said so
            log.warning("Skipping %s: none of its stimuli is named in %s", human.name, self.source)
            return None
