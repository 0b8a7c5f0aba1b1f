"""A table-driven fuzz of folders to push: links (inside, outside, broken, loops), tokens in nested, linked and
hidden places, FIFOs. Each folder is either uploaded, and then exactly what the copy held is what was scanned (no
token reaches the Hub), or refused with one line naming the culprit, before anything is uploaded. The Hub is mocked.
"""
import os
from pathlib import Path

import pytest

from ctinit.errors import CtinitError
from ctinit.hubio.upload import push_folder

TOKEN = "hf_FuzzTokenThatMustNeverBeUploaded42"  # the user's own token
SHAPED = "hf_" + "Q" * 34  # a token-shaped string that is not the user's


def write(path: Path, text: str = "data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def link(path: Path, target) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


# Each case: (name, build(folder, outside), expected). ``outside`` is a folder beside the one pushed. Expected is
# ("ok", the files uploaded) or ("refused", what the one error line says).
CASES = [
    ("plain", lambda f, o: (write(f / "config.json"), write(f / "sub" / "deep" / "notes.md")),
     ("ok", {"config.json", "sub/deep/notes.md"})),
    ("token in a nested file", lambda f, o: write(f / "sub" / "deep" / "notes.md", f"key {TOKEN}"),
     ("refused", "sub/deep/notes.md: contains a Hugging Face token")),
    ("token-shaped string in a nested file", lambda f, o: write(f / "a" / "b" / "c.txt", f"x{SHAPED}x"),
     ("refused", "a/b/c.txt: contains a Hugging Face token")),
    ("token in a nested file name", lambda f, o: write(f / "sub" / f"{SHAPED}.txt"),
     ("refused", "a file name holds a Hugging Face token (sub/hf_***.txt)")),
    ("token in a link's name", lambda f, o: link(f / f"{TOKEN}.md", "config.json") or write(f / "config.json"),
     ("refused", "a file name holds a Hugging Face token (hf_***.md)")),
    ("link to a hidden file holding a token", lambda f, o: (write(f / ".env", f"HF_TOKEN={TOKEN}"),
                                                             link(f / "notes.md", ".env")),
     ("refused", "notes.md: contains a Hugging Face token")),
    ("link into a hidden folder holding a token", lambda f, o: (write(f / ".cache" / "k.txt", TOKEN),
                                                                 link(f / "data", ".cache")),
     ("refused", "data/k.txt: contains a Hugging Face token")),
    ("hidden file with a token (never uploaded)", lambda f, o: (write(f / ".env", TOKEN), write(f / "config.json")),
     ("ok", {"config.json"})),
    ("link to a folder inside", lambda f, o: (write(f / "real" / "a.txt"), link(f / "alias", "real")),
     ("ok", {"real/a.txt", "alias/a.txt"})),
    ("link to a file inside a linked folder", lambda f, o: (write(f / "real" / "a.txt", TOKEN), link(f / "alias", "real")),
     ("refused", "alias/a.txt: contains a Hugging Face token")),
    ("link to a folder outside holding a token", lambda f, o: (write(o / "secrets" / "token.txt", TOKEN),
                                                                link(f / "linked", o / "secrets")),
     ("refused", "linked: a link that leaves the folder")),
    ("link to a file outside", lambda f, o: (write(o / "weights.bin.data"), link(f / "weights.bin.data", o / "weights.bin.data")),
     ("refused", "weights.bin.data: a link that leaves the folder")),
    ("relative link climbing out", lambda f, o: (write(o / "x.txt"), link(f / "sub" / "up", "../../outside/x.txt")),
     ("refused", "sub/up: a link that leaves the folder")),
    ("link to the folder itself", lambda f, o: link(f / "loop", "."),
     ("refused", "loop: a link to a folder that holds it (a loop)")),
    ("link to a parent folder", lambda f, o: link(f / "a" / "b" / "up", "../.."),
     ("refused", "up: a link to a folder that holds it (a loop)")),
    ("two links to each other's folders", lambda f, o: (link(f / "a" / "to_b", "../b"), link(f / "b" / "to_a", "../a")),
     ("refused", "a link to a folder that holds it (a loop)")),
    ("broken link", lambda f, o: link(f / "gone.txt", "nowhere.txt"),
     ("refused", "gone.txt: a broken link")),
    ("a FIFO", lambda f, o: os.mkfifo(f / "pipe"),
     ("refused", "pipe: not a file or a folder")),
    ("pickle in a nested folder", lambda f, o: write(f / "sub" / "optimizer.pt"),
     ("refused", "holds pickle files (sub/optimizer.pt)")),
]


@pytest.fixture
def hub(local_hub, monkeypatch):
    """The local Hub (tests/local_hub.py) over HTTP, with ``TOKEN`` as the user's token."""
    local_hub.add_token(TOKEN, "me")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return local_hub


@pytest.mark.parametrize("name,build,expected", CASES, ids=[c[0] for c in CASES])
def test_push_folder_fuzz(tmp_path, hub, name, build, expected):
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    build(folder, outside)
    kind, what = expected
    if kind == "ok":
        push_folder(folder, "me/fuzz")
        uploaded = {p: d for p, d in hub.files("me/fuzz").items() if p != ".gitattributes"}
        assert set(uploaded) == what  # links became the files they point to (a commit holds files only)
        for path, data in uploaded.items():
            assert data == (folder / path).read_bytes()
            assert TOKEN.encode() not in data and SHAPED.encode() not in data
    else:
        with pytest.raises(CtinitError) as refused:
            push_folder(folder, "me/fuzz")
        line = str(refused.value)
        assert what in line and "\n" not in line and TOKEN not in line and SHAPED not in line, line
        assert str(folder) in line  # it names the user's folder, never the temporary copy
        assert not hub.requests  # refused before anything reached the Hub
