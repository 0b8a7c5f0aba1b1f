"""The ``ctinit`` command line.

    ctinit finetune --init zoo:NAME|DIR|ORG/NAME[@REV]|scratch:... --data SPEC --steps N [--seed S] [--json]
                    [--out DIR [--overwrite]] [--push-to-hub ORG/NAME [--private] [--create-pr] [--overwrite-card]]
    ctinit predict --model DIR|ORG/NAME[@REV] IMAGE_OR_FOLDER... [--top-k K] [--batch-size N] [--json]
    ctinit evaluate --init A --init scratch:A --data SPEC [--data SPEC ...] --seeds 3 --steps N --out DIR
    ctinit pick --data SPEC [--inits zoo:A zoo:B ...] [--steps N] [--seeds K] [--json]
    ctinit list [NAME] [--wide] [--json] # offline: the zoo, backbones, bundled tasks, recipes
    ctinit list --hub [--author ORG] [--search TEXT]

Logs and progress go to stderr; results go to stdout. Bad input gets one line on stderr and a non-zero exit
(``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys

from .entrypoint import EXIT_BAD_INPUT, ArgumentParser, run_command
from .cli_recipe import add_recipe_args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: FinetuneConfig keys as the command line spells them (for one-line errors that name the option).
_OPTION_NAMES = {"optimizer.weight_decay": "--weight-decay", "optimizer.lr": "--lr", "optimizer.name": "--optimizer",
                 "batch_size": "--batch-size", "eval_every": "--eval-every", "mixed_precision": "--mixed-precision",
                 "milestones": "--milestones", "steps": "--steps", "gamma": "--gamma", "seed": "--seed",
                 "epochs": "--epochs", "early_stop": "--early-stop", "warmup": "--warmup",
                 "label_smoothing": "--label-smoothing", "schedule": "--schedule"}


def _quiet_transformers() -> None:
    """No transformers progress bars or load reports on the command line: results and one-line errors only."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _recipe(args, seed: int = 0):
    """The fine-tuning recipe from the options, and every other option checked, before any work starts."""
    from .schema import NonNegInt, check_device, check_option
    from .errors import ConfigError
    from .finetune import make_config
    from .cli_recipe import length_options

    optimizer = {"name": args.optimizer, "lr": args.lr}
    if args.weight_decay:
        optimizer["weight_decay"] = args.weight_decay
    overrides = dict(**length_options(args), batch_size=args.batch_size, optimizer=optimizer, seed=seed,
                     schedule=args.schedule, warmup=args.warmup, label_smoothing=args.label_smoothing,
                     eval_every=args.eval_every, augment=not args.no_augment, hflip=args.hflip,
                     mixed_precision=args.mixed_precision, progress=not args.no_progress,
                     channels_last={"auto": "auto", "on": True, "off": False}[args.channels_last])
    if args.milestones is not None:
        overrides["milestones"] = tuple(args.milestones)
    if args.gamma is not None:
        overrides["gamma"] = args.gamma
    try:
        config = make_config(None, **overrides)
    except ConfigError as e:
        message = str(e)
        for key, option in _OPTION_NAMES.items():
            if message.startswith((key + " ", key + ".", key + ":")):
                message = option + message[len(key):]
                break
        raise ConfigError(message) from None
    check_option("--max-train-per-class", args.max_train_per_class, NonNegInt)
    check_option("--max-train-samples", args.max_train_samples, NonNegInt)
    from .tasks.subsets import check_validation

    check_validation(args.val_fraction, "test")
    args.device = check_device(args.device)
    return config


def cmd_finetune(args) -> int:
    from .models.finetuned_folder import own_out_dir
    from .tasks import parse_spec

    config = _recipe(args, seed=args.seed)
    parse_spec(args.data)  # an unknown spec fails before anything is downloaded
    # --out is checked and held from before the first step until the model is saved: a second command on it is
    # refused before it trains.
    with own_out_dir(args.out, args.overwrite) if args.out else contextlib.nullcontext():
        return _finetune(args, config)


