"""Eight simulated CPU devices for every test (set before jax is imported), and one
prepared copy of the shipped datasets per test session."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Shipped TFDS datasets are prepared here on first use, offline."""
    return str(tmp_path_factory.mktemp("tfds"))
