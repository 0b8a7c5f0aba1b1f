"""The layers of the package (README, "Architecture"): the Hub layer at the bottom imports nothing above it, Hub
errors are recognised by their huggingface_hub types, one version."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What ctinit/hubio may import of ctinit: its own modules and the foundations.
HUB_LAYER_MAY_IMPORT = {"ctinit.errors", "ctinit.tokens", "ctinit.version"}


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


def test_the_models_import_no_module_above_them_but_finetune():
    """Models save and push themselves through ctinit.hubio, never through loading, publish or the CLI."""
    allowed = {"ctinit.errors", "ctinit.atomic", "ctinit.version", "ctinit.tasks.sampler", "ctinit.finetune"}
    for path in sorted((ROOT / "ctinit" / "models").glob("*.py")):
        above = {m for m in _ctinit_imports(path, "ctinit.models")
                 if m not in allowed and not m.startswith(("ctinit.models", "ctinit.hubio"))}
        assert not above, (path.name, above)


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
