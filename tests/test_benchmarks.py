"""The benchmark runner's plumbing (`benchmarks/run.py`): a case runs in its own process and
reports, and targets are judged from the measured numbers (no timing is asserted)."""

from benchmarks import run


def test_a_case_runs_in_a_fresh_process_and_reports():
    result = run.run_case("diff", preset="tiny")
    assert "error" not in result, result
    assert result["package_mib"] <= 0.1 * result["model_mib"] + 0.01
    assert result["apply_s"] > 0 and result["parameters"] > 0
    assert "error" in run.run_case("diff", preset="no_such_preset")


def test_targets_follow_the_measurements():
    step = {"step_s": 1.0, "utterances_per_s": 32.0, "compile_s": 1.0, "peak_rss_mib": 1.0}
    results = {"machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "jax": "0", "torch": "0"},
               "quick": True, "date": "today",
               "train_step": {"jax": step, "torch_eager": {**step, "utterances_per_s": 40.0},
                              "torch_compile": {"error": "no compiler"}},
               "pipeline": {"corpus": "c", "grain": 500.0, "grain+features": 100.0,
                            "train_step_utterances_per_s": 32.0}}
    device = {"rtf": 0.01, "tokens_per_utterance": 3.0, "runtime_mib": 10.0}
    results["device"] = {"jax": {**device, "ms_per_frame": 0.2},
                         "onnx_int8": {**device, "ms_per_frame": 0.1}}
    table, targets = run.report(results)
    assert "| onnx_int8 | 0.100 | 0.0100 | 2.00x | 10 |" in table
    assert targets["train_step: JAX >= 1.0x the faster PyTorch"] == {"measured": 0.8,
                                                                    "met": False}
    assert targets["pipeline: >= 3x the train step"]["met"] is True
    assert "| torch_compile | failed: no compiler |" in table
