"""The results schema and the one scorer (`amnet.evaluation.results`, `amnet.evaluation.scoring`),
and compare's
joining rules (`experiments.compare`)."""

import dataclasses
import json

import numpy as np
import pytest

from amnet.amortized.costs import frame_costs
from amnet.amortized.latency import simulate
from amnet.evaluation import compare, metrics, scoring
from amnet.evaluation import results as results_io
from amnet.rnnt.transducer import TransducerConfig

MODEL = TransducerConfig(input_dim=12, vocab_size=29, encoder_layers=1, encoder_hidden=16,
                         embed_dim=4, predictor_hidden=8, joint_dim=8,
                         encoder_branches=("dense", "lowrank(2)"))
LATENCY = scoring.LatencyModel(frame_period_s=0.03, processor_flops=2e6)


def _outputs(beam=True):
    return [results_io.UtteranceOutput("a", "Turn the lights ON", "turn the light on",
                                       "turn the lights on" if beam else None, "0011"),
            results_io.UtteranceOutput("b", "what time is it", "what time",
                                       "what time is it" if beam else None, "1110000")]


def test_score_applies_the_shared_rules():
    outputs = _outputs()
    scored = scoring.score(outputs, MODEL, LATENCY)
    refs = [o.reference for o in outputs]
    assert scored["wer_greedy"] == metrics.word_errors(refs, [o.greedy for o in outputs]).rate
    assert scored["wer_greedy"] == pytest.approx(3 / 8)  # 1 substitution + 2 deletions
    assert scored["wer_beam"] == 0.0
    costs = np.array(frame_costs(MODEL).per_branch, float)
    frames = [costs[[0, 0, 1, 1]], costs[[1, 1, 1, 0, 0, 0, 0]]]
    assert scored["mflops_per_frame"] == pytest.approx(np.concatenate(frames).mean() / 1e6)
    assert scored["frames_per_branch"] == {"0:dense": pytest.approx(6 / 11),
                                           "1:lowrank(2)": pytest.approx(5 / 11)}
    upl = [simulate(f, frame_period_s=0.03, processor_flops=2e6).latency_s for f in frames]
    assert scored["upl_max_ms"] == pytest.approx(1e3 * max(upl))
    assert scored["upl_mean_ms"] == pytest.approx(1e3 * np.mean(upl))
    assert scored["dataset"]["words"] == 8 and scored["dataset"]["utterances"] == 2
    # The fingerprint depends on the test set, not on order or hypotheses.
    assert scoring.dataset_fingerprint(outputs[::-1]) == scored["dataset"]["fingerprint"]
    other = [dataclasses.replace(outputs[0], reference="turn the lights off"), outputs[1]]
    assert scoring.dataset_fingerprint(other) != scored["dataset"]["fingerprint"]


def test_score_refuses_inconsistent_outputs():
    with pytest.raises(ValueError, match="branch 2"):
        scoring.score([results_io.UtteranceOutput("a", "x", "x", None, "02")], MODEL, LATENCY)
    with pytest.raises(ValueError, match="no beam hypothesis"):
        scoring.score([_outputs()[0], _outputs(beam=False)[1]], MODEL, LATENCY)
    with pytest.raises(ValueError, match="scored twice"):
        scoring.score([_outputs()[0]] * 2, MODEL, LATENCY)
    with pytest.raises(results_io.ResultsError, match="string of digits"):
        results_io.UtteranceOutput("a", "x", "x", None, "0a")


def _record(run="r", framework="jax", **changes):
    record = scoring.run_metrics(_outputs(), run=run, framework=framework, dataset="d",
                                 split="test", model=MODEL, latency=LATENCY, config=None,
                                 train_time_s=1.5, hardware={"framework": framework})
    record.update(changes)
    return record


def test_metrics_files_are_checked_field_by_field(tmp_path):
    path = tmp_path / "metrics.json"
    results_io.write_metrics(path, _record())
    assert results_io.read_metrics(path)["wer_greedy"] == pytest.approx(3 / 8)
    for broken, message in ((lambda r: r.pop("upl_p90_ms"), "missing field 'upl_p90_ms'"),
                            (lambda r: r.update(wer_greedy="3%"), "'wer_greedy' is str"),
                            (lambda r: r.update(update_bytes=True), "'update_bytes' is bool"),
                            (lambda r: r.update(schema="other/9"), "schema 'other/9'")):
        record = _record()
        broken(record)
        path.write_text(json.dumps(record))
        with pytest.raises(results_io.ResultsError, match=message):
            results_io.read_metrics(path)
    path.write_text("{not json")
    with pytest.raises(results_io.ResultsError, match="not JSON"):
        results_io.read_metrics(path)
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"id": "a", "reference": "x"}\n')
    with pytest.raises(results_io.ResultsError, match="outputs.jsonl:1: expected fields"):
        results_io.read_outputs(outputs)


def _run_dir(root, name, record, outputs=None):
    run = root / name
    run.mkdir()
    results_io.write_metrics(run / "metrics.json", record)
    if outputs is not None:
        results_io.write_outputs(run / "outputs.jsonl", outputs)
    return run


def test_compare_rescores_outputs_and_guards_comparability(tmp_path):
    # A run with raw outputs is rescored at the common latency model; one given as metrics
    # only is used as is.
    _run_dir(tmp_path, "a", _record("a"), _outputs())
    _run_dir(tmp_path, "b", _record("b", "torch", wer_greedy=0.1, mflops_per_frame=99.0))
    slower = scoring.LatencyModel(0.03, 1e6)
    records = compare.compare([str(tmp_path / "a"), str(tmp_path / "b")])
    assert [r["scored"] for r in records] == ["here", "as given"]
    assert [r["pareto"] for r in records] == [True, True]  # a: fewer FLOPs, b: lower WER
    with pytest.raises(results_io.ResultsError, match=r"runs \['b'\] carry no outputs"):
        compare.compare([str(tmp_path)], latency=slower)
    again = compare.compare([str(tmp_path / "a")], latency=slower)[0]
    assert again["upl_mean_ms"] > records[0]["upl_mean_ms"]
    assert again["latency_model"] == dataclasses.asdict(slower)

    other = [dataclasses.replace(o, reference="something else") for o in _outputs()]
    _run_dir(tmp_path, "c", _record("c"), other)
    with pytest.raises(results_io.ResultsError, match="different data"):
        compare.compare([str(tmp_path / "a"), str(tmp_path / "c")])
    assert len(compare.compare([str(tmp_path / "a"), str(tmp_path / "c")],
                               allow_mixed_datasets=True)) == 2
    with pytest.raises(results_io.ResultsError, match="no such file"):
        compare.compare([str(tmp_path / "missing")])


def test_pareto_front():
    records = [{"wer_greedy": w, "mflops_per_frame": f}
               for w, f in ((0.2, 1.0), (0.1, 2.0), (0.3, 3.0), (0.1, 2.5), (0.2, 1.0))]
    assert compare.pareto_front(records) == {0, 1, 4}
