"""The paper's figures, as PNG files (matplotlib, no display needed).

- routing: the log-mel spectrogram of a test utterance with each frame colored by the branch
  the arbitrator chose, under the simulated backlog b_t (like the paper's demo);
- wer_vs_flops: test WER against MFLOPs per frame, one point per model;
- upl: the distribution of user-perceived latency over the test utterances, per model.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from amnet.amortized.latency import simulate

BRANCH_COLORS = ("tab:red", "tab:green", "tab:blue", "tab:purple")


def routing(path: Path, examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
            num_mels: int, frame_period_s: float, processor_flops: float,
            branch_names: list[str]) -> None:
    """examples: (title, features `[T, stack * num_mels]`, branches `[T]`, frame FLOPs `[T]`)."""
    fig, axes = plt.subplots(2 * len(examples), 1, figsize=(10, 3.2 * len(examples)),
                             gridspec_kw={"height_ratios": [3, 1] * len(examples)})
    for i, (title, features, branches, costs) in enumerate(examples):
        spec_ax, backlog_ax = axes[2 * i], axes[2 * i + 1]
        frames = features.shape[0]
        mels = features[:, :num_mels].T  # the first stacked 10 ms frame of each 30 ms frame
        spec_ax.imshow(mels, aspect="auto", origin="lower", cmap="Greys",
                       extent=(0, frames * frame_period_s, 0, num_mels))
        for k, name in enumerate(branch_names):
            chosen = np.flatnonzero(branches == k)
            spec_ax.scatter((chosen + 0.5) * frame_period_s, np.full(chosen.size, num_mels - 3),
                            s=8, marker="s", color=BRANCH_COLORS[k % 4], label=name)
        spec_ax.set_title(title, fontsize=9)
        spec_ax.set_ylabel("mel bin")
        spec_ax.legend(loc="lower right", fontsize=7, markerscale=1.5)
        result = simulate(costs, frame_period_s=frame_period_s, processor_flops=processor_flops)
        time = (np.arange(frames) + 1) * frame_period_s
        backlog_ax.plot(time, 1e3 * result.backlog_s, color="black")
        backlog_ax.set_xlim(0, frames * frame_period_s)
        backlog_ax.set_ylabel("backlog (ms)")
        backlog_ax.set_xlabel(f"time (s); UPL {1e3 * result.latency_s:.0f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def wer_vs_flops(path: Path, rows: list[dict]) -> None:
    """rows: dicts with `model`, `mflops_per_frame`, `wer_greedy`."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for row in rows:
        ax.scatter(row["mflops_per_frame"], 100 * row["wer_greedy"], marker="o")
        ax.annotate(row["model"], (row["mflops_per_frame"], 100 * row["wer_greedy"]),
                    fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("MFLOPs per 30 ms frame (counted, incl. decoder)")
    ax.set_ylabel("test WER, greedy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def upl(path: Path, latencies: dict[str, np.ndarray]) -> None:
    """latencies: model -> UPL per test utterance, seconds (log scale, ms)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = list(latencies)
    values = [np.maximum(1e3 * latencies[n], 1e-2) for n in names]
    ax.boxplot(values, whis=(0, 90), showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("user-perceived latency (ms), whiskers min..p90")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
