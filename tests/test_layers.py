"""The layers of the package (README, "Architecture"): the table there is the one statement of the architecture and
is checked here, import by import; the Hub layer at the bottom imports nothing above it, Hub errors are recognised
by their huggingface_hub types, one version."""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What ctinit/hubio may import of ctinit: its own modules and the foundations.
HUB_LAYER_MAY_IMPORT = {"ctinit.atomic", "ctinit.errors", "ctinit.tokens", "ctinit.version"}  # foundations it uses
#: The folders that hold the project's modules, and the names they are installed as.
PACKAGES = {"ctinit": "ctinit", "training": "ctinit_training", "hub": "ctinit_hub"}


# ----------------------------------------------------------------------------- the README's layer table, checked
def layer_table(readme: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The README's Architecture table as {path or folder/: layer}, and the upward imports it names as on purpose
    (```a.py` → `b.py```)."""
    section = readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 3 and cells[0].isdigit():
            for path in re.findall(r"`([\w/.]+(?:\.py|/))`", cells[2]):
                layers[path] = int(cells[0])
    on_purpose = set(re.findall(r"`([\w/.]+\.py)` → `([\w/.]+\.py)`", section))
    return layers, on_purpose


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the project by its installed dotted name (training/ is ctinit_training, hub/ ctinit_hub)."""
    modules = {}
    for folder, installed in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [installed, *path.relative_to(root / folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports, at the top or inside functions (``from pkg import sub`` is ``pkg.sub``
    when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def layer_of(path: str, layers: dict[str, int]) -> int | None:
    """The layer of a file: its own row, or the longest folder of the table that holds it."""
    rows = [p for p in layers if p == path or (p.endswith("/") and path.startswith(p))]
    return layers[max(rows, key=len)] if rows else None


def layer_violations(root: Path) -> list[str]:
    """Every import against the README's table under ``root``, every module in no layer, every path of the table
    that does not exist and every upward import named as on purpose that no longer happens: one line each."""
    layers, on_purpose = layer_table((root / "README.md").read_text())
    modules = project_modules(root)
    rel = {m: p.relative_to(root).as_posix() for m, p in modules.items()}
    problems = [f"{path}: in the README's table but not in the tree" for path in layers if not (root / path).exists()]
    problems += [f"{path}: in no layer of the README's table" for path in rel.values() if layer_of(path, layers) is None]
    seen = set()
    for module, path in modules.items():
        mine = layer_of(rel[module], layers)
        for target in sorted(imported_modules(path, module, modules)):
            theirs, edge = layer_of(rel[target], layers), (rel[module], rel[target])
            if mine is not None and theirs is not None and theirs > mine:
                seen.add(edge)
                if edge not in on_purpose:
                    problems.append(f"{edge[0]} (layer {mine}) imports {edge[1]} (layer {theirs})")
    problems += [f"{a} → {b}: named as an upward import on purpose, but it does not import it" for a, b in on_purpose - seen]
    return problems


def test_every_import_follows_the_readmes_layer_table():
    layers, _ = layer_table((ROOT / "README.md").read_text())
    assert len(set(layers.values())) >= 9  # the table was read: every layer has a row
    assert layer_violations(ROOT) == []


def _only_python(folder, names):
    """What copytree leaves out: everything but Python files and the folders that hold them."""
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]


def test_the_layer_check_fails_on_a_planted_upward_import(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=_only_python)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    assert layer_violations(tmp_path) == []
    with open(tmp_path / "ctinit" / "errors.py", "a") as f:  # a foundation importing a command
        f.write("\n\ndef _late():\n    from .cli import main\n")
    with open(tmp_path / "hub" / "zoo.py", "a") as f:  # the Hub commands importing meta-training
        f.write("\nimport ctinit_training.rundir\n")
    (tmp_path / "ctinit" / "unlisted.py").write_text("")
    assert sorted(layer_violations(tmp_path)) == [
        "ctinit/errors.py (layer 1) imports ctinit/cli.py (layer 7)",
        "ctinit/unlisted.py: in no layer of the README's table",
        "hub/zoo.py (layer 8) imports training/rundir.py (layer 9)",
    ]


def _ctinit_imports(path: Path, package: str) -> set[str]:
    """The ctinit modules a file imports (at the top or inside functions), as absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ctinit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] == "ctinit":
                found.add(base)
    return found


def test_the_hub_layer_imports_nothing_above_it():
    files = sorted((ROOT / "ctinit" / "hubio").glob("*.py"))
    assert len(files) >= 5
    for path in files:
        above = {m for m in _ctinit_imports(path, "ctinit.hubio")
                 if m not in HUB_LAYER_MAY_IMPORT and not m.startswith("ctinit.hubio")}
        assert not above, (path.name, above)


#: What would let a module of ctinit/meta/ touch files: the modules for paths, files and formats on disk.
FILE_MODULES = {"os", "pathlib", "shutil", "tempfile", "io", "json", "fcntl", "safetensors", "glob"}


def test_meta_opens_no_file():
    """ctinit/meta/ is the rules, the engine and its state; what is measured per machine and recorded on disk is
    ctinit/execution/'s (and checkpoints are the trainer's)."""
    files = sorted((ROOT / "ctinit" / "meta").glob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                     and not n.level}
        calls = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))}
        assert not imported & FILE_MODULES, (path.name, imported & FILE_MODULES)
        assert not calls & {"open", "read_text", "write_text", "read_bytes", "write_bytes", "save_file", "load_file"}, path.name


def test_models_push_through_the_one_mixin():
    from ctinit.hubio import PushToHubMixin
    from ctinit.models import CtinitResNetForImageClassification, ImageClassifier

    for cls in (ImageClassifier, CtinitResNetForImageClassification):
        assert cls.push_to_hub is PushToHubMixin.push_to_hub, cls  # not transformers' own push_to_hub


def _hub_error_without_response(cls, status=404):
    exc = cls.__new__(cls)
    Exception.__init__(exc, f"{status} Client Error")
    exc.response = type("Response", (), {"status_code": status, "headers": {}})()
    return exc


def test_hub_errors_are_recognised_by_type_not_by_name():
    from huggingface_hub import errors

    from ctinit.hubio import hub_error

    class RenamedGated(errors.GatedRepoError):  # a subclass huggingface_hub might add: still a gated repo
        pass

    class RepositoryNotFoundError(Exception):  # the name alone, from another library: not a Hub error
        pass

    error = hub_error(_hub_error_without_response(RenamedGated, 403), "org/x", None)
    assert error is not None and "gated" in str(error)
    assert hub_error(RepositoryNotFoundError("nope"), "org/x", None) is None


def _http_client():
    """The HTTP client huggingface_hub uses here (httpx2 or httpx)."""
    import importlib.util

    return __import__(next(name for name in ("httpx2", "httpx") if importlib.util.find_spec(name)))


@pytest.mark.parametrize("make, expected", [
    (lambda: _http_client().ConnectError("refused"), True),
    (lambda: _http_client().ReadTimeout("slow"), True),
    (lambda: ConnectionResetError("reset"), True),
    (lambda: _hub_error_without_response(__import__("huggingface_hub").errors.HfHubHTTPError, 503), True),
    (lambda: _hub_error_without_response(__import__("huggingface_hub").errors.HfHubHTTPError, 404), False),
    (lambda: ValueError("a bug"), False),
])
def test_connection_errors_by_type(make, expected):
    from ctinit.hubio import is_connection_error

    assert is_connection_error(make()) is expected


def test_one_version():
    import tomllib

    import ctinit
    from ctinit.version import __version__

    assert ctinit.__version__ is __version__
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__


def test_a_card_template_that_does_not_exist_is_one_line(tmp_path):
    from huggingface_hub import ModelCardData

    from ctinit.errors import ConfigError
    from ctinit.hubio import render_card

    with pytest.raises(ConfigError, match="no card template; pass --template PATH"):
        render_card(tmp_path / "missing.md", ModelCardData())
    (tmp_path / "mine.md").write_text("---\n{{ card_data }}\n---\n# {{ title }} {{ install_line }}\n")
    card = render_card(tmp_path / "mine.md", ModelCardData(license="mit"), title="Mine")
    assert card.data.license == "mit" and "# Mine pip install" in card.text