def _finetune(args, config) -> int:
    from .tasks.subsets import prepare_task
    from .finetune import finetune
    from .hubio import check_license, check_push
    from .loading import init_info, load_init, resolve_init
    from .models import ImageClassifier, image_size_of
    from .tasks import load_task

    # Everything that would make the end fail is checked before the first step, so that no training is lost.
    if args.push_to_hub:
        check_push(args.push_to_hub)
    if args.license is not None:
        check_license(args.license)
    source = resolve_init(args.init, args.revision)
    backbone = load_init(source, seed=args.seed)
    task = load_task(args.data, image_size=image_size_of(backbone), seed=args.seed)
    # A curve is measured on a validation split held out of training (as `ctinit evaluate` does), never on test.
    # Early stopping (--steps auto) chooses the weights on it too.
    held_out = args.val_fraction if (args.eval_every or config.early_stop) else 0
    task, validation = prepare_task(task, args.seed, held_out, "test", args.max_train_per_class,
                                    args.max_train_samples)
    length = f"{config.steps} steps" if config.epochs is None and not config.early_stop else "length below"
    _log(f"ctinit finetune: init {source.describe()} ({type(backbone).__name__}), task {task.name}: "
         f"{task.num_classes} classes, {len(task.y_train)} train / "
         f"{len(validation.y_train) if validation is not None else 0} validation / {len(task.y_test)} test, "
         f"{length}, seed {args.seed}")
    classifier = ImageClassifier(backbone)
    result = finetune(classifier, task, config, device=args.device, log=_log, validation=validation)
    report = {
        "init": args.init, "data": args.data, "task": task.name, "num_classes": task.num_classes,
        "train_size": len(task.y_train), "test_size": len(task.y_test), "seed": args.seed,
        "validation_size": len(validation.y_train) if validation is not None else 0,
        "algorithm": init_info(source).get("algorithm", "scratch" if source.scratch else None),
        "repo_id": source.repo_id, "commit": source.commit,
        **result.to_dict(),
    }
    if args.out or args.push_to_hub:
        _quiet_transformers()
        made_with = provenance(source, task, args.data, config, result)
        if args.out:
            classifier.cpu().save_pretrained(args.out, labels=task.classes, made_with=made_with, license=args.license,
                                             overwrite=args.overwrite, repo_id=args.push_to_hub)
            report["out"] = str(args.out)
            _log(f"ctinit finetune: wrote {args.out} (load it with transformers or `ctinit predict --model {args.out}`)")
        if args.push_to_hub:
            report["commit_url"] = _push_model(classifier.cpu(), args, task.classes, made_with)
    if args.json:
        print(json.dumps(report))
    else:
        kept = f" (early stopping kept step {result.best_step})" if result.best_step is not None else ""
        print(f"{task.name}: test accuracy {result.test_accuracy:.4f} (loss {result.test_loss:.4f}) after "
              f"{result.steps} steps{kept} in {result.seconds:.1f} s")
    return 0


def provenance(source, task, spec: str, config, result) -> dict:
    """The ``ctinit`` entry of a fine-tuned model's config: where the init came from (a Hub id and commit, else the
    folder's name, never a path), the task (its name; a spec only when it names no local file), steps, seed, recipe."""
    from dataclasses import asdict

    from .finetune import EXECUTION_FIELDS, uses_hflip
    from .loading import init_info
    from .hubio import dataset_id

    if source.repo_id:
        base = {"repo_id": source.repo_id, "commit": source.commit}
    elif source.arch:
        base = {"scratch": source.arch}
    elif source.zoo:
        from . import zoo

        base = {"name": zoo.PREFIX + source.zoo}
        entry = zoo.get(source.zoo)
        if entry.get("revision") and not source.scratch:  # published: the card's base_model is its Hub repo
            base.update(repo_id=entry["hub_id"], commit=entry["revision"])
    else:
        base = {"name": source.path.resolve().name if source.path else None}
    if source.scratch and not source.arch:
        base["scratch"] = True
    info = {} if source.scratch else init_info(source)
    if info.get("algorithm"):
        base["algorithm"] = info["algorithm"]
    dataset = dataset_id(spec)
    task_entry = {"name": task.name, "num_classes": task.num_classes, "train_size": len(task.y_train),
                  "test_size": len(task.y_test)}
    if dataset or spec.startswith("builtin:"):
        task_entry["spec"] = spec
    if dataset:
        task_entry["dataset"] = dataset
    recipe = {k: v for k, v in asdict(config).items() if k not in ("seed", "steps", *EXECUTION_FIELDS)}
    recipe["hflip"] = uses_hflip(config, task)  # the choice made, not "the task's setting"
    return {"base_model": base, "task": task_entry, "steps": result.steps, "best_step": result.best_step,
            "stop_reason": result.stop_reason, "seed": config.seed, "recipe": recipe,
            "test_accuracy": result.test_accuracy, "test_loss": result.test_loss}


