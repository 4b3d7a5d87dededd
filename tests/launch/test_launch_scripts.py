"""launch/*.sh against fake gcloud, gsutil and ssh executables that log their argv (one JSON list per call)."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
JAX_PIN = re.search(r"^jax==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)

FAKE = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
  print(os.environ.get("FAKE_TPU_STATE", "ACTIVE"))
"""


@pytest.fixture
def sh(tmp_path):
  """sh(script, *args, env_file=None, **env) runs launch/script with the fakes first on PATH; returns (proc, calls)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("gcloud", "gsutil", "ssh"):
    (bin_dir / name).write_text(FAKE)
    (bin_dir / name).chmod(0o755)
  log = tmp_path / "calls.jsonl"
  empty_env = tmp_path / "empty_env.sh"
  empty_env.write_text("")

  def run(script, *args, env_file=None, **extra_env):
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "XMC_LAUNCH_ENV"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log), **extra_env)
    proc = subprocess.run([str(LAUNCH / script), f"--env={env_file or empty_env}", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls

  return run


def flag(call, name):
  """The value of --name=value in one logged call (None when absent)."""
  values = [a.split("=", 1)[1] for a in call if a.startswith(f"--{name}=")]
  return values[-1] if values else None


TPU = ("--tpu-name=xmc", "--zone=us-central2-b")


def test_create_tpu_queued_resource_spot_waits_until_active(sh):
  proc, calls = sh("create_tpu.sh", *TPU, "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base",
                   "--spot", "--poll-interval=0.01")
  assert proc.returncode == 0, proc.stderr
  create, describe = calls
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert create[5] == "xmc-qr" and flag(create, "node-id") == "xmc"
  assert flag(create, "accelerator-type") == "v4-32" and flag(create, "zone") == "us-central2-b"
  assert flag(create, "runtime-version") == "tpu-ubuntu2204-base"
  assert "--spot" in create and "--best-effort" not in create
  assert describe[:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "xmc-qr"]
  assert "ACTIVE" in proc.stderr


def test_create_tpu_best_effort_and_not_both(sh):
  args = (*TPU, "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite")
  proc, calls = sh("create_tpu.sh", *args, "--best-effort")
  assert proc.returncode == 0, proc.stderr
  assert "--best-effort" in calls[0] and "--spot" not in calls[0]
  assert flag(calls[0], "accelerator-type") == "v5litepod-16"
  proc, calls = sh("create_tpu.sh", *args, "--best-effort", "--spot")
  assert proc.returncode != 0 and "exclude each other" in proc.stderr and not calls


def test_create_tpu_gives_up_after_timeout(sh):
  start = time.monotonic()
  proc, calls = sh("create_tpu.sh", *TPU, "--accelerator-type=v4-8", "--runtime-version=tpu-ubuntu2204-base",
                   "--timeout=1", "--poll-interval=0.05", FAKE_TPU_STATE="WAITING_FOR_RESOURCES")
  assert time.monotonic() - start < 15
  assert proc.returncode != 0
  assert "gave up after 1 s" in proc.stderr and "WAITING_FOR_RESOURCES" in proc.stderr
  assert sum("describe" in c for c in calls) >= 2


def test_create_tpu_stops_on_failed_state(sh):
  proc, calls = sh("create_tpu.sh", *TPU, "--accelerator-type=v4-8", "--runtime-version=tpu-ubuntu2204-base",
                   "--poll-interval=0.01", FAKE_TPU_STATE="FAILED")
  assert proc.returncode != 0 and "is FAILED" in proc.stderr
  assert sum("describe" in c for c in calls) == 1


def test_setup_workers_installs_pinned_jax_tpu_commit_bert_and_data_dir(sh):
  proc, calls = sh("setup_workers.sh", *TPU, "--repo=https://example.com/xmc.git", "--commit=abc123",
                   "--data-dir=gs://bucket/tfds")
  assert proc.returncode == 0, proc.stderr
  (call,) = calls
  assert call[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and call[5] == "xmc"
  assert flag(call, "worker") == "all" and flag(call, "zone") == "us-central2-b"
  script = flag(call, "command")
  assert f'"jax[tpu]=={JAX_PIN}"' in script
  assert "git clone -q https://example.com/xmc.git xmc_gan_jax" in script
  assert "git checkout -q --force --detach abc123" in script
  assert "-r requirements.txt -c constraints.txt" in script and "--no-deps -r requirements-nodeps.txt" in script
  assert "download bert-base-uncased" in script and "--local-dir bert-base-uncased" in script
  assert "TFDS_DATA_DIR=gs://bucket/tfds" in script


def test_setup_workers_defaults_to_local_head_and_copies_bert_from_gcs(sh):
  head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                        check=True).stdout.strip()
  proc, calls = sh("setup_workers.sh", *TPU, "--repo=https://example.com/xmc.git", "--bert-gcs=gs://bucket/bert")
  assert proc.returncode == 0, proc.stderr
  script = flag(calls[0], "command")
  assert f"--detach {head}" in script
  assert "gsutil -m -q rsync -r gs://bucket/bert bert-base-uncased" in script and "download" not in script


def test_train_kills_old_run_then_starts_detached_multihost_tpu(sh):
  proc, calls = sh("train.sh", *TPU, "--config=configs/coco.py:res=256,pod=v4-32", "--workdir=gs://bucket/run256",
                   "--", "--config.total_steps=7")
  assert proc.returncode == 0, proc.stderr
  (call,) = calls
  assert call[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and flag(call, "worker") == "all"
  script = flag(call, "command")
  launch = next(line for line in script.splitlines() if "-m xmc_gan_jax.main" in line and "setsid" in line)
  assert launch.startswith("setsid nohup .venv/bin/python -m xmc_gan_jax.main ")
  args = launch.split()
  for expected in ("--config=configs/coco.py:res=256,pod=v4-32", "--workdir=gs://bucket/run256", "--multihost",
                   "--expect_platform=tpu", "--config.total_steps=7"):
    assert expected in args
  assert '>"$log" 2>&1 </dev/null &' in launch and "log=$log_dir/train.log" in script
  assert script.index("pkill ") < script.index(launch)


def test_train_remote_script_stops_the_previous_run_and_not_itself(sh, tmp_path):
  """Runs the remote script train.sh sends, here, as sshd would (bash -c), twice: the second run sends SIGTERM to
  the first trainer, keeps its log, and starts a new one. The module name is swapped for a unique fake one so that
  no real xmc_gan_jax.main of this user is touched."""
  proc, calls = sh("train.sh", *TPU, "--workdir=gs://bucket/run", "--stop-timeout=20")
  assert proc.returncode == 0, proc.stderr
  module = f"xmcfake{os.getpid()}"
  script = flag(calls[0], "command").replace("xmc_gan_jax[.]main", f"{module}[.]main")
  script = script.replace("xmc_gan_jax.main", f"{module}.main").replace("/tmp/libtpu_lockfile", "lockfile")
  home = tmp_path / "home"
  checkout = home / "xmc_gan_jax"
  (checkout / module).mkdir(parents=True)
  (checkout / ".venv" / "bin").mkdir(parents=True)
  os.symlink(sys.executable, checkout / ".venv" / "bin" / "python")
  (checkout / module / "__init__.py").write_text("")
  (checkout / module / "main.py").write_text(
      "import signal, sys, time\n"
      "def stop(*_):\n  print('SIGTERM: saved', flush=True); sys.exit(0)\n"
      "signal.signal(signal.SIGTERM, stop)\nprint('training', flush=True)\ntime.sleep(60)\n")
  env = {**os.environ, "HOME": str(home)}
  log_dir = home / "xmc_logs"
  pattern = f"-m {module}.main"
  try:
    for _ in range(2):
      out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)
      assert out.returncode == 0, out.stderr
      assert "started pid" in out.stdout
      deadline = time.monotonic() + 10
      while "training" not in (log_dir / "train.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stopping the previous" in out.stdout
    old_logs = [p for p in log_dir.iterdir() if p.name != "train.log"]
    assert len(old_logs) == 1 and "SIGTERM: saved" in old_logs[0].read_text()
    running = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True, check=False).stdout.split()
    assert len(running) == 1
  finally:
    for pid in subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True,
                              check=False).stdout.split():
      os.kill(int(pid), 15)


DRY_RUNS = [
    ("create_tpu.sh", (*TPU, "--accelerator-type=v4-8", "--runtime-version=tpu-ubuntu2204-base", "--spot")),
    ("setup_workers.sh", (*TPU, "--repo=https://example.com/xmc.git")),
    ("prepare_data.sh", (*TPU, "--dataset=coco", "--data-dir=gs://bucket/tfds")),
    ("train.sh", (*TPU, "--workdir=gs://bucket/run")),
    ("eval.sh", ("--tpu-name=xmc-eval", "--zone=us-central2-b", "--workdir=gs://bucket/run")),
    ("tensorboard.sh", (*TPU, "--workdir=gs://bucket/run")),
    ("logs.sh", TPU),
    ("delete_tpu.sh", TPU),
    ("gpu_create.sh", ("--vm=gpu", "--zone=us-central1-a")),
    ("gpu_train.sh", ("--hosts=h1,h2", "--workdir=gs://bucket/run")),
]


@pytest.mark.parametrize("script,args", DRY_RUNS, ids=[s for s, _ in DRY_RUNS])
def test_dry_run_prints_commands_and_runs_none(sh, script, args):
  proc, calls = sh(script, *args)
  assert proc.returncode == 0, proc.stderr
  assert calls, "without --dry-run the script calls gcloud/ssh"
  proc, calls = sh(script, *args, "--dry-run")
  assert proc.returncode == 0, proc.stderr
  assert calls == []
  assert re.search(r"^(gcloud|ssh) ", proc.stdout, re.M), proc.stdout


def test_dry_run_output_is_the_command_that_would_run(sh):
  args = (*TPU, "--workdir=gs://bucket/run", "--", "--config.note=it's a b")
  _, calls = sh("train.sh", *args)
  proc, _ = sh("train.sh", "--dry-run", *args)
  words = subprocess.run(["bash", "-c", f"printf '%s\\0' {proc.stdout}"], capture_output=True, text=True,
                         check=True).stdout.split("\0")[:-1]
  assert words == calls[0]


@pytest.mark.parametrize("script,args,missing", [
    ("train.sh", TPU, "WORKDIR"),
    ("train.sh", ("--zone=z", "--workdir=gs://b/r"), "TPU_NAME"),
    ("create_tpu.sh", (*TPU, "--runtime-version=tpu-ubuntu2204-base"), "ACCELERATOR_TYPE"),
    ("prepare_data.sh", (*TPU, "--dataset=ln_coco", "--data-dir=gs://b/tfds"), "MANUAL_DIR"),
    ("gpu_create.sh", ("--vm=gpu",), "ZONE"),
])
def test_missing_setting_fails_clearly(sh, script, args, missing):
  proc, calls = sh(script, *args)
  assert proc.returncode != 0
  assert f"missing setting {missing}" in proc.stderr and "env.example" in proc.stderr
  assert calls == []


def test_bad_input_fails_clearly(sh):
  proc, calls = sh("train.sh", *TPU, "--workdir=/local/dir")
  assert proc.returncode != 0 and "must be a gs:// path" in proc.stderr and not calls
  proc, calls = sh("train.sh", *TPU, "--workdir=gs://b/r", "--bogus=1")
  assert proc.returncode != 0 and "unknown flag --bogus" in proc.stderr and not calls
  proc, calls = sh("train.sh", *TPU, "--workdir=gs://b/r", "--config.total_steps=7")
  assert proc.returncode != 0 and "unknown flag --config.total_steps" in proc.stderr and not calls
  proc, calls = sh("train.sh", *TPU, "--workdir=gs://b/r", "stray")
  assert proc.returncode != 0 and "unexpected argument 'stray'" in proc.stderr and not calls


def test_flags_override_the_env_file(sh, tmp_path):
  env_file = tmp_path / "env.sh"
  env_file.write_text('TPU_NAME=from-env\nZONE=europe-west4-a\nWORKDIR=gs://bucket/env-run\n'
                      'CONFIG="configs/coco.py:res=256"\n')
  proc, calls = sh("train.sh", "--zone=us-central2-b", env_file=env_file)
  assert proc.returncode == 0, proc.stderr
  assert calls[0][5] == "from-env" and flag(calls[0], "zone") == "us-central2-b"
  script = flag(calls[0], "command")
  assert "--workdir=gs://bucket/env-run" in script and "--config=configs/coco.py:res=256 " in script


def test_eval_runs_the_follower_on_worker_0_of_the_eval_tpu(sh):
  proc, calls = sh("eval.sh", "--tpu-name=xmc-eval", "--zone=z", "--workdir=gs://bucket/run",
                   "--config=configs/coco.py:res=256")
  assert proc.returncode == 0, proc.stderr
  (call,) = calls
  assert call[5] == "xmc-eval" and flag(call, "worker") == "0"
  script = flag(call, "command")
  assert ("setsid nohup .venv/bin/python -m xmc_gan_jax.main --config=configs/coco.py:res=256 "
          "--workdir=gs://bucket/run --mode=eval --expect_platform=tpu") in script
  assert "--multihost" not in script and "log=$log_dir/eval.log" in script


def test_prepare_data_builds_on_worker_0(sh):
  proc, calls = sh("prepare_data.sh", *TPU, "--dataset=coco", "--data-dir=gs://bucket/tfds")
  assert proc.returncode == 0, proc.stderr
  assert flag(calls[0], "worker") == "0"
  assert ".venv/bin/tfds build coco_captions/2014 --data_dir=gs://bucket/tfds" in flag(calls[0], "command")
  proc, calls = sh("prepare_data.sh", *TPU, "--dataset=ln_openimages", "--data-dir=gs://bucket/tfds",
                   "--manual-dir=gs://bucket/ln")
  assert proc.returncode == 0, proc.stderr
  assert ("-m xmc_gan_jax.data.localized_narratives --config=open_images --manual_dir=gs://bucket/ln "
          "--data_dir=gs://bucket/tfds") in flag(calls[0], "command")


def test_tensorboard_and_logs_and_delete(sh):
  proc, calls = sh("tensorboard.sh", *TPU, "--workdir=gs://bucket/run")
  assert proc.returncode == 0, proc.stderr
  start, tunnel = calls
  assert flag(start, "worker") == "0" and "tensorboard --logdir=gs://bucket/run --port=6006" in flag(start, "command")
  assert flag(tunnel, "worker") == "0" and tunnel[-4:] == ["--", "-N", "-L", "6006:localhost:6006"]
  proc, calls = sh("logs.sh", *TPU, "--follow")
  assert proc.returncode == 0 and flag(calls[0], "worker") == "all"
  assert 'tail -n 100 -F "$log"' in flag(calls[0], "command")
  proc, calls = sh("logs.sh", *TPU, "--worker=2", "--log=eval")
  assert flag(calls[0], "worker") == "2" and "xmc_logs/eval.log" in flag(calls[0], "command")
  proc, calls = sh("delete_tpu.sh", *TPU)
  assert proc.returncode == 0, proc.stderr
  assert calls == [["gcloud", "compute", "tpus", "queued-resources", "delete", "xmc-qr", "--zone=us-central2-b",
                    "--force", "--quiet"]]


def test_gpu_create_asks_for_eight_h100(sh):
  proc, calls = sh("gpu_create.sh", "--vm=xmc-gpu", "--zone=us-central1-a")
  assert proc.returncode == 0, proc.stderr
  (call,) = calls
  assert call[:5] == ["gcloud", "compute", "instances", "create", "xmc-gpu"]
  assert flag(call, "accelerator") == "type=nvidia-h100-80gb,count=8"
  assert flag(call, "machine-type") == "a3-highgpu-8g" and flag(call, "maintenance-policy") == "TERMINATE"


def test_gpu_train_one_vm_is_plain_training(sh):
  proc, calls = sh("gpu_train.sh", "--vm=xmc-gpu", "--zone=us-central1-a", "--workdir=gs://bucket/run")
  assert proc.returncode == 0, proc.stderr
  (call,) = calls
  assert call[:4] == ["gcloud", "compute", "ssh", "xmc-gpu"]
  script = flag(call, "command")
  assert "--expect_platform=gpu" in script and "--multihost" not in script and "--coordinator_address" not in script


def test_gpu_train_several_nodes_get_coordinator_and_process_ids(sh):
  proc, calls = sh("gpu_train.sh", "--hosts=me@node-a,node-b,node-c", "--port=9999", "--workdir=gs://bucket/run")
  assert proc.returncode == 0, proc.stderr
  assert [c[:4] for c in calls] == [["ssh", "-o", "BatchMode=yes", h] for h in ("me@node-a", "node-b", "node-c")]
  for i, call in enumerate(calls):
    launch = next(line for line in call[4].splitlines() if line.startswith("setsid nohup"))
    args = launch.split()
    for expected in ("--multihost", "--coordinator_address=node-a:9999", "--num_processes=3", f"--process_id={i}",
                     "--expect_platform=gpu", "--workdir=gs://bucket/run"):
      assert expected in args, (expected, launch)


def test_shellcheck_finds_nothing():
  shellcheck = shutil.which("shellcheck")
  assert shellcheck, "shellcheck is not installed: `make shellcheck` installs it (apt-get install -y shellcheck)"
  files = sorted(str(p.relative_to(REPO)) for p in LAUNCH.glob("*.sh")) + ["launch/env.example"]
  assert len(files) >= 12
  out = subprocess.run([shellcheck, "-x", *files], cwd=REPO, capture_output=True, text=True, timeout=60,
                       check=False)
  assert out.returncode == 0, out.stdout + out.stderr
