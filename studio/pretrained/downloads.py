"""`download(arch)`: the published checkpoint files fetched from their publisher, checked, then imported.

resnet18: torchvision's `resnet18-f37072fd.pth` from download.pytorch.org; the 8 hex digits in its
name are the start of the file's sha256 (torchvision's own `check_hash` rule). gpt2: config.json,
model.safetensors and tokenizer.json from huggingface.co's `resolve` URLs, each checked against the
checksum the Hub sends with it: `X-Linked-Etag` (the sha256 of a large, LFS-stored file) or `ETag` (the
git blob sha1 of a small one). A file that does not match is deleted and refused. The files are
streamed into `<name>.part` with a progress callback; a transfer cut short keeps the `.part` and the
next call resumes it with an HTTP Range request (a server that ignores Range restarts it cleanly).

Offline, the first request fails at once with a message that says where to get the files and how to
import them by path (`python -m studio pretrained import PATH`). `STUDIO_PRETRAINED_URL` (or
`base_url=`) replaces the servers' address; it exists for the tests' local server only.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from studio.pretrained.mapping import PretrainedError

CHUNK = 1 << 20
TIMEOUT_S = 30.0
URL_ENV = "STUDIO_PRETRAINED_URL"
_HF = "https://huggingface.co/openai-community/gpt2/resolve/main/"


@dataclass(frozen=True)
class Remote:
    """One published file and how it is checked."""

    name: str                        # the file name, kept on disk
    base: str                        # the URL without the name
    sha256_prefix: str | None = None # torchvision: the hex digits in the file name
    sha256: str | None = None        # a full pinned digest
    server_checksum: bool = False    # Hugging Face: the digest the Hub sends (X-Linked-Etag / ETag)

    def url(self, base_url: str | None = None) -> str:
        return (base_url.rstrip("/") + "/" if base_url else self.base) + self.name


ARCHITECTURES: dict[str, tuple[Remote, ...]] = {
    "resnet18": (Remote("resnet18-f37072fd.pth", "https://download.pytorch.org/models/", sha256_prefix="f37072fd"),),
    "gpt2": tuple(Remote(n, _HF, server_checksum=True) for n in ("config.json", "model.safetensors", "tokenizer.json")),
}
# Class names fetched beside a checkpoint: PyTorch Hub's `imagenet_classes.txt` (the file its own ResNet example
# loads). It has no published digest: it is checked by content (studio.pretrained.labels, 1000 names).
LABELS: dict[str, tuple[Remote, int]] = {
    "resnet18": (Remote("imagenet_classes.txt", "https://raw.githubusercontent.com/pytorch/hub/master/"), 1000),
}


class _Recorder(urllib.request.HTTPRedirectHandler):
    """Keeps the headers of redirect responses: the Hub sends X-Linked-Etag on the 302 to its CDN."""

    def __init__(self):
        self.headers: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _offline_message(remote: Remote, url: str, reason, arch: str | None) -> str:
    what = f"the {arch} files" if arch else remote.name
    folder = "FOLDER" if arch == "gpt2" else remote.name
    return (f"cannot reach {url.split('/')[2]} to download {what} ({reason}); on a machine with internet, download "
            + (", ".join(r.url() for r in ARCHITECTURES[arch]) if arch in ARCHITECTURES else url)
            + f", copy {'them into one folder' if arch == 'gpt2' else 'it'} here and run "
            f"`python -m studio pretrained import {folder}`")


def _server_digest(headers: list) -> tuple[str, str] | None:
    """('sha256' | 'git-sha1', hex) from the Hub's headers, X-Linked-Etag first."""
    for name in ("X-Linked-Etag", "ETag"):
        for h in headers:
            value = h.get(name)
            if value:
                value = value.removeprefix("W/").strip('"').lower()
                if len(value) == 64:
                    return "sha256", value
                if len(value) == 40:
                    return "git-sha1", value
    return None