def _push_model(classifier, args, labels, made_with) -> str:
    info = classifier.push_to_hub(
        args.push_to_hub, labels=labels, made_with=made_with, license=args.license, private=args.private,
        create_pr=args.create_pr, overwrite_card=args.overwrite_card, log=_log,
        commit_message=f"Upload a classifier fine-tuned with ctinit ({made_with['task']['name']})")
    url = str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
    _log(f"ctinit finetune: pushed to {args.push_to_hub}: {url}")
    return url


def cmd_predict(args) -> int:
    from .errors import ConfigError
    from .predict import Predictor, find_images

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    files = find_images(args.images)
    _quiet_transformers()
    predictor = Predictor.load(args.model, revision=args.revision, device=args.device)
    failed = []

    def on_error(path, error):
        failed.append(path)
        _log(f"ctinit predict: error: {' '.join(str(error).split())}")

    for path, top in predictor.predict_files(files, top_k=args.top_k, batch_size=args.batch_size, on_error=on_error):
        if args.json:
            print(json.dumps({"file": str(path), "predictions": [{"label": l, "score": round(p, 6)} for l, p in top]},
                             allow_nan=False), flush=True)  # scores are checked finite: the JSON is always valid
        else:
            print(f"{path}: " + ", ".join(f"{l} ({p:.3f})" for l, p in top), flush=True)
    if failed:
        _log(f"ctinit predict: {len(failed)} of {len(files)} files could not be read")
        return EXIT_BAD_INPUT
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import parse_seeds, run_evaluation
    from .report import own_results_dir as own_out_dir, results_table, write_results

    config = _recipe(args)
    parse_seeds(args.seeds)
    # --out is checked (a file, a folder we cannot write, another program's results) and held, before an hour of
    # fine-tuning: a second evaluation on it is refused.
    with own_out_dir(args.out):
        replaced = _check_earlier_results(args.out, args.init, args.data, args.overwrite)
        results = run_evaluation(
            args.init, args.data, args.seeds, config, revision=args.revision,
            max_train_per_class=args.max_train_per_class or None, max_train_samples=args.max_train_samples or None,
            device=args.device, progress=not args.no_progress, log=_log if args.no_progress else None,
            command=args.command_line, out=args.out, validation_fraction=args.val_fraction, workers=args.workers,
        )
        if replaced:
            _log(f"ctinit evaluate: --overwrite: replacing the results in {args.out} (they held {replaced})")
        paths = write_results(results, args.out)
    _log(f"ctinit evaluate: wrote {paths['json']}, {paths['md']}, {paths['png']}")
    if args.json:
        print(json.dumps({"summary": results["summary"], "out": str(args.out)}))
    else:
        print(results_table(results))
    return 0


def _check_earlier_results(out, inits: list[str], data: list[str], overwrite: bool) -> str | None:
    """An evaluation whose results in ``out`` hold inits or tasks that this one does not run would lose them: refused
    unless ``--overwrite`` (then what it replaces is returned, to be said). One that runs all of them (and more)
    continues or extends them."""
    from pathlib import Path

    from .errors import ConfigError
    from .report import load_results

    if not (Path(out) / "results.json").is_file():
        return None
    earlier = load_results(out)
    lost = [e["label"] for e in earlier["inits"] if e["label"] not in inits] + \
        [t["spec"] for t in earlier["tasks"] if t["spec"] not in data]
    if not lost:
        return None
    listed = ", ".join(lost[:4]) + (f" (and {len(lost) - 4} more)" if len(lost) > 4 else "")
    if not overwrite:
        raise ConfigError(f"--out {out}: holds the results of another evaluation ({listed}, which this one does not "
                          "run); pass --overwrite to replace them, or another --out (nothing is merged)")
    return listed


