"""Bad input on every command line (ctinit-train, ctinit, ctinit-hub, the quickstart, the config schema) is one
line and exit 2."""
import pytest
import torch

import ctinit_training.meta_train as meta_train
from ctinit.cli import main as ctinit_main
from ctinit.finetune import FinetuneConfig
from ctinit.schema import yaml_load
from ctinit.errors import ConfigError
from ctinit_hub.__main__ import main as hub_main
from ctinit_training.config import DEFAULTS, TrainConfig, load_config
from ctinit_training.quickstart import main as quickstart_main

from robust_support import TINY, one_error_line, files  # noqa: F401 (files is a fixture)


# ----------------------------------------------------------------------------------------------- config schema


def test_yaml_numbers_are_yaml_1_2_in_recipes_and_overrides(tmp_path):
    assert yaml_load("a: 1e-3\nb: 12\nc: .5\nd: -2E5\ne: 1.0e+3\nf: abc") == \
        {"a": 0.001, "b": 12, "c": 0.5, "d": -200000.0, "e": 1000.0, "f": "abc"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tasks: [builtin:latin]\nmeta_optimizer: {name: sgd, lr: 1e-3}\n")
    assert load_config(recipe).meta_optimizer.lr == 0.001
    assert load_config(TINY, ["meta_optimizer.lr=1e-3"]).meta_optimizer.lr == 0.001
    # YAML 1.2 booleans: the option values off / no / auto stay strings, true / false are booleans
    assert yaml_load("a: off\nb: no\nc: yes\nd: true\ne: False") == {"a": "off", "b": "no", "c": "yes", "d": True,
                                                                      "e": False}
    config = load_config(TINY, ["compile=off", "mixed_precision=no", "channels_last=false", "augment=true"])
    assert (config.compile, config.mixed_precision, config.channels_last, config.augment) == \
        ("off", "no", False, True)


def test_defaults_live_in_the_schema():
    assert DEFAULTS["inner_optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005,
                                           "betas": [0.9, 0.999], "nesterov": False}
    assert DEFAULTS["validation"]["steps"] == 100 and DEFAULTS["steps"] == TrainConfig().steps == 1000
    assert FinetuneConfig().optimizer["name"] == "adam" and FinetuneConfig().milestones == (0.4, 0.7, 0.9)
    with pytest.raises(ConfigError, match=r"^gamma = -1: input should be greater than 0$"):
        FinetuneConfig(gamma=-1)


# ----------------------------------------------------------------------------------------------- ctinit-train

TRAIN_CASES = [
    (["seed=abc"], "seed = 'abc': input should be a valid integer"),
    (["seed=-1"], "seed = -1"),
    (["inner_optimizer.momentum=-1"], "inner_optimizer.momentum = -1: input should be greater than or equal to 0"),
    (["meta_exclude=['(']"], "meta_exclude = '(': not a regular expression"),
    (["max_train_per_class=abc"], "max_train_per_class = 'abc'"),
    (["image_size=1"], "image_size = 1: input should be greater than or equal to 8"),
    (["log_with=bogus"], "log_with = 'bogus': input should be 'all', 'tensorboard'"),
    (["validation.steps=abc"], "validation.steps = 'abc'"),
    (["validation.every=5"], "validation.every is set but validation.tasks is empty"),
    (["augment=maybe"], "augment = 'maybe': input should be a valid boolean"),
    (["shift=abc"], "shift = 'abc': input should be a valid boolean"),
    (["meta_optimizer.lr=.inf"], "meta_optimizer.lr = inf: input should be a finite number"),
    (["meta_optimizer.name=lion"], "meta_optimizer.name = 'lion'"),
    (["steps=0"], "steps = 0"),
    (["tasks=[]"], "tasks: must be a non-empty list"),
    (["tasks=[klingon:x]"], "unknown task spec 'klingon:x'"),
    (["validation.bogus=1"], "validation.bogus: unknown key"),
    (["steps"], "not key=value"),
]


@pytest.mark.parametrize("overrides,needle", TRAIN_CASES)
def test_train_bad_config_is_one_line_exit_2_before_any_work(tmp_path, capsys, overrides, needle):
    out = tmp_path / "run"
    assert meta_train.main(["--config", TINY, "--out", str(out), "--no-progress", *overrides]) == 2
    assert needle in one_error_line(capsys, "ctinit-train: error: ")
    assert not out.exists()  # checked before the run directory is touched


def exit_code(main, argv):
    """What the command exits with, whether ``main`` returns it or argparse raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv,prefix,needle", [
    (["--config", TINY, "--out", "{files}/a_file"], "ctinit-train: error:", "is a file, not a folder"),
    (["--config", "no-such-recipe", "--out", "{tmp}/r"], "ctinit-train: error:", "no such recipe file"),
    (["--config", TINY, "--out", "{tmp}/r", "--resume", "--overwrite"], "ctinit-train: error:", "pass one of them"),
    (["--config", TINY], "ctinit-train: error:", "the following arguments are required: --out"),
    (["--config", TINY, "--out", "{tmp}/r", "--bogus"], "ctinit-train: error:", "unrecognized arguments: --bogus"),
])
def test_train_bad_arguments_are_one_line(tmp_path, capsys, files, argv, prefix, needle):
    argv = [a.format(files=files, tmp=tmp_path) for a in argv]
    assert exit_code(meta_train.main, argv) == 2
    assert needle in one_error_line(capsys, prefix)


# ----------------------------------------------------------------------------------------------- ctinit / hub

CTINIT_CASES = [
    (["finetune", "--seed", "-1"], "--seed = -1: input should be greater than or equal to 0"),
    (["finetune", "--seed", str(2**70)], "--seed = 1180591620717411303424"),
    (["finetune", "--weight-decay", "-1"], "--weight-decay = -1.0: input should be greater than or equal to 0"),
    (["finetune", "--milestones", "5", "--gamma", "-1"], "--milestones.0 = 5.0: input should be less than or equal to 1"),
    (["finetune", "--gamma", "-1"], "--gamma = -1.0: input should be greater than 0"),
    (["finetune", "--lr", "inf"], "--lr = inf: input should be a finite number"),
    (["finetune", "--steps", "0"], "--steps = 0"),
    (["finetune", "--max-train-per-class", "-3"], "--max-train-per-class = -3"),
    (["finetune", "--device", "tpu"], "--device = 'tpu'"),
    (["finetune", "--steps", "abc"], "argument --steps: 'abc' is not a number of steps or 'auto'"),
    (["finetune", "--init", "{files}/huge"], "config hidden_size = 1000000000000: must be a positive integer"),
    (["finetune", "--init", "{files}/text"], "config hidden_size = 'abc': must be a positive integer"),
    (["finetune", "--data", "npz:{files}/huge_label.npz"], "labels must be 0..C-1 with C at most 100000"),
    (["evaluate", "--out", "{files}/a_file"], "--out {files}/a_file: is a file, not a folder"),
    (["evaluate", "--seeds", "-1"], "--seeds"),
    (["evaluate", "--seeds", f"{2**70},1"], "seeds are integers from 0 to 2**53 - 1"),
    (["list", "--limit", "0"], "--limit = 0"),
]


@pytest.mark.parametrize("argv,needle", CTINIT_CASES)
def test_ctinit_bad_input_is_one_line_exit_2(tmp_path, capsys, files, argv, needle):
    argv = [a.format(files=files) for a in argv]
    base = {"finetune": ["--init", "scratch:convnet4-32", "--data", "builtin:latin", "--steps", "2", "--no-progress"],
            "evaluate": ["--init", "scratch:convnet4-32", "--data", "builtin:latin", "--steps", "2", "--no-progress",
                         "--out", str(tmp_path / "eval")],
            "list": []}[argv[0]]
    if "--out" in argv:  # one --out only
        i = base.index("--out")
        base = base[:i] + base[i + 2:]
    code = exit_code(ctinit_main, [argv[0], *base, *argv[1:]])  # argparse keeps the last of a repeated option
    assert code == 2
    assert needle.format(files=files) in one_error_line(capsys, "ctinit")


def test_device_cuda_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert ctinit_main(["finetune", "--init", "scratch:convnet4-32", "--data", "builtin:latin", "--device", "cuda"]) == 2
    assert "no such CUDA device on this machine (0 visible)" in one_error_line(capsys, "ctinit: error:")


def test_internal_errors_say_so_and_show_a_traceback_only_with_debug(monkeypatch, capsys):
    import ctinit.cli as cli

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_list", bug)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=bug)
    assert ctinit_main(["list"]) == 1
    assert "internal error, rerun with --debug" in one_error_line(capsys, "ctinit: internal error")
    with pytest.raises(KeyError):
        ctinit_main(["list", "--debug"])


@pytest.mark.parametrize("argv,prefix,needle", [
    (["export", "/nonexistent", "{tmp}/x"], "ctinit-hub: error:", "/nonexistent: no such run directory"),
    (["export", "{files}/nan_run", "{files}/a_file"], "ctinit-hub: error:", "holds non-finite values"),
    (["pull", "a_b_c"], "ctinit-hub: error:", "repo id 'a_b_c': write a Hub id as ORG/NAME"),
    (["push", "/nonexistent", "--repo", "a/b"], "ctinit-hub: error:", "/nonexistent: no such export folder"),
    (["list", "--limit", "0"], "ctinit-hub: error:", "--limit = 0"),
    (["export"], "ctinit-hub export: error:", "the following arguments are required: run_dir, out_dir"),
])
def test_hub_bad_input_is_one_line_exit_2(tmp_path, files, capsys, argv, prefix, needle):
    assert exit_code(hub_main, [a.format(tmp=tmp_path, files=files) for a in argv]) == 2
    assert needle in one_error_line(capsys, prefix)


def test_hub_export_refuses_non_finite_weights(tmp_path, files, capsys):
    assert hub_main(["export", str(files / "nan_run"), str(tmp_path / "export")]) == 2
    assert "holds non-finite values" in one_error_line(capsys, "ctinit-hub: error:")
    assert not (tmp_path / "export").exists()


def test_quickstart_checks_its_options_before_training(tmp_path, capsys):
    assert quickstart_main(["--out", str(tmp_path / "q"), "--finetune-steps", "0", "--no-progress"]) == 2
    assert "steps = 0" in one_error_line(capsys, "quickstart: error:")
    assert not (tmp_path / "q").exists()
