"""Two processes on localhost, as `--multihost` runs on a pod: `python -m xmc_gan_jax.main --multihost
--coordinator_address=127.0.0.1:PORT --num_processes=2 --process_id=I`, each process with 2 fake CPU devices.

(a) Two processes train to step 2, stop, resume to step 4 (with periodic FID/KID at step 4): the final parameters
    equal a one-process run on 4 devices to 1e-5 (random data gives the same global batches on any process count;
    only conv biases that a BatchNorm cancels differ, by Adam-amplified rounding noise, see BN_CANCELLED); two
    processes scoring the one-process checkpoints (--mode=eval) give its periodic FID/KID to 1e-4; only process 0
    writes TensorBoard events.
(b) SIGTERM to process 1 only: both processes stop after the same step (stop_decision), save one checkpoint and
    exit 0.
(c) A time budget on process 0's clock only (process 1 is given none): both stop after the same step, save one
    checkpoint and exit 0.

Every wait has a timeout that kills both processes, and every launch is killed in a `finally`; a failure shows
the last 40 log lines of each process. Timings on 2 shared CPU cores: (a) ~500 s, (b) ~160 s, (c) ~120 s.
"""
import csv
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # fresh processes that import JAX and TensorFlow, compile and run collectives

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH_TIMEOUT_S = 900   # one launch: start, compile, 2-4 steps, evaluation with the real Inception, on 2 CPU cores
TAIL_LINES = 40

# A tiny BERT folder: vocabulary above random_source's first word-piece id (1000), positions >= max_length.
BERT = dict(vocab_size=1100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
            max_position_embeddings=16, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
            model_type="bert", pad_token_id=0)


# ------------------------------------------------------------------------------------------------ launching


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def tiny_bert_folder(path) -> str:
  from tests.models import test_text_encoder  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=protected-access
  return test_text_encoder._write_folder(path, BERT, test_text_encoder._tiny_tensors(BERT))


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # no persistent cache: under --multihost main.py then uses none
  return env


class Launch:
  """Processes of one launch (each with its log file); `wait` kills all of them on a timeout."""

  def __init__(self, procs: list[subprocess.Popen], logs: list[str]):
    self.procs, self.logs = procs, logs

  def tails(self) -> str:
    out = []
    for i, path in enumerate(self.logs):
      try:
        with open(path, encoding="utf-8", errors="replace") as f:
          lines = f.read().splitlines()[-TAIL_LINES:]
      except OSError as e:
        lines = [f"(no log: {e})"]
      rc = self.procs[i].poll()
      out.append(f"----- process {i} (rc={rc}) {path}, last {TAIL_LINES} lines:\n" + "\n".join(lines))
    return "\n".join(out)

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.kill()
    for p in self.procs:
      try:
        p.wait(timeout=30)
      except subprocess.TimeoutExpired:
        pass

  def wait(self, timeout: float) -> list[int]:
    """Return codes once every process has exited; AssertionError (both killed) after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      codes = [p.poll() for p in self.procs]
      if all(c is not None for c in codes):
        return codes
      if any(c not in (None, 0) for c in codes):  # one failed: give the other a moment to fail too, then stop
        grace = time.time() + 60
        while time.time() < grace and any(p.poll() is None for p in self.procs):
          time.sleep(0.5)
        codes = [p.poll() for p in self.procs]
        self.kill()
        return codes
      time.sleep(0.5)
    self.kill()
    raise AssertionError(f"Timed out after {timeout:.0f} s; both processes killed.\n{self.tails()}")

  def wait_ok(self, timeout: float = LAUNCH_TIMEOUT_S) -> None:
    codes = self.wait(timeout)
    assert codes == [0] * len(codes), f"Return codes {codes}.\n{self.tails()}"

  def log(self, i: int) -> str:
    with open(self.logs[i], encoding="utf-8", errors="replace") as f:
      return f.read()


def launch(workdir, flags: list[str], *, num_processes: int, devices_per_process: int, log_dir, tag: str,
           process_flags: list[list[str]] | None = None) -> Launch:
  """Starts `python -m xmc_gan_jax.main --config=configs/test.py --workdir=WORKDIR FLAGS` as `num_processes`
  processes (with --multihost and a fresh localhost coordinator port when > 1); process i also gets
  `process_flags[i]`."""
  port = free_port()
  procs, logs = [], []
  os.makedirs(log_dir, exist_ok=True)
  for i in range(num_processes):
    cmd = [sys.executable, "-m", "xmc_gan_jax.main", "--config=configs/test.py", f"--workdir={workdir}", *flags,
           *(process_flags[i] if process_flags else [])]
    if num_processes > 1:
      cmd += ["--multihost", f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
              f"--process_id={i}"]
    path = os.path.join(str(log_dir), f"{tag}.p{i}.log")
    with open(path, "w", encoding="utf-8") as log:
      log.write(" ".join(cmd) + "\n")
      log.flush()
      procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(devices_per_process), stdout=log,
                                    stderr=subprocess.STDOUT))  # callers kill them in a finally
    logs.append(path)
  return Launch(procs, logs)


# ------------------------------------------------------------------------------------------------ reading runs


def final_params(workdir, bert) -> tuple[int, dict[str, np.ndarray]]:
  """(latest step, {path: array} of g_params, d_params, ema_params and g_batch_stats) of WORKDIR, restored
  read-only on a one-device mesh of this process."""
  import jax  # pylint: disable=import-outside-toplevel
  from configs import test as test_config  # pylint: disable=import-outside-toplevel
  from xmc_gan_jax import checkpointing, runtime, sharding  # pylint: disable=import-outside-toplevel
  config = test_config.get_config()
  config.text_encoder.path = str(bert)
  restorer = runtime.Runtime(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]))
  checkpointer = checkpointing.Checkpointer(str(workdir), read_only=True)
  try:
    step = checkpointer.latest_step()
    state = restorer.restore(checkpointer, step)
  finally:
    checkpointer.close()
  flat = {}
  for key in ("g_params", "d_params", "ema_params", "g_batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(getattr(state, key))[0]:
      flat[key + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return step, flat


def csv_scores(path) -> dict[int, dict[str, float]]:
  """{step: {metric: value}} of a scores.csv written by `--mode=eval`."""
  with open(path, encoding="utf-8") as f:
    return {int(float(row["step"])): {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)}


def event_scalars(workdir, prefix: str = "eval/") -> dict[tuple[str, int], float]:
  """{(tag, step): value} of the TensorBoard scalars under `prefix` in WORKDIR's event files."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel
  from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel
  acc = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0, "scalars": 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags().get("tensors", []):
    if tag.startswith(prefix):
      for event in acc.Tensors(tag):
        value = tensor_util.make_ndarray(event.tensor_proto)
        if value.size == 1 and value.dtype.kind in "fiu":  # scalars (texts and images are tensors too)
          out[(tag, event.step)] = float(value.reshape(()))
  for tag in acc.Tags().get("scalars", []):
    if tag.startswith(prefix):
      for event in acc.Scalars(tag):
        out[(tag, event.step)] = float(event.value)
  return out


