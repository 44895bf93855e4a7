"""Shared fixtures: the tiny corpus is built once per test session."""

import pytest

from amnet.data import spoken_commands

TINY_SEED = 7


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data dir with the tiny corpus, generations g0 and g1 (one synthesis process)."""
    data_dir = tmp_path_factory.mktemp("tfds")
    for generation in (0, 1):
        spoken_commands.make_builder("tiny", generation, data_dir=str(data_dir), seed=TINY_SEED,
                                     num_workers=1).download_and_prepare()
    return data_dir


def tiny_name(generation: int) -> str:
    return f"spoken_commands/tiny_g{generation}_s{TINY_SEED}"
