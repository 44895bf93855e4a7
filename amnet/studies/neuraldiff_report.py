"""Tables, targets and plots of the successive-update experiment (`neuraldiff_chains`).

Each result is one (chain, generation) step: update bytes and the greedy test WER of the
resulting model on every generation's test split so far (`wer['g<k>']`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from amnet.evaluation import metrics
from amnet.evaluation import results as results_io
from amnet.studies.neuraldiff_chains import earlier_outputs

LEARNED = ("sparse", "hashed")
POSTHOC = ("topk", "svd", "compressed", "zstd")
WITHIN = 0.01  # target: within 1.0 absolute WER of the full fine-tune chain
RECALL_SHARE = 0.9  # target: new-word recall >= 90% of the full chain's


def by_chain(results: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in sorted(results, key=lambda r: (r["chain"], r["generation"])):
        out[r["chain"]].append(r)
    return dict(out)


def new_wer(step: dict) -> float:
    """WER of a step's model on the test set of the generation it was trained for."""
    return step["wer"][f"g{step['generation']}"]


def final_gaps(steps: list[dict], full: list[dict]) -> list[float]:
    """WER of the chain's last model minus the full chain's, on each generation's test set."""
    ours, reference = steps[-1]["wer"], full[len(steps) - 1]["wer"]
    return [ours[k] - reference[k] for k in sorted(reference)]


def table(results: list[dict]) -> str:
    chains = by_chain(results)
    full = chains.get("full", [])
    generations = max(len(steps) for steps in chains.values())
    lines = ["| chain | update bytes (mean) | % of fp32 model | "
             + " | ".join(f"WER g{g} (new)" for g in range(1, generations + 1))
             + f" | g{generations} model: mean WER g0..g{generations} | max gap to full | "
               "distance to full |",
             "|---" * (generations + 6) + "|"]
    for name in _ordered(chains):
        steps = chains[name]
        last = steps[-1]["wer"]
        gap = max(final_gaps(steps, full)) if len(steps) == len(full) == generations \
            else float("nan")
        lines.append(
            f"| {name} | {np.mean([s['update_bytes'] for s in steps]):,.0f} | "
            f"{np.mean([s['update_percent'] for s in steps]):.2f} | "
            + " | ".join(f"{new_wer(s):.1%}" for s in steps)
            + " | " * (generations - len(steps))
            + f" | {np.mean(list(last.values())):.1%} | {gap:+.1%} | "
              f"{steps[-1].get('distance_to_full', 0.0):.2f} |")
    return "\n".join(lines)


def forgetting_table(results: list[dict]) -> str:
    """WER of each chain's last model on every generation's test set (old ones: forgetting)."""
    chains = by_chain(results)
    names = _ordered(chains)
    tests = sorted({k for steps in chains.values() for k in steps[-1]["wer"]},
                   key=lambda k: int(k[1:]))
    lines = ["| chain (last model) | " + " | ".join(f"{k} test" for k in tests) + " |",
             "|---" * (len(tests) + 1) + "|"]
    for name in names:
        wer = chains[name][-1]["wer"]
        lines.append(f"| {name} | " + " | ".join(f"{wer[k]:.1%}" if k in wer else ""
                                                 for k in tests) + " |")
    return "\n".join(lines)


def own_recall(step: dict) -> float:
    """Recall of the words a step's generation introduced, on that generation's test split."""
    return step["new_word_recall"][f"g{step['generation']}"]["recall"]


def pooled_recall(step: dict) -> float:
    """Recall of the new words of every generation so far by a step's model (pooled over
    the test splits g1..g<k>)."""
    found = step["new_word_recall"].values()
    return sum(r["recognized"] for r in found) / max(sum(r["occurrences"] for r in found), 1)


