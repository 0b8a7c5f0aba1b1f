import pytest
import torch

# The test models are tiny: one intra-op thread is as fast as two, and much faster when other processes load the
# CPU (two threads of tiny kernels then spin on each other). Subprocess tests set OMP_NUM_THREADS=1 themselves.
torch.set_num_threads(1)

#: The Hugging Face settings a user may have in the environment (offline mode, a token, another cache or endpoint).
#: No test may depend on them: each test starts without them, and a test that needs one sets it itself.
HF_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_ENDPOINT", "HF_HUB_DISABLE_IMPLICIT_TOKEN")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end test of more than ~20 s (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "user_hub_env: keep the user's HF_* variables (the opt-in real-Hub tests)")


@pytest.fixture(scope="session")
def empty_hf_home(tmp_path_factory):
    """An HF_HOME without a saved login or cached repos."""
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture(autouse=True)
def no_user_hub_settings(request, monkeypatch, empty_hf_home):
    """Each test runs online-by-default, without a token and with an empty Hugging Face home, whatever the user's
    environment says; huggingface_hub reads its settings at import, so its constants are reset too. Subprocesses
    inherit the cleared environment."""
    if request.node.get_closest_marker("user_hub_env"):
        return
    from huggingface_hub import constants

    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(empty_hf_home))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name, path in (("HF_HOME", ""), ("HF_TOKEN_PATH", "token"), ("HF_STORED_TOKENS_PATH", "stored_tokens"),
                       ("HF_HUB_CACHE", "hub"), ("HUGGINGFACE_HUB_CACHE", "hub"), ("HF_ASSETS_CACHE", "assets"),
                       ("HUGGINGFACE_ASSETS_CACHE", "assets"), ("HF_XET_CACHE", "xet")):
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(empty_hf_home / path) if path else str(empty_hf_home))


#: The token the local Hub knows as user ``me`` (member of ``org``), with write access.
LOCAL_HUB_TOKEN = "hf_LocalHubTokenThatMustNeverBePrinted42"


@pytest.fixture
def local_hub(monkeypatch, tmp_path):
    """A Hub on 127.0.0.1 (``tests/local_hub.py``) that huggingface_hub talks to over HTTP, in this process and in
    subprocesses: ``HF_ENDPOINT`` and ``HF_TOKEN`` are set (huggingface_hub reads the endpoint at import, so its
    constants are set too) and ``HF_HOME``/``HF_HUB_CACHE`` are empty folders of this test."""
    from huggingface_hub import constants

    from local_hub import LocalHub

    hub = LocalHub().start()
    hub.add_token(LOCAL_HUB_TOKEN, "me", orgs=("org",))
    home = tmp_path / "hf-home"
    for name, value in (("HF_ENDPOINT", hub.url), ("HF_TOKEN", LOCAL_HUB_TOKEN), ("HF_HOME", str(home)),
                        ("HF_HUB_CACHE", str(home / "hub")), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    import importlib

    # stderr holds the error line only (the module, not the class huggingface_hub.utils exports under that name)
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True)
    hub.token = LOCAL_HUB_TOKEN
    yield hub
    hub.stop()
