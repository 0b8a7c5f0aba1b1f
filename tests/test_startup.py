"""Start-up: ``--help``, argument errors and ``ctinit list`` answer without importing torch or transformers, and
``import ctinit`` still registers the ctinit backbones with transformers' Auto classes (issue 35, item 4).

Behaviour only (which modules a command imports), never a timing: speed is measured in benchmarks/newcomer.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
HEAVY = ("torch", "transformers")

# Runs a console script's main() as the installed script does, then reports on stderr which heavy modules it imported.
WRAPPER = """
import sys
from {module} import main
sys.argv = {argv!r}
try:
    code = main()
except SystemExit as e:
    code = e.code
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)


def run_script(module: str, argv: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    result = run_python(WRAPPER.format(module=module, argv=argv, heavy=HEAVY))
    reported = [line for line in result.stderr.splitlines() if line.startswith("HEAVY=")]
    assert reported, result.stderr[-2000:]
    return result, [m for m in reported[-1][len("HEAVY="):].split(",") if m]


@pytest.mark.parametrize("module, argv, code", [
    ("ctinit.cli", ["ctinit", "--help"], 0),
    ("ctinit.cli", ["ctinit", "finetune", "--help"], 0),
    ("ctinit.cli", ["ctinit", "finetune", "--init", "zoo:glyph-resnet20", "--steps", "many"], 2),
    ("ctinit.cli", ["ctinit", "pick"], 2),
    ("ctinit_training.cli", ["ctinit-train", "--help"], 0),
    ("ctinit_training.cli", ["ctinit-train", "--config"], 2),
    ("ctinit_hub.__main__", ["ctinit-hub", "--help"], 0),
    ("ctinit_hub.__main__", ["ctinit-hub", "push"], 2),
])
def test_help_and_argument_errors_import_neither_torch_nor_transformers(module, argv, code):
    result, heavy = run_script(module, argv)
    assert result.returncode == code, result.stderr[-2000:]
    assert heavy == [], f"{' '.join(argv)} imported {heavy}"
    if code == 0:
        assert "usage:" in result.stdout
    else:
        assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_ctinit_list_answers_without_torch_and_shows_every_backbone():
    result, heavy = run_script("ctinit.cli", ["ctinit", "list", "--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert heavy == []
    listed = json.loads(result.stdout)
    assert listed["zoo"] and listed["tasks"] and listed["recipes"]
    from ctinit.models import ARCHITECTURES  # the names `ctinit list` shows are the backbones that exist

    assert [b["name"] for b in listed["backbones"]] == list(ARCHITECTURES)


def test_import_ctinit_registers_the_backbones_when_transformers_is_imported_later():
    from ctinit import zoo

    folder = zoo.path("glyph-resnet20")
    result = run_python(f"""
import sys
import ctinit
assert not any(m in sys.modules for m in {HEAVY!r}), "import ctinit imported torch or transformers"
assert ctinit.ImageClassifier.__name__ == "ImageClassifier"  # the public names still resolve (on first use)
from transformers import AutoConfig, AutoModel
model = AutoModel.from_pretrained({str(folder)!r})
print(type(model).__name__, AutoConfig.from_pretrained({str(folder)!r}).model_type)
""")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["CtinitResNetModel", "ctinit-resnet"]


def test_import_ctinit_after_transformers_registers_at_once():
    result = run_python("""
import transformers
from transformers import AutoConfig
import ctinit
print(type(AutoConfig.for_model("ctinit-convnet")).__name__)
""")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "CtinitConvNetConfig"


def test_a_closed_pipe_on_stdout_is_a_quiet_exit_not_an_internal_error():
    """``ctinit list | head -1``: the reader goes away early; no "internal error" line, exit 141 (SIGPIPE's)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import sys; from ctinit.cli import main; sys.exit(main(['list']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command (still importing) writes its first line
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and b"internal error" not in err and not err.strip(), err
