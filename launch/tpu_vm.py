r"""Run an experiment on a Cloud TPU VM slice: create, copy and install, run on every worker,
fetch the results, delete.

    python -m launch.tpu_vm --name=asr-v5e --zone=us-west4-a --accelerator_type=v5litepod-16 \
        --bucket=my-bucket --run=librispeech_baseline \
        --experiment="experiments.train --config=experiments/configs/baseline.py:librispeech \
                      --config.data.data_dir=gs://my-bucket/tensorflow_datasets" \
        [--spot | --queued] [--steps=create,copy,run,fetch,delete] --dry_run

Every worker mounts the bucket with gcsfuse at /mnt/<bucket> (checkpoints are written by all
processes into one shared directory, docs/training.md) and runs the experiment with
`--distributed --workdir=/mnt/<bucket>/runs/<run>` (`jax.distributed.initialize()` needs no
arguments on TPU). `--resume` is added when the run directory already holds a run, so the same
command continues after a preemption. `fetch` copies gs://<bucket>/runs/<run> to --fetch_to.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from absl import app, flags

from launch import commands as cmd

STEPS = ("create", "copy", "run", "fetch", "delete")


# TPU VM software versions per accelerator family (Cloud TPU docs, "TPU software versions").
RUNTIMES = {"v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
            "v4": "tpu-ubuntu2204-base", "v6e": "v2-alpha-tpuv6e"}


def runtime_for(accelerator_type: str) -> str:
    family = accelerator_type.rsplit("-", 1)[0]
    if family not in RUNTIMES:
        raise ValueError(f"no default runtime for {accelerator_type!r}; pass --runtime_version "
                         f"(known families: {sorted(RUNTIMES)})")
    return RUNTIMES[family]


def plan(*, name: str, zone: str, accelerator_type: str, bucket: str, run: str,
         experiment: str, runtime_version: str | None = None, project: str | None = None,
         spot: bool = False, queued: bool = False, steps: Sequence[str] = STEPS,
         source: str = ".", fetch_to: str = "runs") -> list[cmd.Command]:
    """The gcloud commands of the chosen steps."""
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; choose from {STEPS}")
    if bucket.startswith("gs://") or "/" in bucket:
        raise ValueError(f"--bucket is a bucket name like my-bucket, got {bucket!r}")
    runtime = runtime_version or runtime_for(accelerator_type)
    where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
    tpu = ["gcloud", "compute", "tpus"]
    mount = f"/mnt/{bucket}"
    workdir = f"{mount}/runs/{run}"
    out: list[cmd.Command] = []
    if "create" in steps:
        if queued:
            out.append([*tpu, "queued-resources", "create", f"{name}-qr", f"--node-id={name}",
                        f"--accelerator-type={accelerator_type}", f"--runtime-version={runtime}",
                        *where, *(["--spot"] if spot else [])])
            out.append(["bash", "-c", (
                f"until [ \"$(gcloud compute tpus queued-resources describe {name}-qr "
                f"{' '.join(where)} --format='value(state.state)')\" = ACTIVE ]; "
                "do sleep 30; done")])
        else:
            out.append([*tpu, "tpu-vm", "create", name, f"--accelerator-type={accelerator_type}",
                        f"--version={runtime}", *where, *(["--spot"] if spot else [])])
    ssh = [*tpu, "tpu-vm", "ssh", name, *where, "--worker=all"]
    if "copy" in steps:
        out.append(["bash", "-c", f"git -C {shlex.quote(source)} archive --format=tar.gz "
                                  f"--prefix=amnet/ -o /tmp/{name}-amnet.tar.gz HEAD"])
        out.append([*tpu, "tpu-vm", "scp", f"/tmp/{name}-amnet.tar.gz", f"{name}:~/",
                    *where, "--worker=all"])
        out.append([*ssh, "--command=" + cmd.remote([
            f"rm -rf amnet && tar xzf {name}-amnet.tar.gz",
            "python3 -m venv amnet/.venv",
            "amnet/.venv/bin/pip install -q -e 'amnet/.' 'jax[tpu]'",
            f"sudo mkdir -p {mount} && sudo chown $USER {mount}",
            f"(mountpoint -q {mount} || gcsfuse --implicit-dirs {bucket} {mount})"])])
    if "run" in steps:
        resume = f"$( [ -e {workdir}/config.json ] && echo --resume )"
        out.append([*ssh, "--command=" + cmd.remote([
            f"(mountpoint -q {mount} || gcsfuse --implicit-dirs {bucket} {mount})",
            f"cd amnet && .venv/bin/python -m {experiment} --distributed "
            f"--workdir={workdir} {resume}"])])
    if "fetch" in steps:
        out.append(["gcloud", "storage", "rsync", "--recursive", f"gs://{bucket}/runs/{run}",
                    f"{fetch_to}/{run}"])
    if "delete" in steps:
        if queued:
            out.append([*tpu, "queued-resources", "delete", f"{name}-qr", *where, "--force",
                        "--quiet"])
        else:
            out.append([*tpu, "tpu-vm", "delete", name, *where, "--quiet"])
    return out


def _define_flags() -> None:
    """The entry point's flags (defined only when run, so that the launchers can be imported
    together)."""
    flags.DEFINE_string("name", None, "TPU VM (node) name.", required=True)
    flags.DEFINE_string("zone", None, "e.g. us-west4-a (v5e), us-central2-b (v4).",
                        required=True)
    flags.DEFINE_string("accelerator_type", None, "e.g. v5litepod-16, v4-32.", required=True)
    flags.DEFINE_string("runtime_version", None, "Default: from the accelerator type.")
    flags.DEFINE_string("project", None, "GCP project (default: gcloud's).")
    flags.DEFINE_string("bucket", None, "GCS bucket for run directories (no gs://).",
                        required=True)
    flags.DEFINE_string("run", None, "Run name: gs://<bucket>/runs/<run>.", required=True)
    flags.DEFINE_string("experiment", None, "Module and flags after `python -m`.", required=True)
    flags.DEFINE_bool("spot", False, "Spot capacity (preemptible; the run resumes).")
    flags.DEFINE_bool("queued", False, "Ask through a queued resource (waits for capacity).")
    flags.DEFINE_list("steps", list(STEPS), f"Which steps, in order: {', '.join(STEPS)}.")
    flags.DEFINE_string("source", ".", "Project checkout to copy to the workers.")
    flags.DEFINE_string("fetch_to", "runs", "Local directory for fetched results.")
    flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    commands = cmd.from_flags(plan, (
        "name", "zone", "accelerator_type", "bucket", "run", "experiment", "runtime_version",
        "project", "spot", "queued", "steps", "source", "fetch_to"))
    cmd.execute(commands, dry_run=f.dry_run)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
