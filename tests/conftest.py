"""Eight simulated CPU devices for every test (set before jax is imported), one persistent
compilation cache that every test and every CLI it spawns shares (the same tiny programs
compile once per machine, not once per process), and one prepared copy of the shipped
datasets per test session."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"igpt-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402

pytest_plugins = ["gcs_emulator"]  # fixtures gcs_bucket, gcs_root: gs:// on a local GCS emulator


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Shipped TFDS datasets are prepared here on first use, offline."""
    return str(tmp_path_factory.mktemp("tfds"))