def event_file_pids(workdir) -> list[int]:
  """The writer pid in each events.out.tfevents.<time>.<host>.<pid>.<n> file name of WORKDIR."""
  pids = []
  for path in glob.glob(os.path.join(str(workdir), "events.out.tfevents.*")):
    match = re.match(r"events\.out\.tfevents\.\d+\.(.+)\.(\d+)\.\d+(\.v2)?$", os.path.basename(path))
    assert match, f"unexpected event file name {path}"
    pids.append(int(match.group(2)))
  return pids


# ------------------------------------------------------------------------------------------------ tests


def _flags(bert, stats_dir, **overrides) -> list[str]:
  # 12 eval images in batches of 8: the 4 rows beyond N of the second batch must be dropped in global row order.
  values = {"text_encoder.path": bert, "total_steps": 4, "checkpoint_every_steps": 2, "eval.every_steps": 4,
            "eval.num_images": 12, "eval.batch_size": 8, "eval.stats_dir": str(stats_dir), **overrides}
  return [f"--config.{k}={v}" for k, v in values.items()]


# Conv biases that a BatchNorm follows get a gradient that is rounding noise (the norm cancels them); Adam turns
# that noise into steps of about +-g_lr whose sign depends on the reduction order, which differs between a
# cross-process and an in-process all-reduce. They (and the BN running means, which track them) are compared to
# Adam's bound, everything else to 1e-5.
BN_CANCELLED = re.compile(r"^g_(params|batch_stats).*(\['(conv\d|shortcut)'\]\['bias'\]|\['bn'\]\['mean'\])$")
G_LR, STEPS = 1e-4, 4


def _assert_same_params(two: dict[str, np.ndarray], one: dict[str, np.ndarray]) -> None:
  assert two.keys() == one.keys()
  loose = [k for k in two if BN_CANCELLED.match(k)]
  assert loose and len(loose) < len(two) // 4, loose  # the pattern names some leaves, not the networks
  for key in two:
    atol = 2.0 * G_LR * STEPS if key in loose else 1e-5
    np.testing.assert_allclose(two[key], one[key], rtol=0, atol=atol, err_msg=key)


