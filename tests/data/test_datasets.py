"""Mixed sources: an update's split plus replayed base data, as one random-access source."""

import pytest

from amnet.data import datasets, input_pipeline
from amnet.studies import update_trainer
from experiments.configs import neuraldiff as neuraldiff_config
from tests.helpers import tiny_name


def _records(prefix, n):
    return [{"id": f"{prefix}{i}"} for i in range(n)]


def test_a_selection_reads_the_chosen_records_of_each_part_in_order():
    a, b = _records("a", 5), _records("b", 7)
    mixed = datasets.Selection([(a, [4, 0]), (b, [6, 2, 3])])
    assert len(mixed) == 5
    assert [mixed[i]["id"] for i in range(5)] == ["a4", "a0", "b6", "b2", "b3"]
    with pytest.raises(IndexError, match="record 5 of a selection of 5"):
        mixed[5]
    with pytest.raises(ValueError, match="part 1: indices must be 1-D within"):
        datasets.Selection([(a, [0]), (b, [7])])


def test_replay_adds_a_seeded_draw_of_the_base_without_repeats():
    update, base = _records("u", 10), _records("b", 30)
    assert datasets.with_replay(update, base, 0.0, seed=1) is update
    mixed = datasets.with_replay(update, base, 1.5, seed=1)
    ids = [mixed[i]["id"] for i in range(len(mixed))]
    assert ids[:10] == [r["id"] for r in update] and len(ids) == 25 == len(set(ids))
    assert all(i.startswith("b") for i in ids[10:])
    again = datasets.with_replay(update, base, 1.5, seed=1)
    other = datasets.with_replay(update, base, 1.5, seed=2)
    assert [again[i]["id"] for i in range(25)] == ids != [other[i]["id"] for i in range(25)]
    assert len(datasets.with_replay(update, base, 10.0, seed=0)) == 40  # all of the base at most
    with pytest.raises(ValueError, match="replay share must be >= 0"):
        datasets.with_replay(update, base, -0.1, seed=0)


def test_an_update_with_base_replay_trains_on_both_generations(tiny_data_dir):
    config = neuraldiff_config.get_config("tiny")
    config.data.name, config.data.data_dir = tiny_name(0), str(tiny_data_dir)
    config.base_replay = 1.0
    config.frontend.normalization = "global"  # no base run to take CMVN statistics from
    trainer = update_trainer.UpdateTrainer(config)
    ids_of = lambda generation: {  # noqa: E731
        input_pipeline.text_of(r["id"]) for r in datasets.open_dataset(
            trainer.data_config(generation), "train")}
    g0, g1 = ids_of(0), ids_of(1)
    batches = trainer._batches(1)
    seen = set()
    for _ in range(2 * len(g1) // config.train.global_batch_size + 2):
        seen |= {i for i in next(batches)["ids"] if i}
    assert seen & g1 and seen & g0 and seen <= g0 | g1
    assert len(seen & g0) <= len(g1)  # one update's share: as many as the update's own
    source, report, _ = trainer._train_data[1]
    assert len(source) == 2 * len(g1) and report.total == len(source)
