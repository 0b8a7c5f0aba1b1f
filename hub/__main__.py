"""``ctinit-hub``: export, push, pull and list ctinit initializations (see ``hub/__init__.py``)."""
from __future__ import annotations

import argparse
import sys

from ctinit.entrypoint import ArgumentParser

#: The command's name, as the user types it (errors and log lines start with it).
PROG = "ctinit-hub"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_export(args) -> int:
    from .export import export_run

    out = export_run(args.run_dir, args.out_dir, repo_id=args.repo, license=args.license, results=args.results,
                     template=args.template, overwrite=args.overwrite)
    _log(f"{PROG} export: wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    print(out)
    return 0


def cmd_push(args) -> int:
    from .remote import push

    info = push(args.export_dir, args.repo, private=args.private, revision=args.revision,
                commit_message=args.commit_message, create_pr=args.create_pr, overwrite_card=args.overwrite_card,
                log=_log)
    _log(f"{PROG} push: {args.repo}" + (f" ({args.revision})" if args.revision else ""))
    print(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
    return 0


def cmd_pull(args) -> int:
    from .remote import pull

    folder, commit = pull(args.repo, revision=args.revision, out=args.out)
    _log(f"{PROG} pull: {args.repo}@{args.revision or 'main'} -> {folder}")
    print(commit or "unknown (cached copy without a commit hash)")
    print(folder)
    return 0


def cmd_update_card(args) -> int:
    from ctinit.report import load_results

    from .card import update_card

    readme = update_card(args.export_dir, load_results(args.results), init=args.init)
    _log(f"{PROG} update-card: wrote the results into {readme} (model-index, results table, results.json, curves.png)")
    return 0


def cmd_push_zoo(args) -> int:
    import json

    from .zoo import push_zoo

    pushed = push_zoo(args.org, dry_run=args.dry_run, private=args.private, record=args.record, log=_log)
    for item in pushed:
        _log(f"hub push-zoo: zoo:{item['name']} -> {item['repo_id']}"
             + (f" ({', '.join(item['files'])}; dry run, nothing uploaded)" if args.dry_run else f": {item['url']}"))
        print(json.dumps(item))
    return 0


def cmd_list(args) -> int:
    from ctinit.catalog import print_inits

    return print_inits(args.author, args.search, args.limit, args.json, f"{PROG} list")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Publish ctinit initializations on the Hugging Face Hub.")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("export", help="turn a meta-training run into a Hub model repo folder (weights, config, card, recipe)")
    ex.add_argument("run_dir", help="a meta-training run directory (ctinit-train --out)")
    ex.add_argument("out_dir", help="the folder to write (new, or --overwrite)")
    ex.add_argument("--repo", default=None, help="the Hub id ORG/NAME the card's snippets use (default: filled in by push)")
    ex.add_argument("--license", default=None,
                    help="the card's license, a Hub license id (default: apache-2.0 for a run on the bundled glyph "
                         "suite only; otherwise 'other', saying that no license was chosen)")
    ex.add_argument("--results", default=None, help="a `ctinit evaluate --out` folder (or results.json) to report in the card")
    ex.add_argument("--template", default=None, help="a jinja2 card template (default: the one installed with ctinit)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export in OUT_DIR")
    ex.set_defaults(func=cmd_export)

    pu = sub.add_parser("push", help="upload an export folder to a Hub model repo (created if needed)")
    pu.add_argument("export_dir")
    pu.add_argument("--repo", required=True, help="ORG/NAME")
    pu.add_argument("--private", action="store_true", help="create the repo private")
    pu.add_argument("--revision", default=None, help="branch to push to (created from main if needed)")
    pu.add_argument("--commit-message", default=None)
    pu.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    pu.add_argument("--overwrite-card", action="store_true", help="replace the card already on the Hub (default: keep it)")
    pu.set_defaults(func=cmd_push)

    uc = sub.add_parser("update-card", help="write `ctinit evaluate` results into an export's card")
    uc.add_argument("export_dir")
    uc.add_argument("results", help="a `ctinit evaluate --out` folder (or its results.json)")
    uc.add_argument("--init", default=None, help="which evaluated --init the card is about (default: the one with the export's weights)")
    uc.set_defaults(func=cmd_update_card)

    pl = sub.add_parser("pull", help="download an initialization; prints the resolved commit hash, then the folder")
    pl.add_argument("repo", help="ORG/NAME[@REVISION]")
    pl.add_argument("--revision", default=None, help="branch, tag or commit hash (default main)")
    pl.add_argument("--out", default=None, help="a folder to download into (default: the Hugging Face cache)")
    pl.set_defaults(func=cmd_pull)

    pz = sub.add_parser("push-zoo", help="push every zoo entry (ctinit list) as the Hub model repo ORG/NAME: weights, "
                                         "config, card (rendered from the registry, replacing the Hub's), recipe")
    pz.add_argument("--org", required=True, help="the Hub organization or user to push to")
    pz.add_argument("--dry-run", action="store_true", help="stage and check every repo folder; upload nothing")
    pz.add_argument("--private", action="store_true", help="create the repos private")
    pz.add_argument("--record", action="store_true",
                    help="write each repo id and pushed commit into the registry (maintainers, in a checkout)")
    pz.set_defaults(func=cmd_push_zoo)

    ls = sub.add_parser("list", help="initializations published with ctinit (same as `ctinit list --hub`)")
    ls.add_argument("--author", default=None)
    ls.add_argument("--search", default=None)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    for p in (ex, pu, uc, pl, pz, ls):
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ctinit.entrypoint import run_command

    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
