"""The one path type for everything igpt reads and writes: etils.epath, so gs:// works wherever
a local path does (orbax and TFDS use the same). A leaf module: any package may import it.

Object storage differs from a disk in ways these helpers absorb: there are no directories to
create, a single object write is already atomic (and a rename is a copy plus a delete), and
gcsfs caches listings that go stale when another process or host writes.
"""
from __future__ import annotations

import logging
import os
import platform

from etils import epath

# gcsfs logs every failed request with its traceback; igpt says what failed itself (storage_problem).
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def is_object_storage(path: str | os.PathLike) -> bool:
    """gs://, s3://, ...: a URL, not a local path."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """gs:// kept as a URL; a local path with "~" expanded, made absolute."""
    path = epath.Path(path)
    return path if is_object_storage(path) else path.expanduser().absolute()


def made_dir(path: str | os.PathLike) -> epath.Path:
    """as_path(path), created if local (object storage has no directories to create)."""
    path = as_path(path)
    if not is_object_storage(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def local_cache(*parts: str) -> str:
    """A directory under the user's cache (XDG_CACHE_HOME, else ~/.cache)/igpt: for what must lie
    on this host's disk even when the run lives in a bucket."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "igpt", *parts)


def probe_write(directory: str | os.PathLike) -> None:
    """Writes and deletes a small object in `directory` (made if local): on object storage the one
    way to learn, before any work, that the bucket exists and the credentials may write there."""
    directory = made_dir(directory)
    probe = directory / f".write-test-{platform.node()}-{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()


def probe_read(directory: str | os.PathLike) -> None:
    """Lists `directory`: a refusal (no credentials, no permission) raises here, where a plain
    exists() or is_dir() on gs:// would answer False. A directory that is not there passes."""
    try:
        next(iter(as_path(directory).iterdir()), None)
    except FileNotFoundError:
        pass


def storage_problem(url: str | os.PathLike, error: Exception, access: str = "write") -> str:
    """Why `url` on object storage cannot be read or written, and what to check, as one clause."""
    code = getattr(error, "code", None)
    text = str(error).strip()
    if isinstance(error, FileNotFoundError):
        why = "the bucket does not exist; check its name (gsutil ls gs://BUCKET)"
    elif code == 401:
        why = ("no credentials were found, so the request went anonymous; run `gcloud auth application-default "
               "login`, or run on a VM whose service account has access")
    elif code == 403 or text.startswith("Forbidden"):
        why = (f"the credentials in use may not {access} there (403 Forbidden); grant them a Storage role on the "
               "bucket (e.g. roles/storage.objectAdmin)")
    elif "google.auth" in type(error).__module__:
        why = (f"the credentials do not work ({type(error).__name__}: {text.splitlines()[0][:200] if text else ''}); "
               "refresh them with `gcloud auth application-default login`")
    else:
        why = f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"
    return f"cannot {access} {url} ({why})"


def forget_listings(path: str | os.PathLike) -> None:
    """On object storage, drops this process's cached directory listings (gcsfs keeps them, and
    they go stale when tensorstore, another process or another host adds objects), so the next
    exists(), is_dir() or iterdir() asks the store. Locally nothing is cached."""
    if is_object_storage(path):
        from etils.epath import backend

        backend.fsspec_backend.fs(os.fspath(path)).invalidate_cache()


def dirs_holding(root: str | os.PathLike, name: str) -> list[epath.Path]:
    """Directories under `root` (itself included) that hold a file called `name`, hidden folders
    skipped. On object storage one recursive listing (gcsfs find), since epath refuses `**` there."""
    root = as_path(root)
    if is_object_storage(root):
        from etils.epath import backend

        url = os.fspath(root).rstrip("/")
        scheme = url.split("://", 1)[0] + "://"
        found = backend.fsspec_backend.fs(url).find(url)
        files = [epath.Path(scheme + f.split("://", 1)[-1]) for f in found]
    else:
        files = []
        for top, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            files += [epath.Path(top) / name] if name in names else []
    return sorted({f.parent for f in files if f.name == name
                   and not any(part.startswith(".") for part in f.relative_to(root).parts[:-1])})


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Readers never see half a file. Locally: written beside it, then renamed over it. On object
    storage: one object write."""
    path = as_path(path)
    if is_object_storage(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
