r"""Join result directories into one table and plots, every row scored by the same scorer.

    python -m experiments.compare --results=runs/sweeps/tiny_2x2,runs/elsewhere/metrics.json \
        --out=runs/sweeps/tiny_2x2/compare [--processor_mflops=100 --frame_period_ms=30]

`--results` takes run directories, sweep directories (every `*/metrics.json` below) and
metrics.json files in the shared schema (`amnet.evaluation.results`, docs/sweeps.md), from JAX runs,
PyTorch baselines or anything else. A run that kept its raw outputs (outputs.jsonl) is scored
again here by `amnet.evaluation.scoring` with one latency model for all rows (default: the first
run's),
so both frameworks are scored identically; a metrics.json alone is taken as given (column
`scored`: `as given`). Runs on different test sets (dataset fingerprints) are refused unless
`--allow_mixed_datasets`.

Writes `<out>/table.md`, `table.csv` and the plots `pareto.png` (WER vs MFLOPs/frame with the
Pareto front), `upl.png` (UPL mean/p90/max per run) and `update_bytes.png` (WER vs bytes
shipped, for runs that report update bytes).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from amnet.evaluation import results as results_io
from amnet.evaluation import scoring

COLUMNS = ("run", "framework", "scored", "dataset", "wer_greedy", "wer_beam", "mflops_per_frame",
           "frames_per_branch", "upl_mean_ms", "upl_p90_ms", "upl_max_ms", "update_bytes",
           "train_time_s", "hardware", "pareto")


def find_metrics(paths: Sequence[str]) -> list[Path]:
    """metrics.json files named by `paths` (files, run dirs, sweep dirs), in order."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif (path / results_io.METRICS).is_file():
            found.append(path / results_io.METRICS)
        elif path.is_dir():
            below = sorted(path.glob(f"*/{results_io.METRICS}"))
            if not below:
                raise results_io.ResultsError(f"{path}: no {results_io.METRICS} in it or in its "
                                              "subdirectories")
            found.extend(below)
        else:
            raise results_io.ResultsError(f"{path}: no such file or directory")
    return found


def load(path: Path, latency: scoring.LatencyModel | None) -> dict:
    """The record of one metrics.json, rescored from its outputs.jsonl when there is one."""
    record = results_io.read_metrics(path)
    outputs = path.parent / results_io.OUTPUTS
    if outputs.is_file() and record["model"] is not None:
        model = scoring.model_from_dict(record["model"])
        scored = scoring.score(results_io.read_outputs(outputs), model,
                               latency or scoring.LatencyModel(**record["latency_model"]))
        scored["dataset"] = {**record["dataset"], **scored["dataset"]}
        record = {**record, **scored, "scored": "here"}
    else:
        record = {**record, "scored": "as given"}
    record["source"] = str(path)
    return record


def pareto_front(records: list[dict]) -> set[int]:
    """Indices of the runs no other run beats in both WER (greedy) and MFLOPs/frame."""
    front = set()
    for i, a in enumerate(records):
        dominated = any(
            b["wer_greedy"] <= a["wer_greedy"] and b["mflops_per_frame"] <= a["mflops_per_frame"]
            and (b["wer_greedy"] < a["wer_greedy"] or b["mflops_per_frame"] < a["mflops_per_frame"])
            for j, b in enumerate(records) if j != i)
        if not dominated:
            front.add(i)
    return front


def compare(paths: Sequence[str], *, latency: scoring.LatencyModel | None = None,
            allow_mixed_datasets: bool = False) -> list[dict]:
    """The records of every run, scored alike, with `pareto` set."""
    files = find_metrics(paths)
    if not files:
        raise results_io.ResultsError("no results given")
    if latency is None:
        latency = scoring.LatencyModel(**results_io.read_metrics(files[0])["latency_model"])
    records = [load(f, latency) for f in files]
    fingerprints = {r["dataset"]["fingerprint"] for r in records}
    if len(fingerprints) > 1 and not allow_mixed_datasets:
        by = {}
        for r in records:
            by.setdefault(r["dataset"]["fingerprint"][:12], []).append(r["run"])
        raise results_io.ResultsError(f"runs were tested on different data (fingerprints: {by});"
                                      " pass --allow_mixed_datasets to tabulate them anyway")
    given = [r["run"] for r in records if r["scored"] == "as given"
             and scoring.LatencyModel(**r["latency_model"]) != latency]
    if given:
        raise results_io.ResultsError(
            f"runs {given} carry no outputs.jsonl and were scored with another latency model "
            f"than {latency}: their UPL is not comparable (pass the latency they used)")
    front = pareto_front(records)
    for i, r in enumerate(records):
        r["pareto"] = i in front
    return records


