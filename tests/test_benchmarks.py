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
    results["train_step"]["jax"].update(model_flops=4e9, executed_flops=5e9, hlo_flops=5e9)
    results["peak"] = {"jax float32": {"n": 2048, "flops_per_s": 8e9},
                       "torch float32": {"n": 2048, "flops_per_s": 10e9},
                       "jax bfloat16": {"n": 2048, "flops_per_s": 2e9}}
    lib = {"step_s": 4.0, "utterances_per_s": 1.0, "compile_s": 1.0, "peak_rss_mib": 1.0}
    results["train_step_librispeech"] = {"jax": lib, "jax_pruned": {**lib, "step_s": 1.0}}
    table, targets = run.report(results)
    assert "| onnx_int8 | 0.100 | 0.0100 | 2.00x | 10 |" in table
    assert targets["train_step: JAX >= 1.5x the faster PyTorch"] == {"measured": 0.8,
                                                                    "met": False}
    # 4 GFLOP per 1 s step against the faster float32 GEMM (10 GFLOP/s): 40% of the peak.
    assert "| jax | 1000 | 32.0 | 1.0 | 1 | 1.00x | 4.0 | 4.0 | 40.0% |" in table
    assert "| jax bfloat16 | 2048 | 2.0 | 0.20x |" in table
    assert targets["train_step: JAX >= 50% of the f32 matmul peak (model FLOPs)"] == {
        "measured": 0.4, "met": False}
    assert targets["LibriSpeech step: pruned loss >= 3x faster than the fused"] == {
        "measured": 4.0, "met": True}
    assert "compiled HLO / counted (amnet.rnnt.flops, with the frontend and recomputation): jax " \
           "1.0000" in table
    assert targets["pipeline: >= 3x the train step"]["met"] is True
    assert "| torch_compile | failed: no compiler |" in table
