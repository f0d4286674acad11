"""A catalog dataset prepared in a bucket, copied once to this host's disk before it is read.

igpt reads prepared TFDS datasets as ArrayRecord shards, whose C++ reader opens local files
only. With `data.data_dir=gs://...`, the dataset's prepared version directory (all its splits)
is copied to the local cache (igpt.paths.local_cache, mirrored by bucket and path) the first
time a process on this host reads it; processes that start together copy it once (a file lock),
and a `.staged` file written after the last shard marks a whole copy, so a copy cut short is
redone, never read.
"""
from __future__ import annotations

import json
import os
import shutil

from igpt.data import catalog
from igpt.data.errors import DataError
from igpt.data.locking import file_lock
from igpt.paths import as_path, forget_listings, local_cache, probe_read, storage_problem

STAGED = ".staged"


def staged_data_dir(spec: str, data_dir: str) -> str:
    """A local data_dir holding tfds:`spec` as it is prepared in the bucket `data_dir`."""
    url = os.fspath(data_dir).rstrip("/")
    try:
        return _stage(spec, url)
    except DataError:
        raise
    except Exception as e:  # gcsfs and google-auth raise more than OSError (e.g. 401 without credentials)
        raise DataError(f"data.data_dir={url} (for tfds:{spec}): {storage_problem(url, e, 'read')}.") from e


def _stage(spec: str, url: str) -> str:
    forget_listings(url)
    probe_read(url)
    remote = catalog.version_dir(spec, url)
    scheme, path = url.split("://", 1)
    local_root = local_cache("staged_data", scheme, path)
    version = as_path(local_root) / remote.relative_to(as_path(url))
    with file_lock(os.path.join(local_root, ".staging.lock")):
        if not _whole(version, remote):
            _copy(remote, version)
    return local_root


def _whole(local, remote) -> bool:
    marker = local / STAGED
    return marker.is_file() and json.loads(marker.read_text()).get("from") == os.fspath(remote)


def _copy(remote, local) -> None:
    """Every file of the prepared version directory, each written beside its name then renamed,
    then the marker."""
    local.mkdir(parents=True, exist_ok=True)
    (local / STAGED).unlink(missing_ok=True)
    files = sorted(p for p in remote.iterdir() if p.is_file())
    for f in files:
        tmp = local / f".{f.name}.part"
        with f.open("rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(tmp, local / f.name)
    (local / STAGED).write_text(json.dumps({"from": os.fspath(remote), "files": [f.name for f in files]}))