def _cells(r: dict) -> dict[str, str]:
    pct = lambda x: "" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    hw = r["hardware"]
    return {
        "run": r["run"], "framework": r["framework"], "scored": r["scored"],
        "dataset": f"{r['dataset'].get('name', '?')}:{r['dataset'].get('split', '?')} "
                   f"({r['dataset']['fingerprint'][:8]})",
        "wer_greedy": pct(r["wer_greedy"]), "wer_beam": pct(r["wer_beam"]),
        "mflops_per_frame": f"{r['mflops_per_frame']:.3f}",
        "frames_per_branch": " / ".join(f"{k.split(':', 1)[-1]} {100 * v:.0f}%"
                                        for k, v in r["frames_per_branch"].items()),
        "upl_mean_ms": f"{r['upl_mean_ms']:.1f}", "upl_p90_ms": f"{r['upl_p90_ms']:.1f}",
        "upl_max_ms": f"{r['upl_max_ms']:.1f}",
        "update_bytes": "" if r["update_bytes"] is None else str(r["update_bytes"]),
        "train_time_s": "" if r["train_time_s"] is None else f"{r['train_time_s']:.1f}",
        "hardware": f"{hw.get('framework', '?')} {hw.get('device_kind', '')} "
                    f"x{hw.get('devices', '?')}".strip(),
        "pareto": "yes" if r["pareto"] else "",
    }


def markdown(records: list[dict], latency: scoring.LatencyModel) -> str:
    lines = [f"Scored by amnet.evaluation.scoring; UPL at P = "
             f"{latency.processor_flops / 1e6:g} MFLOP/s, "
             f"Δ = {1e3 * latency.frame_period_s:g} ms; pareto: no other run has both lower "
             "WER (greedy) and fewer MFLOPs/frame.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        cells = _cells(r)
        lines.append("| " + " | ".join(cells[c] for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "source"])
    writer.writeheader()
    for r in records:
        row = {c: r[c] for c in COLUMNS if c not in ("dataset", "hardware", "frames_per_branch")}
        row.update({k: _cells(r)[k] for k in ("dataset", "hardware", "frames_per_branch")},
                   source=r["source"])
        writer.writerow(row)
    return out.getvalue()


def plots(records: list[dict], out: Path) -> list[Path]:
    written = []
    colors = {"jax": "tab:blue", "torch": "tab:orange"}

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in records:
        ax.scatter(r["mflops_per_frame"], 100 * r["wer_greedy"],
                   color=colors.get(r["framework"], "tab:gray"),
                   marker="o" if r["pareto"] else "x")
        ax.annotate(r["run"], (r["mflops_per_frame"], 100 * r["wer_greedy"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in records if r["pareto"]), key=lambda r: r["mflops_per_frame"])
    ax.step([r["mflops_per_frame"] for r in front], [100 * r["wer_greedy"] for r in front],
            where="post", color="black", linewidth=0.8, label="Pareto front")
    for name, color in colors.items():
        ax.scatter([], [], color=color, label=name)
    ax.set_xlabel("counted MFLOPs per frame")
    ax.set_ylabel("test WER, greedy (%)")
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "pareto.png"))

    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(records) + 2), 4))
    x = range(len(records))
    for key, marker in (("upl_mean_ms", "o"), ("upl_p90_ms", "s"), ("upl_max_ms", "^")):
        ax.scatter(x, [r[key] for r in records], marker=marker, label=key[4:-3])
    ax.set_xticks(list(x), [r["run"] for r in records], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("user-perceived latency (ms)")
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "upl.png"))

    shipped = [r for r in records if r["update_bytes"] is not None]
    if shipped:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in shipped:
            ax.scatter(r["update_bytes"], 100 * r["wer_greedy"],
                       color=colors.get(r["framework"], "tab:gray"))
            ax.annotate(r["run"], (r["update_bytes"], 100 * r["wer_greedy"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("update bytes shipped")
        ax.set_ylabel("test WER, greedy (%)")
        written.append(_save(fig, out / "update_bytes.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(records: list[dict], latency: scoring.LatencyModel, out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown(records, latency))
    (out / "table.csv").write_text(to_csv(records))
    return [out / "table.md", out / "table.csv", *plots(records, out)]