def test_two_processes_resume_match_one_process(tmp_path):
  bert = tiny_bert_folder(tmp_path / "bert")
  logs = tmp_path / "logs"
  two, one = tmp_path / "two", tmp_path / "one"
  started = time.time()

  def run(what, workdir, flags, processes, devices, tag):
    job = launch(workdir, flags, num_processes=processes, devices_per_process=devices, log_dir=logs, tag=tag)
    try:
      job.wait_ok()
    finally:
      job.kill()
    print(f"{what}: done after {time.time() - started:.0f} s")
    return job

  # Two processes to step 2 (no evaluation: the one at the last step would cost an Inception compile), then on.
  first = run("two processes to step 2", two,
              _flags(bert, tmp_path / "stats_two", total_steps=2, **{"eval.every_steps": 0}), 2, 2, "two_first")
  assert sorted(os.listdir(two / "checkpoints")) == ["2"], first.tails()
  second = run("two processes resumed to step 4, evaluated", two, _flags(bert, tmp_path / "stats_two"), 2, 2,
               "two_second")
  for i in range(2):
    assert "Resuming from checkpoint at step 2" in second.log(i), second.tails()
  # The same config on one process with the 4 devices of the two.
  run("one process to step 4, evaluated", one, _flags(bert, tmp_path / "stats_one"), 1, 4, "one")
  # Two processes score the one-process run's checkpoints (--mode=eval, real statistics computed afresh).
  follow = run("two processes score the one-process checkpoints", one,
               ["--mode=eval", *_flags(bert, tmp_path / "stats_follow")], 2, 2, "follow")

  step_two, params_two = final_params(two, bert)
  step_one, params_one = final_params(one, bert)
  assert step_two == step_one == STEPS
  _assert_same_params(params_two, params_one)

  # Evaluation on two processes = on one, for the same state (gathered features in global order, global noise).
  scores_one, scores_two = event_scalars(one), event_scalars(two)
  followed = csv_scores(one / "scores.csv")
  assert STEPS in followed, (followed, follow.tails())
  for name in ("fid", "ema_fid", "kid", "ema_kid"):
    assert followed[STEPS][name] == pytest.approx(scores_one[(f"eval/{name}", STEPS)], rel=1e-4), name
    # The two trainings differ only by the BN-cancelled noise above: same scores to a few 1e-4.
    assert scores_two[(f"eval/{name}", STEPS)] == pytest.approx(scores_one[(f"eval/{name}", STEPS)], rel=3e-3), name
  assert followed[STEPS]["num_images"] == 12

  # Process 0 wrote every event file of the training (one per launch); process 1 only logged.
  pids = event_file_pids(two)
  assert sorted(pids) == sorted([first.procs[0].pid, second.procs[0].pid]), (
      pids, [p.pid for p in first.procs], [p.pid for p in second.procs])
  assert os.path.isfile(two / "TRAIN_DONE")


def test_sigterm_to_one_process_stops_both_at_one_step(tmp_path):
  bert = tiny_bert_folder(tmp_path / "bert")
  workdir = tmp_path / "run"
  run = launch(workdir, _flags(bert, tmp_path / "stats", total_steps=1000, checkpoint_every_steps=1000,
                               log_every_steps=1, **{"eval.every_steps": 0}),
               num_processes=2, devices_per_process=2, log_dir=tmp_path / "logs", tag="sigterm")
  try:
    deadline = time.time() + LAUNCH_TIMEOUT_S
    step_logged = re.compile(r"\btrain/\w+|steps_per_sec|\[\d+\] ")  # a logged training step (clu logging writer)
    while True:
      logs = [run.log(i) for i in range(2)]
      if all(step_logged.search(text) for text in logs):
        break
      codes = [p.poll() for p in run.procs]
      assert all(c is None for c in codes), f"A process ended before training: {codes}.\n{run.tails()}"
      assert time.time() < deadline, f"No training step logged in {LAUNCH_TIMEOUT_S} s.\n{run.tails()}"
      time.sleep(1.0)
    run.procs[1].send_signal(signal.SIGTERM)
    codes = run.wait(300)
    assert codes == [0, 0], f"Return codes {codes} after SIGTERM to process 1.\n{run.tails()}"
  finally:
    run.kill()
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert len(steps) == 1 and 1 <= steps[0] < 1000, f"checkpoints {steps}\n{run.tails()}"
  # Both processes say they stopped after that step.
  said = re.compile(rf"(?i)(sigterm|preempt|stop).*\bstep {steps[0]}\b|\bstep {steps[0]}\b.*(sigterm|preempt|stop)")
  for i in range(2):
    assert said.search(run.log(i)), f"process {i} does not say it stopped at step {steps[0]}.\n{run.tails()}"
  assert not os.path.exists(workdir / "TRAIN_DONE"), run.tails()


def test_time_budget_on_process_0_stops_both_at_one_step(tmp_path):
  bert = tiny_bert_folder(tmp_path / "bert")
  workdir = tmp_path / "run"
  # Only process 0 has a budget: process 1 would train all 1000 steps if it decided alone.
  run = launch(workdir, _flags(bert, tmp_path / "stats", total_steps=1000, checkpoint_every_steps=1000,
                               log_every_steps=1, **{"eval.every_steps": 0}),
               num_processes=2, devices_per_process=2, log_dir=tmp_path / "logs", tag="budget",
               process_flags=[["--config.max_train_seconds=20"], ["--config.max_train_seconds=0"]])
  try:
    codes = run.wait(LAUNCH_TIMEOUT_S)
  finally:
    run.kill()
  assert codes == [0, 0], f"Return codes {codes} with a time budget on process 0.\n{run.tails()}"
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  assert len(steps) == 1 and 1 <= steps[0] < 1000, f"checkpoints {steps}\n{run.tails()}"
  for i in range(2):
    assert f"time budget reached: saved step {steps[0]} on every process" in run.log(i), run.tails()
  assert not os.path.exists(workdir / "TRAIN_DONE"), run.tails()