def _digest(path: Path, kind: str) -> str:
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1()
    if kind == "git-sha1":
        h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_file(remote: Remote, dest_dir: Path, *, base_url: str | None = None, progress=None,
               arch: str | None = None) -> Path:
    """Download one file into `dest_dir` (resuming a `.part` left by a cut transfer) and check it.

    `progress(done_bytes, total_bytes | None, name)` is called as chunks arrive. Returns the checked
    file; PretrainedError when offline, on an HTTP error, a cut transfer (the .part is kept to resume)
    or a checksum mismatch (the .part is deleted).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    final, part = dest_dir / remote.name, dest_dir / (remote.name + ".part")
    if final.exists():
        return final  # checked when it was written
    url = remote.url(base_url)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    recorder = _Recorder()
    opener = urllib.request.build_opener(recorder)
    try:
        response = opener.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already whole: check it below
            response = None
        else:
            raise PretrainedError(f"{url} answered HTTP {e.code} ({e.reason}); the file may have moved: download it "
                                  f"by hand and run `python -m studio pretrained import PATH`") from None
    except (urllib.error.URLError, OSError) as e:
        raise PretrainedError(_offline_message(remote, url, getattr(e, "reason", e), arch)) from None
    headers = recorder.headers + ([response.headers] if response is not None else [])
    if response is not None:
        with response:
            resumed = response.status == 206
            mode, done = ("ab", have) if resumed else ("wb", 0)
            length = response.headers.get("Content-Length")
            total = done + int(length) if length and length.isdigit() else None
            try:
                with open(part, mode) as f:
                    if progress:
                        progress(done, total, remote.name)
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total, remote.name)
            except (OSError, http.client.HTTPException) as e:  # a cut connection: IncompleteRead, a reset
                raise PretrainedError(f"the download of {remote.name} stopped at {done:,} of "
                                      f"{total if total is not None else '?'} bytes ({type(e).__name__}); run the same "
                                      "command again to resume it") from None
            if total is not None and done < total:
                raise PretrainedError(f"the download of {remote.name} stopped at {done:,} of {total:,} bytes; run the "
                                      "same command again to resume it")
    _check(remote, part, headers)
    part.replace(final)
    return final


def _check(remote: Remote, part: Path, headers: list) -> None:
    """Compare the downloaded bytes with the publisher's checksum; delete them when they differ."""
    if remote.sha256 or remote.sha256_prefix:
        kind, expected = "sha256", (remote.sha256 or remote.sha256_prefix).lower()
    elif remote.server_checksum:
        found = _server_digest(headers)
        if found is None:
            part.unlink(missing_ok=True)
            raise PretrainedError(f"the server sent no checksum (X-Linked-Etag or ETag) with {remote.name}, so it "
                                  "cannot be checked and was deleted; download it by hand from the publisher's page "
                                  "and run `python -m studio pretrained import PATH`")
        kind, expected = found
    else:
        return
    got = _digest(part, kind)
    if not got.startswith(expected):
        part.unlink(missing_ok=True)
        raise PretrainedError(f"{remote.name} failed its checksum ({kind} {got[:16]}..., expected {expected[:16]}...): "
                              "the download was damaged or the file was replaced; it was deleted, run the command "
                              "again to download it anew")


def download(arch: str, *, name: str | None = None, workspace=None, progress=None, base_url: str | None = None,
             files: tuple[Remote, ...] | None = None, with_labels: bool | None = None, **import_options):
    """Download `arch` ("resnet18" | "gpt2") from its publisher into workspace/downloads/pretrained/<arch>/,
    check it and import it (studio.pretrained.import_checkpoint); returns the Imported run.

    `progress(done_bytes, total_bytes | None, file_name)`; `files` replaces the catalogue's list (tests).
    `with_labels` (default: when `files` is the catalogue's): also fetch the class names (LABELS); when that
    alone fails, the import still happens with numbered classes and a warning (in `notes` and the event log)
    says how to add names later.
    """
    from studio.pretrained.importer import import_checkpoint
    from studio.workspace import workspace_dir

    if arch not in ARCHITECTURES:
        raise PretrainedError(f"unknown pretrained architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
    base_url = base_url or os.environ.get(URL_ENV) or None
    ws = Path(workspace) if workspace is not None else workspace_dir()
    dest = ws / "downloads" / "pretrained" / arch
    paths = [fetch_file(r, dest, base_url=base_url, progress=progress, arch=arch)
             for r in (files or ARCHITECTURES[arch])]
    target = dest if arch == "gpt2" else paths[0]
    if with_labels is None:
        with_labels = files is None
    # The class names land beside the checkpoint, where the import picks them up when their count fits.
    warning = fetch_labels(arch, dest, base_url=base_url, progress=progress)[1] if with_labels else None
    imp = import_checkpoint(target, name=name, workspace=workspace, **import_options)
    if warning:
        from studio.runs.store import Store

        warning = warning.replace("RUN_ID", imp.run_id)
        imp.notes.append(warning)
        (import_options.get("store") or Store(Path(workspace) / "studio.db" if workspace is not None else None)
         ).log_event(imp.run_id, warning, level="warning")
    return imp


def fetch_labels(arch: str, dest: Path, *, base_url: str | None = None,
                 progress=None) -> tuple[Path | None, str | None]:
    """(the checked class-names file of `arch`, None) or (None, a warning saying why not and how to add names
    later). A file that does not hold the expected count of non-empty names is deleted."""
    from studio.pretrained.labels import ADD_LATER, read_labels

    if arch not in LABELS:
        return None, None
    remote, count = LABELS[arch]
    try:
        path = fetch_file(remote, dest, base_url=base_url, progress=progress)
        try:
            found = len(read_labels(path))
            if found != count:
                raise PretrainedError(f"{remote.name} holds {found:,} class names, not the {count:,} expected")
        except PretrainedError:
            path.unlink(missing_ok=True)
            raise
    except PretrainedError as e:  # its first clause says what failed; the advice that follows is the checkpoint's
        return None, (f"class names not fetched: {str(e).split('; ')[0]}. The model was imported with numbered "
                      f"classes; get {remote.url()} and add them with "
                      f"`{ADD_LATER.format(run_id='RUN_ID', file=remote.name)}`")
    return path, None