def cmd_list(args) -> int:
    if args.hub or args.author or args.search or args.limit is not None:
        from .catalog import print_inits

        return print_inits(args.author, args.search, 50 if args.limit is None else args.limit, args.json, "ctinit list")
    from .catalog import catalog, catalog_text, entry_text

    data = catalog()
    if args.name:  # one zoo entry, everything about it
        from .zoo import get

        name = get(args.name)["name"]  # an unknown name: one line with the closest
        [row] = [r for r in data["zoo"] if r["name"] == name]
        print(json.dumps(row) if args.json else entry_text(row))
        return 0
    print(json.dumps(data) if args.json else catalog_text(data, wide=args.wide))
    return 0


def cmd_pick(args) -> int:
    from .evaluate import parse_seeds
    from .pick import pick, ranking_table
    from .tasks import parse_spec

    config = _recipe(args)
    parse_seeds(args.seeds)
    parse_spec(args.data)
    picked = pick(args.data, args.inits, seeds=args.seeds, config=config, validation_fraction=args.val_fraction,
                  max_train_per_class=args.max_train_per_class or None,
                  max_train_samples=args.max_train_samples or None, device=args.device,
                  progress=not args.no_progress, log=_log if args.no_progress else None, command=args.command_line,
                  top=args.top, workers=args.workers)
    if args.json:
        print(json.dumps({k: v for k, v in picked.items() if k != "results"}))
    else:
        print(ranking_table(picked))
    return 0


def _workers_arg(text: str) -> str:
    """``--workers``: ``auto`` or a number of processes >= 1 (checked before any work starts)."""
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"'{text}' is not auto or a number of processes >= 1")
    return text


