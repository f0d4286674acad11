"""The one path type for everything igpt reads and writes: etils.epath, so gs:// works wherever
a local path does (orbax and TFDS use the same). A leaf module: any package may import it.

Object storage differs from a disk in ways these helpers absorb: there are no directories to
create, a single object write is already atomic (and a rename is a copy plus a delete), and
gcsfs caches listings that go stale when another process or host writes.
"""
from __future__ import annotations

import os

from etils import epath


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
