"""Launchers: the exact commands of Cloud TPU VM and SLURM launches (dry runs)."""

import subprocess
import sys

import pytest

from launch import commands, slurm, tpu_vm
from tests.helpers import HANG_GUARD_S, ROOT, cpu_env

EXPERIMENT = ("experiments.train --config=experiments/configs/baseline.py:librispeech "
              "--config.data.data_dir=gs://bk/tensorflow_datasets")


def test_v5e_spot_slice_commands_in_order():
    lines = [commands.render(c) for c in tpu_vm.plan(
        name="asr", zone="us-west4-a", accelerator_type="v5litepod-16", bucket="bk",
        run="ls100", experiment=EXPERIMENT, spot=True)]
    assert lines[0] == ("gcloud compute tpus tpu-vm create asr --accelerator-type=v5litepod-16 "
                        "--version=v2-alpha-tpuv5-lite --zone=us-west4-a --spot")
    assert "git -C . archive" in lines[1] and "tpu-vm scp /tmp/asr-amnet.tar.gz" in lines[2]
    assert "--worker=all" in lines[3] and "pip install -q -e" in lines[3] and \
        "gcsfuse --implicit-dirs bk /mnt/bk" in lines[3]
    run = lines[4]
    assert "--worker=all" in run and f"-m {EXPERIMENT} --distributed" in run
    assert "--workdir=/mnt/bk/runs/ls100" in run and \
        "[ -e /mnt/bk/runs/ls100/config.json ] && echo --resume" in run
    assert lines[5] == "gcloud storage rsync --recursive gs://bk/runs/ls100 runs/ls100"
    assert lines[6] == "gcloud compute tpus tpu-vm delete asr --zone=us-west4-a --quiet"


def test_v4_queued_resource_waits_and_deletes_the_queued_resource():
    lines = [commands.render(c) for c in tpu_vm.plan(
        name="asr4", zone="us-central2-b", accelerator_type="v4-32", bucket="bk", run="r",
        experiment=EXPERIMENT, queued=True, project="my-proj", steps=["create", "delete"])]
    assert lines[0] == ("gcloud compute tpus queued-resources create asr4-qr --node-id=asr4 "
                        "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base "
                        "--zone=us-central2-b --project=my-proj")
    assert "queued-resources describe asr4-qr" in lines[1] and "ACTIVE" in lines[1]
    assert lines[2] == ("gcloud compute tpus queued-resources delete asr4-qr "
                        "--zone=us-central2-b --project=my-proj --force --quiet")
    assert len(lines) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"bucket": "gs://bk"}, "bucket name like my-bucket"),
    ({"steps": ["create", "launch"]}, "unknown steps ['launch']"),
    ({"accelerator_type": "v9-8"}, "no default runtime for 'v9-8'"),
])
def test_tpu_launcher_names_bad_arguments(kwargs, message):
    args = {"name": "a", "zone": "z", "accelerator_type": "v4-8", "bucket": "bk", "run": "r",
            "experiment": EXPERIMENT, **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tpu_vm.plan(**args)


def test_slurm_two_nodes_of_eight_gpus():
    text = slurm.script(name="ls", nodes=2, gpus_per_node=8, cpus_per_node=32, time="12:00:00",
                        workdir="/shared/runs/ls", experiment=EXPERIMENT, partition="gpu")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --signal=TERM@120", "#SBATCH --requeue", "#SBATCH --partition=gpu",
                 "#SBATCH --time=12:00:00"):
        assert line in text.splitlines()
    assert "head -n 1):29500" in text and "--num_processes=$SLURM_NTASKS" in text
    assert "--process_id=$SLURM_PROCID --workdir=/shared/runs/ls $RESUME" in text
    with pytest.raises(ValueError, match="HH:MM:SS"):
        slurm.script(name="x", nodes=1, gpus_per_node=1, cpus_per_node=1, time="1 day",
                     workdir="/w", experiment=EXPERIMENT)


def test_dry_runs_through_the_entry_points_print_and_run_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "launch.tpu_vm", "--name=asr", "--zone=us-west4-a",
         "--accelerator_type=v5litepod-16", "--bucket=bk", "--run=r", f"--experiment={EXPERIMENT}",
         "--dry_run"], cwd=ROOT, env=cpu_env(), capture_output=True, text=True,
        timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 7
    out = subprocess.run(
        [sys.executable, "-m", "launch.slurm", "--name=ls", "--nodes=2",
         f"--workdir={tmp_path}/run", f"--experiment={EXPERIMENT}", "--dry_run"],
        cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(f"sbatch {tmp_path}/run.sbatch")
    assert not (tmp_path / "run.sbatch").exists()
