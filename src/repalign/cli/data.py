"""``repalign data list | info NAME | fetch NAME... | verify [NAME]``: the dataset registry."""

from __future__ import annotations

import argparse

from repalign.cli._output import add_format_option, emit

#: Exit code of ``repalign data verify`` when a file is corrupt or missing.
EXIT_PROBLEMS = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="list, inspect, fetch and verify datasets",
        description="Datasets are resolved from the data home ($REPALIGN_DATA_HOME), else copied from the "
        "mirror ($REPALIGN_MIRROR), else downloaded; every file is checked against its checksum.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")

    listing = actions.add_parser("list", help="registered datasets and where each would come from")
    add_format_option(listing)
    listing.set_defaults(handler=_list)

    info = actions.add_parser("info", help="provenance, license, citation and location of a dataset")
    info.add_argument("name")
    add_format_option(info)
    info.set_defaults(handler=_info)

    fetch = actions.add_parser("fetch", help="copy (mirror) or download a dataset into the data home, verified")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_format_option(fetch)
    fetch.set_defaults(handler=_fetch)

    check = actions.add_parser("verify", help="re-hash files in the data home; exit 1 when any is corrupt or missing")
    check.add_argument("name", nargs="?", help="one dataset (default: every dataset in the data home)")
    check.add_argument("--quick", action="store_true", help="trust verification stamps of unchanged files")
    add_format_option(check)
    check.set_defaults(handler=_verify)

    parser.set_defaults(handler=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _list(args) -> int:
    from repalign import data as registry

    rows = [
        {"name": name, "description": registry.DATASETS[name].description, "status": registry.dataset_status(name)}
        for name in registry.list_datasets()
    ]
    emit(rows, args.format, title="datasets (status: present = in the data home, mirror, download, unavailable)")
    return 0


def _info(args) -> int:
    from repalign.data import dataset_info

    info = dataset_info(args.name)
    if args.format == "table":
        emit([{"field": k, "value": v} for k, v in info.items()], "table", title=args.name)
    else:
        emit([info], args.format)
    return 0


def _fetch(args) -> int:
    from repalign.data import fetch

    rows = [{"name": name, "path": str(fetch(name, progress=not args.no_progress))} for name in args.names]
    emit(rows, args.format)
    return 0


def _verify(args) -> int:
    from repalign.data import verify

    records = verify(args.name, full=not args.quick)
    summary: dict[str, dict] = {}
    for record in records:
        row = summary.setdefault(
            record["dataset"],
            {"dataset": record["dataset"], "status": "ok", "n_ok": 0, "n_problems": 0, "problems": []},
        )
        if record["status"] == "absent":
            row["status"] = "absent"
        elif record["status"] == "ok":
            row["n_ok"] += 1
        else:
            row["n_problems"] += 1
            row["status"] = "problems"
            row["problems"].append(f"{record['file']}: {record['status']} ({record['detail']})")
    rows = list(summary.values())
    if args.format != "json":
        for row in rows:
            shown = row["problems"][:3]
            more = f" (+{len(row['problems']) - 3} more)" if len(row["problems"]) > 3 else ""
            row["problems"] = "; ".join(shown) + more
    emit(rows, args.format, title="verification of the data home")
    return EXIT_PROBLEMS if any(row["n_problems"] for row in rows) else 0