def recall_table(results: list[dict], base: dict) -> str:
    """New-word recall: of the test occurrences of the words generation k introduced, the
    share the model after update k recognizes (and the g0 model before any update), then the
    last model's recall of every generation's new words (does it keep them?)."""
    chains = by_chain(results)
    generations = max(len(steps) for steps in chains.values())
    columns = " | ".join(f"recall g{g} (update {g})" for g in range(1, generations + 1))
    lines = [f"| chain | {columns}"
             + f" | g{generations} model: recall of g1..g{generations} words |",
             "|---" * (generations + 2) + "|"]
    before = base["new_word_recall"]
    lines.append("| g0 model, no update | " + " | ".join(
        f"{before[f'g{g}']['recall']:.1%}" for g in range(1, generations + 1))
        + f" | {pooled_recall(base):.1%} |")
    for name in _ordered(chains):
        if name == "zstd":
            continue  # the full chain's models
        steps = chains[name]
        lines.append(f"| {name} | " + " | ".join(
            f"{own_recall(s):.1%}" for s in steps)
            + " | " * (generations - len(steps)) + f" | {pooled_recall(steps[-1]):.1%} |")
    occurrences = [before[f"g{g}"]["occurrences"] for g in range(1, generations + 1)]
    return "\n".join(lines) + ("\n\nNew-word occurrences per test split: "
                               + ", ".join(f"g{g} {n}" for g, n in enumerate(occurrences, 1)))


def transcripts(workdir: str | Path, chain: str, generation: int, test: int) -> list:
    """A chain step's transcripts of generation `test`'s test split."""
    step_dir = Path(workdir) / chain / f"g{generation}"
    name = results_io.OUTPUTS if test == generation else earlier_outputs(test)
    return sorted(results_io.read_outputs(step_dir / name), key=lambda o: o.id)


