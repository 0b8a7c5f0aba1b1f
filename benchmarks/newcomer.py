"""The newcomer's path, timed: from a folder of images to a saved model and a prediction, with the installed wheel.

    python benchmarks/newcomer.py                       # build the wheel, install it in a fresh venv, time the path
    python benchmarks/newcomer.py --wheel dist/ctinit-0.1.0-py3-none-any.whl
    python benchmarks/newcomer.py --installed           # the ctinit already installed beside this python
    python benchmarks/newcomer.py --tiny --installed --out /tmp/newcomer.json   # the test's few-second check

A folder of PNG images (``--classes`` 40 classes x ``--per-class`` 20 = 800 images, one sub-folder per class) is
written from a bundled meta-test task that no zoo entry was meta-trained on (ethiopic glyphs), no download, with a
few held-out images of the same classes to predict. Then the commands a newcomer runs, each in its own process,
from a folder outside the checkout, with the defaults a newcomer gets (no tuning flags):

    ctinit --help                    # and a bad argument (`ctinit finetune --data folder:DIR`, no --init): repeated
    ctinit list
    ctinit pick --data folder:DIR
    ctinit finetune --init <pick's recommendation> --data folder:DIR --out model
    ctinit predict --model model IMAGE IMAGE IMAGE

Each is timed separately (wall seconds) and in total; the JSON records the CPU model, the load average before and
after (the targets are for an idle machine: say so when it was not), the torch version, every command as run
(relative paths only) and its exit status, and the issue's targets (pick <= 60 s, pick to prediction <= 120 s,
--help and argument errors < 1 s) with whether each held. ``--tiny`` (4 classes x 6 images, 2 fine-tuning steps,
one zoo entry in pick, where those options exist) checks that the script works; its times mean nothing.
Options that the installed ctinit lacks are left out, so the script runs against older and newer command lines.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: A bundled meta-test task (no zoo entry was meta-trained on it) with 40 classes.
SOURCE_TASK = ROOT / "ctinit" / "data" / "builtin" / "ethiopic.npz"
PREDICT_IMAGES = 3
TARGETS = {"pick_seconds": 60.0, "pick_to_prediction_seconds": 120.0, "help_seconds": 1.0, "error_seconds": 1.0}
TINY_OPTIONS = {"pick": ["--steps", "2", "--seeds", "1", "--inits", "zoo:glyph-convnet4-32"],
                "finetune": ["--steps", "2"]}


# ------------------------------------------------------------------------------------------------ the environment


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout.splitlines()
        info["cpu"] = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("Model name")), info["cpu"])
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def build_wheel(work: Path) -> Path:
    """The wheel of this checkout (built from a copy, so that the checkout gets no build/ or egg-info)."""
    src = work / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache", "benchmarks", "tests"))
    for isolation in (["--no-build-isolation"], []):  # the local setuptools if it can, else pip's own build env
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w",
                                 str(work / "dist"), str(src)], capture_output=True, text=True, timeout=900)
        wheels = list((work / "dist").glob("ctinit-*.whl"))
        if result.returncode == 0 and wheels:
            return wheels[0]
    raise SystemExit(f"newcomer.py: could not build the wheel: {result.stderr[-1500:]}")


def install_wheel(wheel: Path, work: Path) -> Path:
    """A fresh venv (the dependencies, torch included, from this python's site-packages) with only the wheel
    installed; returns its bin folder."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                             "--force-reinstall", str(wheel)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"newcomer.py: could not install {wheel.name}: {result.stderr[-1500:]}")
    return bin_dir


def installed_command() -> list[str]:
    """``ctinit`` as installed beside this python (else on PATH; else ``python -m ctinit.cli``)."""
    beside = Path(sys.executable).parent / "ctinit"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("ctinit")
    return [found] if found else [sys.executable, "-m", "ctinit.cli"]


# ------------------------------------------------------------------------------------------------ the data


def make_folder(out: Path, classes: int, per_class: int, predict: int) -> tuple[Path, list[Path]]:
    """``out/data/<class>/NNN.png`` from the source task's training split, and ``predict`` images of its test
    split (other images, known classes) under ``out/images/``; both relative to ``out``."""
    import numpy as np
    from PIL import Image

    with np.load(SOURCE_TASK, allow_pickle=False) as d:
        x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
        names = [str(c) for c in d["classes"]]
    if classes > len(names):
        raise SystemExit(f"newcomer.py: --classes {classes}: the source task has {len(names)} classes")
    data = Path("data")
    for c in range(classes):
        folder = out / data / f"{c:02d}-{names[c]}"  # a name as a person gives it: a number and the glyph
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(y_train == c)[:per_class]):
            Image.fromarray(x_train[index]).save(folder / f"{i:03d}.png")
    images = []
    (out / "images").mkdir()
    for i, index in enumerate(np.flatnonzero(y_test < classes)[:predict]):
        images.append(Path("images") / f"{i}-class-{int(y_test[index]):02d}.png")
        Image.fromarray(x_test[index]).save(out / images[-1])
    return data, images