def _add_workers(parser) -> None:
    parser.add_argument("--workers", default="auto", type=_workers_arg, metavar="auto|N",
                        help="fine-tuning runs side by side in N processes; auto: one per free CPU core where the runs "
                             "are long enough to pay for starting them, 1: one after another (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ctinit", description="Meta-learned initializations (CTS): fine-tune and evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    init_help = ("zoo:NAME (shipped with ctinit: `ctinit list`), an initialization directory, a Hub id "
                 "ORG/NAME[@REVISION], scratch:zoo:NAME, scratch:DIR, scratch:ORG/NAME or scratch:ARCH "
                 "(e.g. scratch:resnet20)")

    ft = sub.add_parser("finetune", help="fine-tune an initialization on a task and report test accuracy")
    ft.add_argument("--init", required=True, help=init_help)
    ft.add_argument("--revision", default=None, help="Hub branch, tag or commit hash of --init (default: main)")
    ft.add_argument("--data", required=True, help="task spec: npz:PATH, folder:DIR, hf:NAME[:CONFIG] or builtin:NAME")
    ft.add_argument("--seed", type=int, default=0, help="seeds the head, the batches and the augmentation "
                                                         "(default: %(default)s)")
    add_recipe_args(ft, steps="auto")
    ft.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ft.add_argument("--out", default=None, metavar="DIR",
                    help="save the fine-tuned classifier as a transformers model folder (config, weights, "
                         "preprocessor, card)")
    ft.add_argument("--overwrite", action="store_true",
                    help="replace a model saved by ctinit in --out (the new one is written beside it and swapped in "
                         "once complete; other files in the folder stay)")
    ft.add_argument("--push-to-hub", default=None, metavar="ORG/NAME", help="upload the fine-tuned model to this Hub repo")
    ft.add_argument("--private", action="store_true", help="create the Hub repo private")
    ft.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    ft.add_argument("--overwrite-card", action="store_true", help="replace the card already on the Hub")
    ft.add_argument("--license", default=None,
                    help="the card's license, a Hub license id (default: apache-2.0 for a model made from the bundled "
                         "glyph suite; otherwise 'other', saying that no license was chosen)")
    ft.add_argument("--no-progress", action="store_true")
    ft.add_argument("--debug", action="store_true", help="show tracebacks")
    ft.set_defaults(func=cmd_finetune)

    pr = sub.add_parser("predict", help="classify image files with a fine-tuned model (one result per image)")
    pr.add_argument("--model", required=True, help="a fine-tuned model folder (ctinit finetune --out) or Hub id ORG/NAME[@REV]")
    pr.add_argument("--revision", default=None, help="Hub branch, tag or commit hash of --model")
    pr.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files (PNG, JPEG...) or folders of them")
    pr.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    pr.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    pr.add_argument("--device", default=None, help="cpu or cuda (default: the GPU if there is one)")
    pr.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    pr.add_argument("--debug", action="store_true", help="show tracebacks")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="fine-tune several initializations on several tasks and seeds; "
                                         "write results.json, results.md and curves.png")
    ev.add_argument("--init", action="append", required=True, help=init_help + "; repeat to compare")
    ev.add_argument("--data", action="append", required=True, help="task spec; repeat for several tasks")
    ev.add_argument("--seeds", default="3", help="a number of seeds (3 = seeds 0,1,2) or a comma-separated list (0,4,7)")
    ev.add_argument("--out", required=True, help="folder for results.json, results.md and curves.png")
    ev.add_argument("--revision", default=None, help="Hub revision for --init Hub ids without their own @REVISION")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace results in --out that hold inits or tasks this evaluation does not run")
    add_recipe_args(ev, steps=1000)
    _add_workers(ev)
    ev.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (default: the table)")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--debug", action="store_true", help="show tracebacks")
    ev.set_defaults(func=cmd_evaluate)

    from .pick import DEFAULT_BATCH_SIZE, DEFAULT_SEEDS, DEFAULT_STEPS, DEFAULT_TOP, DEFAULT_VAL_FRACTION

    pk = sub.add_parser("pick", help="which initialization to fine-tune for your data: rank every compatible zoo "
                                     "entry and scratch on a validation split carved from the training split")
    pk.add_argument("--data", required=True, help="task spec: npz:PATH, folder:DIR, hf:NAME[:CONFIG] or builtin:NAME")
    pk.add_argument("--inits", nargs="+", default=None, metavar="INIT",
                    help="initializations to compare (default: every zoo entry that can take the task's images); "
                         "scratch of each architecture is added")
    pk.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="K",
                    help="first every candidate is scored from its frozen features (seconds, no training); then the "
                         f"K best are fine-tuned briefly beside scratch (default {DEFAULT_TOP}; 0: all)")
    pk.add_argument("--seeds", default=str(DEFAULT_SEEDS),
                    help=f"a number of seeds or a comma-separated list (default {DEFAULT_SEEDS})")
    add_recipe_args(pk, steps=DEFAULT_STEPS)
    pk.set_defaults(batch_size=DEFAULT_BATCH_SIZE, val_fraction=DEFAULT_VAL_FRACTION)
    _add_workers(pk)
    pk.add_argument("--json", action="store_true",
                    help='print {"ranking": [...], "recommendation": INIT or "scratch", ...} on stdout')
    pk.add_argument("--no-progress", action="store_true")
    pk.add_argument("--debug", action="store_true", help="show tracebacks")
    pk.set_defaults(func=cmd_pick)

    ls = sub.add_parser("list", help="offline: the zoo's initializations, the backbones, the bundled tasks and the "
                                     "recipes; --hub: initializations published on the Hub")
    ls.add_argument("name", nargs="?", default=None, help="a zoo entry (NAME or zoo:NAME): everything about it")
    ls.add_argument("--wide", action="store_true", help="every column and every result of the zoo (wider than 100)")
    ls.add_argument("--hub", action="store_true", help="list the initializations published on the Hub with ctinit")
    ls.add_argument("--author", default=None, help="(Hub) only this user or organization; implies --hub")
    ls.add_argument("--search", default=None, help="(Hub) only ids containing this text; implies --hub")
    ls.add_argument("--limit", type=int, default=None, help="(Hub) at most this many (default 50); implies --hub")
    ls.add_argument("--json", action="store_true", help='one JSON object: {"zoo": [...], "backbones": [...], '
                                                        '"tasks": [...], "recipes": [...]} (--hub: a list)')
    ls.add_argument("--debug", action="store_true", help="show tracebacks")
    ls.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "ctinit " + shlex.join(argv)
    return run_command("ctinit", lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
