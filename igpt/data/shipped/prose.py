"""shipped:prose: English prose from Python's own documentation (`pydoc_data.topics`, the text
`help()` shows), one document per topic, split by topic."""
from __future__ import annotations

import tensorflow_datasets as tfds

TEST_EVERY = 8  # every 8th topic in sorted order is held out (9 of 79 on Python 3.11)


def topics() -> dict[str, str]:
    """Topic name -> help text, from the pydoc_data module that ships with CPython."""
    from pydoc_data.topics import topics as all_topics
    return dict(sorted(all_topics.items()))


class ShippedProse(tfds.core.GeneratorBasedBuilder):
    """One example per help topic: `text` (str) and `topic` (its name)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "pydoc_data topics, every 8th topic held out."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text(), "topic": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        names = list(topics())
        return {"train": self._generate_examples([n for i, n in enumerate(names) if i % TEST_EVERY != TEST_EVERY - 1]),
                "test": self._generate_examples([n for i, n in enumerate(names) if i % TEST_EVERY == TEST_EVERY - 1])}

    def _generate_examples(self, names):
        texts = topics()
        for name in names:
            yield name, {"text": texts[name], "topic": name}
