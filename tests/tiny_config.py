"""The trainer tests' CLI config: tests/trainer_fixtures.tiny_config with 40 steps.

  igpt-train --config tests/tiny_config.py --workdir /tmp/t --config.data.data_dir=/tmp/tfds
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from trainer_fixtures import tiny_config  # noqa: E402


def get_config():
    return tiny_config(data_dir="", steps=40)
