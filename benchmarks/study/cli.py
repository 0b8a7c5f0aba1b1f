"""The command line: options -> StudyConfig -> the protocol's run -> results in OUT (and on stdout with --json)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from . import __doc__ as STUDY_DOC
from .clock import Clock
from .config import (FOMAML_HELDOUT_FRACTION, LR_CENTRE, PAPER_META_LR, PRESET_NAMES, SUITES, StudyConfig,
                     StudyError, build_config)
from .report import machine, markdown, write_results
from .runs import Workspace, say

PROG = "study"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study", description=STUDY_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small preset (under 20 minutes on 2 idle CPU cores)")
    p.add_argument("--preset", choices=PRESET_NAMES, default=None,
                   help="full (default; about 2 hours per suite on 2 idle CPU cores), quick (= --quick), large "
                        "(1000 meta-steps, K 100; about 10 CPU-hours), ratio (steps / K = 100, 10 meta-seeds, "
                        "rates chosen inside each meta-seed; see benchmarks/RESULTS.md for its CPU time) or long "
                        "(the same 5000 inner steps at K 20, 100, 500; rates chosen once on a tuning meta-seed)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--suite", default="glyph", help=f"task suite: {', '.join(SUITES)}")
    p.add_argument("--out", default=None, help="output directory (default: runs/study_PRESET[_SUITE])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set steps=2000 (JSON values)")
    p.add_argument("--optional-algorithms", action="store_true",
                   help="ratio presets: add their optional algorithms (FOMAML, FOMAML-CTS, Leap) to the comparison")
    p.add_argument("--records", default=None, metavar="DIR",
                   help="ratio and long presets: where finished meta-seeds (long: runs) are recorded and reused from (one small JSON each; "
                        "default OUT/meta_seeds); point it at benchmarks/recorded/study-ratio/SUITE to resume a "
                        "run from the repository on a fresh machine")
    p.add_argument("--from-records", action="store_true",
                   help="long preset: write results.json, results.md and the figures from the recorded runs only "
                        "(the tuning and every meta-seed whose runs are all recorded; partial until all are) and "
                        "make no run")
    p.add_argument("--backbone", default=None, help="override the backbone (e.g. resnet20 on a GPU)")
    p.add_argument("--image-size", type=int, default=None, help="override the input size (e.g. 32 for colour tasks)")
    return p


def config_from_argv(argv: list[str] | None) -> tuple[StudyConfig, bool]:
    """The run's config and whether to print the result as JSON on stdout."""
    args = parser().parse_args(argv)
    if args.quick and args.preset not in (None, "quick"):
        raise StudyError(f"--quick and --preset {args.preset} disagree; give one of them")
    preset = "quick" if args.quick else args.preset or "full"
    command = "python -m benchmarks.study " + " ".join(argv if argv is not None else sys.argv[1:])
    config = build_config(preset, args.suite, args.set, args.out, args.backbone, args.image_size,
                          args.optional_algorithms, command, args.records)
    if args.from_records and config.protocol != "long":
        raise StudyError(f"--from-records applies to the long preset, not to --preset {preset}")
    return dataclasses.replace(config, from_records=args.from_records), args.json


def recorded_config(config: StudyConfig) -> dict:
    """What results.json records of the config (no local path: the output folder is left out)."""
    return {"preset": config.preset_name, "suite": config.suite_name, "protocol": config.protocol, **config.preset,
            **config.base, "algorithms": list(config.algorithms), "lr_centre": LR_CENTRE,
            "lr_factors": list(config.lr_factors), "schedules": list(config.schedules),
            "paper_meta_lr": PAPER_META_LR, "fomaml_heldout_fraction": FOMAML_HELDOUT_FRACTION,
            "statistics": "per-meta-seed means; 95% t-interval over meta-seeds (df = n_meta_seeds - 1); claims: "
                          "paired differences averaged within meta-seed; verdict_holm: Holm-adjusted over the "
                          "run's claims; equivalence: two one-sided tests"}


def run(config: StudyConfig, echo: bool = True) -> dict:
    """One study run with ``config``: every unit not yet recorded in OUT is done, results are written to OUT
    (partial ones as they come for the ratio protocol), and the complete result is returned."""
    from .ratio import run_ratio
    from .stages import run_staged

    ws = Workspace(config.out, config.base)
    clock = Clock()

    def complete(result: dict) -> dict:
        result["config"] = {**recorded_config(config), **result["config"]}
        result.update(machine=machine(), **clock.totals(), command=config.command)
        return result

    def publish(result: dict) -> None:
        written = write_results(config.out, complete(result))
        if result["partial"]:
            say(f"  wrote partial {', '.join(written)} to {config.out}")

    if config.protocol == "ratio":
        result = run_ratio(config, ws, clock, publish)
    elif config.protocol == "long":
        from .long import run_long

        result = run_long(config, ws, clock, publish)
        if config.from_records:
            publish(result)
    else:
        result = run_staged(config, ws, clock)
        publish(result)
    if echo:
        say(markdown(result))
    say(f"wrote {config.out}/results.json, results.md and figures ({result['timings_seconds']['total'] / 60:.1f} min "
        f"wall, {result['cpu_seconds']['total'] / 60:.1f} min CPU)")
    return result


def main(argv: list[str] | None = None) -> int:
    from ctinit.errors import CtinitError

    trainer_log = logging.getLogger("ctinit.meta_train")
    level = trainer_log.level
    trainer_log.setLevel(logging.WARNING)  # the trainer's per-run INFO lines; restored for whoever called main()
    try:
        config, as_json = config_from_argv(argv)
        result = run(config)
    except (StudyError, CtinitError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        trainer_log.setLevel(level)
    if as_json:
        print(json.dumps(result, indent=1))
    return 0
