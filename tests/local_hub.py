"""A Hugging Face Hub on localhost for the tests: the subset of the Hub's HTTP API that huggingface_hub's client
(2.x, httpx) calls for ctinit's flows, checked against that client's code (``hf_api.py``, ``_commit_api.py``,
``file_download.py``, ``_snapshot_download.py``, ``utils/_http.py``):

- ``GET /api/whoami-v2``; ``POST /api/repos/create`` (409 when it exists: ``create_repo(exist_ok=True)`` passes);
- ``GET /api/models/ORG/NAME[/revision/REV]`` (``id``, ``sha``, ``private``, ``tags``, ``siblings``, ``cardData``);
  ``GET /api/models/ORG/NAME/tree/REV[/PATH]`` (``snapshot_download`` lists the files of the commit);
  ``GET /api/models?filter=&author=&search=`` (``list_models``; the tags come from the card, as on the Hub);
- ``POST .../preupload/REV`` (every file ``regular``, so it travels inline in the commit; ``oid`` of the file already
  there, so that an unchanged file is skipped) and ``POST .../commit/REV`` (NDJSON: ``header``, ``file`` with base64
  content, ``deletedFile``; ``?create_pr=1`` opens ``refs/pr/N``); ``POST .../branch/B`` and ``.../tag/REV``;
  ``POST /api/validate-yaml`` (the card's front matter must parse);
- ``HEAD``/``GET /ORG/NAME/resolve/REV/PATH`` with ``ETag`` (the git blob sha1), ``X-Repo-Commit``,
  ``Content-Length`` and ``Range`` (a dropped download resumes with it).

Errors are the Hub's: 401 for an unknown token (``X-Error-Message: Invalid credentials in Authorization header``),
401 with ``X-Error-Code: RepoNotFound`` for a private repo without access, 403 for a write without the right, 404
with ``RepoNotFound``/``RevisionNotFound``/``EntryNotFound``. Faults are injected with :meth:`LocalHub.fault`.
Binds 127.0.0.1 on a free port; started and stopped by the ``local_hub`` fixture (``tests/conftest.py``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the Hub sends as a regular file's ETag and as ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    owner: str
    private: bool
    commits: dict = field(default_factory=dict)  # sha -> {path: bytes}
    branches: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    messages: dict = field(default_factory=dict)  # sha -> commit summary
    prs: int = 0

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if revision in self.commits else None


@dataclass
class Fault:
    """What the next matching requests get instead of the normal answer. ``kind``: ``status`` (``status`` and
    ``headers``), ``drop`` (the connection closes while the request body is read: a dropped upload), ``drop_body``
    (half the file then the connection closes: a dropped download), ``truncate`` (a complete answer that holds half
    the file), ``etag`` (an ETag that is not the file's)."""
    method: str
    path: str  # a regular expression searched in the request's path
    kind: str = "status"
    status: int = 500
    headers: dict = field(default_factory=dict)
    times: int | None = 1  # None: every time
    hits: int = 0


class LocalHub:
    """The Hub's state (users, tokens, repos) and the server over it. ``tokens`` maps a token to ``(user, orgs,
    can_write)``; ``requests`` records ``(method, path)`` of every request."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, tuple[str, tuple[str, ...], bool]] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.user_agents: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "LocalHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ test helpers
    def add_token(self, token: str, user: str, orgs: tuple[str, ...] = (), write: bool = True) -> str:
        self.tokens[token] = (user, tuple(orgs), write)
        return token

    def fault(self, method: str, path: str, kind: str = "status", status: int = 500, headers: dict | None = None,
              times: int | None = 1) -> Fault:
        fault = Fault(method, path, kind, status, dict(headers or {}), times)
        self.faults.append(fault)
        return fault

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.resolve(revision)])

    def head(self, repo_id: str, revision: str = "main") -> str:
        return self.repos[repo_id].resolve(revision)

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def new_repo(self, repo_id: str, private: bool = False) -> Repo:
        repo = Repo(owner=repo_id.split("/")[0], private=private)
        empty = self._commit_id(repo_id, None, {}, "initial commit")
        repo.commits[empty] = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        repo.branches["main"] = empty
        self.repos[repo_id] = repo
        return repo

    def _commit_id(self, repo_id, parent, files, message) -> str:
        digest = hashlib.sha1(json.dumps([repo_id, parent, message, len(self.requests),
                                          sorted((p, git_blob_sha1(d)) for p, d in files.items())]).encode())
        return digest.hexdigest()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path) and (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    return fault
        return None


def card_metadata(files: dict[str, bytes]) -> dict:
    text = files.get("README.md", b"").decode("utf-8", "replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else {}


def hub_tags(meta: dict) -> list[str]:
    """The tags the Hub shows for a repo: the card's tags, its library, license and pipeline tag."""
    tags = list(meta.get("tags") or [])
    for key, prefix in (("library_name", ""), ("pipeline_tag", ""), ("license", "license:")):
        if meta.get(key):
            tags.append(f"{prefix}{meta[key]}")
    return tags


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a dropped connection drops one request only

    def log_message(self, *args):  # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    @property
    def hub(self) -> LocalHub:
        return self.server.hub

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json",
              length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status=200, headers=None):
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        headers["X-Error-Message"] = message
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, status, headers)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _user(self):
        """``(user, orgs, can_write)`` of the bearer token, None without one; False for an unknown token."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.hub.tokens.get(auth[len("Bearer "):], False)

    def _can_read(self, repo: Repo, user) -> bool:
        return not repo.private or (bool(user) and repo.owner in (user[0], *user[1]))

    def _repo(self, repo_id: str, write: bool = False):
        """The repo if this request may see (``write``: change) it; else the Hub's error is sent and None returned."""
        user = self._user()
        if user is False:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get(repo_id)
        if repo is None or not self._can_read(repo, user):
            self._error(401 if not user else 404, "Repository not found", "RepoNotFound")
            return None
        if write and not (user and user[2] and repo.owner in (user[0], *user[1])):
            self._error(403, f"You don't have the rights to write to {repo_id}")
            return None
        return repo

    def _revision(self, repo: Repo, revision: str):
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self):
        url = urlsplit(self.path)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.hub.requests.append((self.command, path))
        self.hub.user_agents.append(self.headers.get("User-Agent", ""))
        fault = self.hub.take_fault(self.command, path)
        if fault is not None and fault.kind == "status":
            self._body() if self.command in ("POST", "PUT") else None
            return self._error(fault.status, f"injected HTTP {fault.status}", None, fault.headers)
        if fault is not None and fault.kind == "drop":
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length // 2)
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "whoami-v2"]:
            return self._whoami()
        if parts[:3] == ["api", "repos", "create"]:
            return self._create(json.loads(self._body() or b"{}"))
        if parts[:2] == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(self._body() or b"{}"))
        if parts == ["api", "models"]:
            return self._list(query)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            if not rest:
                return self._info(repo_id, "main")
            action, arg = rest[0], "/".join(rest[1:])
            if action == "revision":
                return self._info(repo_id, arg)
            if action == "tree":
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
            if action == "preupload":
                return self._preupload(repo_id, arg, json.loads(self._body() or b"{}"))
            if action == "commit":
                return self._commit(repo_id, arg, self._body(), query.get("create_pr") == "1")
            if action == "discussions":
                return self._discussion(repo_id, arg, json.loads(self._body() or b"{}") if self.command == "POST" else {})
            if action in ("branch", "tag"):
                return self._ref(repo_id, action, arg, json.loads(self._body() or b"{}"))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), fault)
        return self._error(404, f"no route {self.command} {path}")

    do_GET = do_HEAD = do_POST = do_DELETE = lambda self: self._dispatch()  # noqa: E731

    # ------------------------------------------------------------------ routes
    def _whoami(self):
        user = self._user()
        if not user:
            return self._error(401, "Invalid credentials in Authorization header")
        name, orgs, write = user
        self._json({"type": "user", "name": name, "orgs": [{"name": o, "type": "org"} for o in orgs],
                    "auth": {"type": "access_token", "accessToken": {"role": "write" if write else "read"}}})

    def _create(self, payload: dict):
        user = self._user()
        if not user:
            return self._error(401, "Invalid credentials in Authorization header")
        owner = payload.get("organization") or user[0]
        repo_id = f"{owner}/{payload['name']}"
        if not user[2] or owner not in (user[0], *user[1]):
            return self._error(403, f"You don't have the rights to create a model under the namespace {owner}")
        if repo_id in self.hub.repos:
            # the Hub's 409 names the repo: create_repo(exist_ok=True) reads its "url"
            return self._json({"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"},
                              409, {"X-Error-Message": "You already created this model repo"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.hub.new_repo(repo_id, private=private)
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict):
        try:
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", payload.get("content", ""), re.S)
            if match and not isinstance(yaml.safe_load(match.group(1)) or {}, dict):
                raise ValueError("metadata must be a mapping")
        except (yaml.YAMLError, ValueError) as e:
            return self._json({"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def _model(self, repo_id: str, repo: Repo, commit: str) -> dict:
        files = repo.commits[commit]
        meta = card_metadata(files)
        return {"id": repo_id, "modelId": repo_id, "author": repo.owner, "sha": commit, "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": hub_tags(meta),
                "library_name": meta.get("library_name"), "pipeline_tag": meta.get("pipeline_tag"),
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                "cardData": meta or None, "siblings": [{"rfilename": p} for p in sorted(files)]}

    def _info(self, repo_id: str, revision: str):
        repo = self._repo(repo_id)
        if repo is not None and (commit := self._revision(repo, revision)) is not None:
            self._json(self._model(repo_id, repo, commit))

    def _list(self, query: dict):
        user, rows = self._user(), []
        for repo_id, repo in sorted(self.hub.repos.items()):
            model = self._model(repo_id, repo, repo.branches["main"])
            if not self._can_read(repo, user) or (query.get("author") and repo.owner != query["author"]):
                continue
            if query.get("search") and query["search"].lower() not in repo_id.lower():
                continue
            if query.get("filter") and query["filter"] not in model["tags"]:
                continue
            rows.append({k: model[k] for k in ("id", "author", "private", "downloads", "likes", "tags", "library_name",
                                               "pipeline_tag", "lastModified", "createdAt")})
        self._json(rows[: int(query["limit"])] if query.get("limit") else rows)

    def _tree(self, repo_id: str, revision: str, under: str):
        repo = self._repo(repo_id)
        if repo is None or (commit := self._revision(repo, revision)) is None:
            return None
        files = {p: d for p, d in repo.commits[commit].items() if not under or p.startswith(under.rstrip("/") + "/")}
        if under and not files:
            return self._error(404, f"{under} does not exist on {revision}", "EntryNotFound")
        self._json([{"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d)} for p, d in sorted(files.items())])

    def _preupload(self, repo_id: str, revision: str, payload: dict):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return None
        existing = repo.commits.get(repo.resolve(revision) or "", {})
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                               "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None}
                              for f in payload.get("files", [])]})

    def _commit(self, repo_id: str, revision: str, body: bytes, create_pr: bool):
        repo = self._repo(repo_id, write=True)
        if repo is None or (parent := self._revision(repo, revision)) is None:
            return None
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "the first line of a commit must be its header")
        files, message = dict(repo.commits[parent]), lines[0]["value"].get("summary", "")
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
            else:
                return self._error(400, f"unsupported commit operation {key!r} (files go inline: regular mode)")
        commit = self.hub._commit_id(repo_id, parent, files, message)
        repo.commits[commit], repo.messages[commit] = files, message
        pr_url = None
        if create_pr:
            repo.prs += 1
            repo.branches[f"refs/pr/{repo.prs}"] = commit
            pr_url = f"{self.hub.url}/{repo_id}/discussions/{repo.prs}"
        else:
            repo.branches[revision if revision in repo.branches else "main"] = commit
        self._json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                    "pullRequestUrl": pr_url, "success": True})

    def _discussion(self, repo_id: str, num: str, payload: dict):
        """A pull request (``create_pull_request``: POST, then GET of its details) on ``refs/pr/N``, from main."""
        repo = self._repo(repo_id, write=self.command == "POST")
        if repo is None:
            return None
        if self.command == "POST":
            repo.prs += 1
            repo.branches[f"refs/pr/{repo.prs}"] = repo.branches["main"]
            return self._json({"num": repo.prs, "url": {"web": f"{self.hub.url}/{repo_id}/discussions/{repo.prs}"}})
        if f"refs/pr/{num}" not in repo.branches:
            return self._error(404, f"no discussion {num}")
        self._json({"title": "pull request", "num": int(num), "author": {"name": repo.owner},
                    "createdAt": "2026-01-01T00:00:00.000Z", "status": "draft", "isPullRequest": True,
                    "repo": {"name": repo_id, "type": "model"}, "events": [], "filesWithConflicts": [],
                    "changes": {"base": "refs/heads/main"}})

    def _ref(self, repo_id: str, kind: str, name: str, payload: dict):
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return None
        start = (payload.get("startingPoint") or "main") if kind == "branch" else name
        if (commit := self._revision(repo, start)) is None:
            return None
        refs, ref = (repo.branches, name) if kind == "branch" else (repo.tags, payload["tag"])
        if ref in refs:
            return self._error(409, f"{kind} {ref} already exists")
        refs[ref] = commit
        self._json({"success": True})

    def _resolve(self, repo_id: str, revision: str, path: str, fault: Fault | None):
        repo = self._repo(repo_id)
        if repo is None or (commit := self._revision(repo, revision)) is None:
            return None
        files = repo.commits[commit]
        if path not in files:
            return self._error(404, f"{path} does not exist on {revision}", "EntryNotFound",
                               {"X-Repo-Commit": commit})
        data = files[path]
        etag = git_blob_sha1(data) if not (fault and fault.kind == "etag") else git_blob_sha1(data + b"other")
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = int(match.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        status = 206 if start else 200
        if fault and fault.kind == "truncate":
            body = body[: len(body) // 2]
        if fault and fault.kind == "drop_body" and self.command == "GET":
            self._send(status, b"", headers, "application/octet-stream", length=len(body))
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        self._send(status, body, headers, "application/octet-stream")


__all__ = ["Fault", "LocalHub", "Repo", "git_blob_sha1", "hub_tags"]