# ------------------------------------------------------------------------------------------------ the commands


def run(ctinit: list[str], args: list[str], cwd: Path, env: dict, timeout: float = 3600) -> dict:
    """One command, timed (wall seconds); its output with the work folder's path blanked out."""
    start = time.perf_counter()
    try:
        result = subprocess.run(ctinit + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        code, out, err = result.returncode, result.stdout, result.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = None, str(e.stdout or ""), f"timed out after {timeout} s"
    seconds = time.perf_counter() - start
    blank = lambda text: text.replace(str(cwd), ".")  # noqa: E731 - no local path in what is recorded
    return {"command": "ctinit " + " ".join(args), "seconds": round(seconds, 3), "exit": code,
            "stdout": blank(out), "stderr_tail": blank(err)[-1500:]}


def options(ctinit: list[str], command: str, cwd: Path, env: dict) -> set[str]:
    """The options ``ctinit COMMAND --help`` lists (so that absent ones are not passed)."""
    text = subprocess.run(ctinit + [command, "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", text))


def supported(extra: list[str], known: set[str]) -> list[str]:
    """``extra`` (option, value, option, value...) less the options ``known`` lacks."""
    kept, i = [], 0
    while i < len(extra):
        takes_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        end = i + 1
        while takes_value and end < len(extra) and not extra[end].startswith("--"):
            end += 1
        if extra[i] in known:
            kept += extra[i:end]
        i = end
    return kept


def recommended_init(picked: dict) -> str | None:
    """The init ``ctinit pick`` tells the newcomer to fine-tune: the --init of the command it prints where it prints
    one, else its recommendation; for "scratch", the best-ranked scratch row (fresh weights of that architecture)."""
    text = picked["stdout"]
    commands = re.findall(r"ctinit finetune --init (\S+)", text)
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except json.JSONDecodeError:
        data = {}
    for key in ("command", "next_command", "finetune_command"):
        if isinstance(data.get(key), str):
            commands = re.findall(r"--init (\S+)", data[key]) or commands
    if commands and commands[-1] not in ("...", "INIT"):
        return commands[-1].strip("`'\"")
    recommendation = data.get("recommendation")
    if recommendation is None:
        found = re.findall(r"recommendation: (\S+)", text)
        recommendation = found[-1] if found else None
    if recommendation == "scratch":
        rows = [r for r in data.get("ranking", []) if r.get("scratch")]
        return rows[0]["init"] if rows else None
    return recommendation


def repeated(ctinit: list[str], args: list[str], cwd: Path, env: dict, repeats: int) -> dict:
    runs = [run(ctinit, args, cwd, env) for _ in range(repeats)]
    return {**runs[-1], "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "all_seconds": [r["seconds"] for r in runs]}


def newcomer_path(ctinit: list[str], work: Path, classes: int, per_class: int, tiny: bool, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["HF_HUB_OFFLINE"] = "1"  # everything on the path is offline; no chance of a slow network call
    data, images = make_folder(work, classes, per_class, PREDICT_IMAGES)
    spec = f"folder:{data}"
    steps = {"help": repeated(ctinit, ["--help"], work, env, repeats),
             "argument_error": repeated(ctinit, ["finetune", "--data", spec], work, env, repeats),
             "list": run(ctinit, ["list"], work, env)}
    extra = {c: supported(TINY_OPTIONS[c], options(ctinit, c, work, env)) if tiny else [] for c in TINY_OPTIONS}
    pick_json = ["--json"] if "--json" in options(ctinit, "pick", work, env) else []
    steps["pick"] = run(ctinit, ["pick", "--data", spec, *pick_json, *extra["pick"]], work, env)
    init = recommended_init(steps["pick"]) if steps["pick"]["exit"] == 0 else None
    if init is not None:
        steps["finetune"] = run(ctinit, ["finetune", "--init", init, "--data", spec, "--out", "model",
                                         *extra["finetune"]], work, env)
        if steps["finetune"]["exit"] == 0:
            steps["predict"] = run(ctinit, ["predict", "--model", "model", *map(str, images)], work, env)
    path = ("list", "pick", "finetune", "predict")
    done = all(steps.get(s, {}).get("exit") == 0 for s in path)
    seconds = {s: steps[s]["seconds"] for s in path if s in steps}
    pick_to_prediction = sum(seconds.get(s, 0.0) for s in path[1:])
    targets = {"pick_seconds": seconds.get("pick"), "pick_to_prediction_seconds": pick_to_prediction if done else None,
               "help_seconds": steps["help"]["seconds"], "error_seconds": steps["argument_error"]["seconds"]}
    return {"images": classes * per_class, "classes": classes, "per_class": per_class, "source": SOURCE_TASK.stem,
            "recommended_init": init, "completed": done, "steps": steps, "seconds": seconds,
            "total_seconds": round(sum(seconds.values()), 3) if done else None,
            "pick_to_prediction_seconds": round(pick_to_prediction, 3) if done else None,
            "argument_error_exit": steps["argument_error"]["exit"],
            "targets": {k: {"limit": TARGETS[k], "measured": v, "held": v is not None and v <= TARGETS[k]}
                        for k, v in targets.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--wheel", default=None, help="install this wheel in a fresh venv (default: build one)")
    how.add_argument("--installed", action="store_true", help="the ctinit installed beside this python")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="runs of --help and of the argument error (median)")
    parser.add_argument("--tiny", action="store_true", help="4 classes x 6 images, 2 steps: checks the script only")
    parser.add_argument("--out", default=None, help="the JSON (default: benchmarks/recorded/newcomer/<cpu>-<date>.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.classes, args.per_class, args.repeats = 4, 6, 1
    from ctinit.execution.cores import busy_cores

    load_before, busy_before = os.getloadavg(), busy_cores(1.0)  # other work on the machine, sampled before we start
    with tempfile.TemporaryDirectory(prefix="ctinit-newcomer-") as tmp:
        work = Path(tmp)
        if args.installed:
            ctinit, how = installed_command(), "installed"
        else:
            wheel = Path(args.wheel).resolve() if args.wheel else build_wheel(work / "build")
            ctinit, how = [str(install_wheel(wheel, work / "env") / "ctinit")], f"wheel {wheel.name}"
        torch_version = subprocess.run([str(Path(ctinit[0]).parent / "python") if how != "installed" else
                                        sys.executable, "-c", "import torch; print(torch.__version__)"],
                                       capture_output=True, text=True, timeout=300).stdout.strip()
        (work / "user").mkdir()
        result = newcomer_path(ctinit, work / "user", args.classes, args.per_class, args.tiny, args.repeats)
    record = {"benchmark": "newcomer", "tiny": args.tiny, "ctinit": how, "torch": torch_version,
              "machine": machine(), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "busy_cores_before": round(busy_before, 2),
              "command": "python benchmarks/newcomer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              **result}
    # idle: nothing else ran when it started (the load average lags a minute and counts this benchmark's own runs)
    record["idle"] = busy_before < 0.25
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "recorded" / "newcomer" / (
        re.sub(r"[^a-z0-9]+", "-", record["machine"]["cpu"].lower()).strip("-")[:40] + time.strftime("-%Y%m%d-%H%M.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: record[k] for k in ("completed", "recommended_init", "seconds", "total_seconds",
                                             "pick_to_prediction_seconds", "idle")}))
    for name, target in record["targets"].items():
        print(f"{name}: {target['measured']} (target <= {target['limit']}): {'held' if target['held'] else 'NOT held'}")
    print(f"wrote {out}")
    return 0 if record["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