def gap_table(workdir: str | Path, results: list[dict], *, samples: int = 2000) -> str:
    """The last model of each chain minus the full chain's, WER on each test split, with a
    95% paired-bootstrap interval over the split's utterances: a gap whose interval holds 0
    is noise."""
    chains = by_chain(results)
    full = chains.get("full", [])
    last = len(full)
    lines = ["| chain (last model) - full | " + " | ".join(f"g{k} test" for k in range(last + 1))
             + " |", "|---" * (last + 2) + "|"]
    errors = {}
    for name in _ordered(chains):
        if name == "full" or chains[name][0]["method"] == "zstd" or len(chains[name]) != last:
            continue
        cells = []
        for k in range(last + 1):
            if ("full", k) not in errors:
                ref = transcripts(workdir, "full", last, k)
                errors["full", k] = metrics.utterance_errors(
                    [o.reference for o in ref], [o.greedy for o in ref])
            ours = transcripts(workdir, name, last, k)
            gap, low, high = metrics.paired_bootstrap(
                metrics.utterance_errors([o.reference for o in ours], [o.greedy for o in ours]),
                errors["full", k], samples=samples)
            cells.append(f"{gap:+.1%} [{low:+.1%}, {high:+.1%}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ordered(chains: dict[str, list[dict]]) -> list[str]:
    return sorted(chains, key=lambda c: (c != "full", chains[c][0]["method"],
                                         chains[c][0]["budget"] or 0))


def targets(results: list[dict]) -> list[str]:
    """The issue's targets, measured (met / missed, with the numbers)."""
    chains = by_chain(results)
    if "full" not in chains:
        return ["the targets compare with the full fine-tune chain, which was not run"]
    full = chains["full"]
    lines = []
    sparse = {c: s for c, s in chains.items() if s[0]["method"] == "sparse"
              and len(s) == len(full)}
    within = {c: max(final_gaps(s, full)) for c, s in sparse.items()}
    at_ten = [c for c, s in sparse.items() if s[0]["budget"] <= 0.10]
    if at_ten:
        best = min(at_ten, key=lambda c: within[c])
        lines.append(f"sparse diff <= 10% within 1.0 WER of full on every test set after "
                     f"{len(full)} updates: {'met' if within[best] <= WITHIN else 'missed'} "
                     f"({best}: max gap {within[best]:+.1%})")
    along = {c: max(new_wer(a) - new_wer(b) for a, b in zip(s, full, strict=True))
             for c, s in sparse.items()}
    lines.append("the same, reading it as each update's WER on its own generation's test set "
                 "against the full chain's at that generation: "
                 + ", ".join(f"{c} max gap {along[c]:+.1%} "
                             f"({'met' if along[c] <= WITHIN else 'missed'})"
                             for c in sorted(along, key=lambda c: sparse[c][0]["budget"])))
    if at_ten and pooled_recall(full[-1]) == 0:
        lines.append("new-word recall: the full chain recognizes none of the new words, so "
                     "there is no share of it to reach")
    elif at_ten:
        reference = pooled_recall(full[-1])
        ratios = {c: pooled_recall(sparse[c][-1]) / max(reference, 1e-9) for c in at_ten}
        best = max(at_ten, key=lambda c: ratios[c])
        lines.append(f"new-word recall of the g{len(full)} sparse model (<= 10%) >= 90% of the "
                     f"full chain's ({reference:.1%}): "
                     f"{'met' if ratios[best] >= RECALL_SHARE else 'missed'} "
                     + ", ".join(f"{c} {pooled_recall(sparse[c][-1]):.1%} ({ratios[c]:.0%})"
                                 for c in sorted(at_ten, key=lambda c: sparse[c][0]["budget"])))
    ok = [c for c in sparse if within[c] <= WITHIN]
    if ok:
        smallest = min(ok, key=lambda c: sparse[c][0]["budget"])
        percent = max(s["update_percent"] for s in sparse[smallest])
        lines.append(f"smallest sparse budget within 1.0 WER: {smallest}, updates <= "
                     f"{percent:.2f}% of the model ({100 - percent:.1f}% smaller): "
                     f"{'met' if percent <= 5 else 'missed'} (target >= 95% smaller)")
    else:
        lines.append("smallest sparse budget within 1.0 WER: none of the budgets tried: missed")
    mean_wer = {c: np.mean(list(s[-1]["wer"].values())) for c, s in chains.items()
                if len(s) == len(full)}
    for budget in sorted({s[0]["budget"] for s in chains.values() if s[0]["budget"]}):
        at = {s[0]["method"]: c for c, s in chains.items() if s[0]["budget"] == budget}
        for ours in LEARNED:
            if ours not in at or at[ours] not in mean_wer:
                continue
            beaten = [m for m in ("topk", "svd", "compressed")
                      if m in at and at[m] in mean_wer and mean_wer[at[ours]] < mean_wer[at[m]]]
            lost = [m for m in ("topk", "svd", "compressed")
                    if m in at and at[m] in mean_wer and m not in beaten]
            if not beaten and not lost:
                continue  # no baseline ran at this budget
            lines.append(f"{budget:.0%} budget: {ours} (mean WER {mean_wer[at[ours]]:.1%}) beats "
                         f"{', '.join(beaten) or 'none'}"
                         + (f"; not {', '.join(lost)}" if lost else ""))
    if "zstd" in chains:
        percents = [s["update_percent"] for s in chains["zstd"]]
        largest = 100 * max((s[0]["budget"] or 0) for s in chains.values())
        span = f"{min(percents):.1f}-{max(percents):.1f}%"
        lines.append(f"zstd --patch-from of the full chain: {span} of the model per update "
                     f"(lossless){', above every budget tried' if min(percents) > largest else ''}")
    return lines


def plots(results: list[dict], out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    chains = by_chain(results)
    budgets = sorted({s[0]["budget"] for s in chains.values() if s[0]["budget"]})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 4), squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=True):
        for name, steps in chains.items():
            if steps[0]["budget"] in (budget, None) and steps[0]["method"] != "zstd":
                ax.plot([s["generation"] for s in steps],
                        [100 * new_wer(s) for s in steps], marker="o",
                        label=name, linestyle="--" if steps[0]["method"] == "full" else "-")
        ax.set(title=f"budget {budget:.0%} of the model", xlabel="generation",
               ylabel="WER on the new generation's test set (%)")
        ax.legend(fontsize=7)
    by_generation = _save(fig, out_dir / "wer_vs_generation.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    methods = defaultdict(list)
    for steps in chains.values():
        methods[steps[0]["method"]].append(
            (np.mean([s["update_bytes"] for s in steps]),
             100 * np.mean([new_wer(s) for s in steps])))
    for method, points in sorted(methods.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set(xscale="log", xlabel="update bytes (mean over generations)",
           ylabel="mean WER on the new generation (%)")
    ax.legend(fontsize=8)
    return [by_generation, _save(fig, out_dir / "wer_vs_bytes.png")]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
