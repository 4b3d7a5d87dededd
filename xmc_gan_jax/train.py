"""The training loop: mesh, data, state, jitted steps and periodic actions (no model maths here)."""
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from xmc_gan_jax import checkpointing
from xmc_gan_jax import image_grid
from xmc_gan_jax import runtime
from xmc_gan_jax import sharding
from xmc_gan_jax import stop_decision
from xmc_gan_jax import train_state
from xmc_gan_jax import workdir_lock
from xmc_gan_jax.data import sources


PREFETCH_BATCHES = 2  # batches placed on the devices ahead of the step that uses the first of them


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite loss or gradient; the last good checkpoint is kept on disk."""


class Trainer(runtime.Runtime):
  """A Runtime that trains: `run(workdir)` trains to config.total_steps, resuming from WORKDIR/checkpoints."""

  def restore_or_init(self, checkpointer: checkpointing.Checkpointer) -> train_state.TrainState:
    """The latest checkpoint that restores, else a fresh state when there is none.

    A checkpoint whose files fail to restore (truncated, half-copied) is skipped with one warning line naming its
    step, folder and error, and the previous one is tried, and so on. Once one restores, the skipped ones move
    to WORKDIR/checkpoints_damaged/ (kept, so this run can save those steps again) and are listed in
    `self.skipped_checkpoints` [(step, error)], which `run` writes to TensorBoard. A saved config that does not
    match this one (`check_same_setup`) is an error, not damage. RuntimeError when no checkpoint restores.
    """
    self.skipped_checkpoints: list[tuple[int, str]] = []
    steps = checkpointer.all_steps()
    if not steps:
      return self.init_state()
    for step in sorted(steps, reverse=True):
      what = f"The checkpoint of step {step} in {checkpointer.directory}"
      try:
        meta = checkpointer.restore_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        self._skip_damaged(checkpointer, step, e)
        continue
      runtime.check_same_setup(meta, self.config, what)
      try:
        state = checkpointer.restore(step, self.abstract_state, self.state_shardings)
      except Exception as e:  # pylint: disable=broad-except
        self._skip_damaged(checkpointer, step, e)
        continue
      logging.info("Resuming from checkpoint at step %d in %s", step, checkpointer.directory)
      if self.skipped_checkpoints and jax.process_index() == 0:
        for skipped, _ in self.skipped_checkpoints:
          logging.warning("Damaged checkpoint of step %d moved to %s; training resumes from step %d.",
                          skipped, checkpointer.set_aside(skipped), step)
      return state
    errors = "; ".join(f"step {s}: {e}" for s, e in self.skipped_checkpoints)
    raise RuntimeError(
        f"None of the checkpoints in {checkpointer.directory} (steps {sorted(steps)}) could be restored ({errors}). "
        f"Move that folder away to train from scratch, or restore it from a backup.")

  def _skip_damaged(self, checkpointer: checkpointing.Checkpointer, step: int, error: Exception) -> None:
    root = error  # the innermost cause names the file and the problem (orbax wraps it in a generic Exception)
    while (root.__cause__ or root.__context__) is not None and len(str(root.__cause__ or root.__context__)) > 0:
      root = root.__cause__ or root.__context__
    lines = str(root).strip().splitlines() or [""]
    short = f"{type(root).__name__}: {lines[0][:300]}"
    self.skipped_checkpoints.append((step, short))
    logging.warning("Skipping damaged checkpoint of step %d in %s (%s); trying the previous one.",
                    step, checkpointer.directory, short)

  def checkpoint_step(self, workdir: str) -> int:
    """The step of the latest checkpoint in WORKDIR (0 when there is none)."""
    if not os.path.isdir(os.path.join(workdir, checkpointing.CHECKPOINT_DIR)) and "://" not in workdir:
      return 0
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    step = checkpointer.latest_step()
    checkpointer.close()
    return step or 0

  def run(self, workdir: str, evaluator=None, on_log=None, deadline: float | None = None) -> train_state.TrainState:
    """Trains to `config.total_steps`, resuming from WORKDIR/checkpoints.

    Training also stops, with a checkpoint, after `config.max_train_seconds` of this call's loop or once
    `deadline` (unix seconds; the clock of `time.time()`) has passed, whichever comes first. Set-up before the
    loop (restoring, building the input pipeline, generating a TFDS dataset) counts against `deadline` but not
    against `max_train_seconds`. `on_log(step, scalars)`, if given, is called with the logged scalars every
    `log_every_steps`. Returns the final state. A SIGTERM on any process or the time budget of process 0 stops
    every process after the same step, with a checkpoint (stop_decision). Process 0 holds WORKDIR's trainer lock
    (workdir_lock): a second trainer on the same workdir is refused.
    """
    lock = workdir_lock.WorkdirLock(workdir)
    if jax.process_index() == 0:
      lock.acquire()  # before anything is written: a second trainer on this workdir stops here
    try:
      return self._run_locked(workdir, lock, evaluator, on_log, deadline)
    finally:
      lock.release()

  def _run_locked(self, workdir, lock, evaluator, on_log, deadline) -> train_state.TrainState:
    """`run` while holding the workdir lock (process 0 holds it; `lock.refresh` is a no-op elsewhere)."""
    from clu import metric_writers, periodic_actions  # pylint: disable=g-import-not-at-top

    config = self.config
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
    try:
      state = self.restore_or_init(checkpointer)
    except BaseException:
      checkpointer.close()  # no orbax threads left behind to hang or bury the error in their own
      raise
    start = int(jax.device_get(state.step))
    if start < config.total_steps and jax.process_index() == 0:
      checkpointing.clear_training_done(workdir)
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start == 0:
      writer.write_hparams(_flat_hparams(config))
    for skipped, error in self.skipped_checkpoints:
      writer.write_scalars(start, {"checkpoint/skipped_damaged_step": skipped})
      writer.write_texts(start, {"checkpoint/skipped_damaged": f"Checkpoint of step {skipped} in "
                                 f"{checkpointer.directory} could not be restored ({error}); resumed from "
                                 f"step {start}, the damaged one is in {checkpointing.DAMAGED_DIR}/."})
    progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
    # Batch n+1 is copied to the devices while step n runs; host batches ride along for the sample grids.
    data = sharding.DevicePrefetch(sources.train_source(config, self.text.vocab_path, self.text.vocab_size, start),
                                   lambda host: (host, self.device_batch(host)), size=PREFETCH_BATCHES)
    fixed = None
    pending: list[dict[str, jax.Array]] = []
    last_log_time, last_log_step = time.time(), start
    meta = {"config": config.to_json_best_effort()}
    step = start
    stop_time = deadline if deadline is not None else float("inf")
    if config.max_train_seconds:
      stop_time = min(stop_time, time.time() + config.max_train_seconds)
    with stop_decision.StopDecision(stop_time) as decision:
      while step < config.total_steps:
        host_batch, device_batch = next(data)
        if fixed is None:
          fixed = self._fixed_sample_inputs(host_batch)
        del host_batch
        state, metrics = self.device_step(state, device_batch)
        step += 1
        pending.append(metrics)
        if len(pending) >= 2:
          # At most one step ahead of the device, so queued batches and metrics stay bounded; the device does not
          # idle for this wait (step n is already queued behind step n - 1).
          jax.block_until_ready(pending[-2])
        progress(step)
        stop = decision.poll(step)  # the same answer on every process
        lock.refresh()
        is_last = step == config.total_steps or stop != stop_decision.NONE
        if step % config.log_every_steps == 0 or is_last:
          steps_per_sec = (step - last_log_step) / max(time.time() - last_log_time, 1e-9)
          last_log_time, last_log_step = time.time(), step
          scalars = _mean_metrics(pending)
          pending = []
          if scalars.pop("nonfinite", 0.0) > 0:
            checkpointer.close()
            raise NonFiniteLossError(
                f"Non-finite loss or gradient between steps {step - config.log_every_steps} and {step}; "
                f"the state was not updated by those steps and nothing was saved. Last good checkpoint: "
                f"{checkpointer.latest_step()} in {checkpointer.directory}.")
          scalars = {f"train/{k}": v for k, v in scalars.items()}
          scalars["train/steps_per_sec"] = steps_per_sec
          stats = getattr(data, "stats", lambda: {})()
          scalars.update({f"data/{k}": float(v) for k, v in stats.items()})
          writer.write_scalars(step, scalars)
          if on_log is not None:
            on_log(step, scalars)
        if step % config.checkpoint_every_steps == 0 or is_last:
          if pending and _mean_metrics(pending).get("nonfinite", 0.0) > 0:
            checkpointer.close()
            raise NonFiniteLossError(f"Non-finite loss before step {step}; last good checkpoint "
                                     f"{checkpointer.latest_step()} kept, nothing saved.")
          checkpointer.save(step, state, meta)
        if step % config.sample_every_steps == 0 or is_last:
          self._write_samples(writer, step, state, fixed)
        # After the save: an evaluation that fails (e.g. unreadable eval data) cannot lose this step.
        if evaluator is not None and config.eval.every_steps and (step % config.eval.every_steps == 0 or is_last):
          evaluator.evaluate(state, step, writer)
        if stop != stop_decision.NONE:
          logging.warning("%s: saved step %d on every process, stopping.", stop_decision.REASONS[stop], step)
          break
    checkpointer.close()
    writer.flush()
    if step >= config.total_steps and jax.process_index() == 0:
      checkpointing.mark_training_done(workdir)
    return state

  def _fixed_sample_inputs(self, host_batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """The sample grids' captions, noise and real images: process 0's first rows, the same on every process (the
    sampler takes them as replicated inputs)."""
    n = min(self.config.num_sample_images, host_batch["image"].shape[0])
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      shared = multihost_utils.broadcast_one_to_all(
          {key: np.asarray(host_batch[key][:n]) for key in ("token_ids", "token_mask", "image")})
      host_batch = dict(host_batch, **{key: np.asarray(value) for key, value in shared.items()})
    z = jax.random.normal(jax.random.fold_in(self.rng, 0x5A3), (n, self.config.model.z_dim))
    captions = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                for c in host_batch.get("caption", [])[:n]]
    return {"token_ids": jnp.asarray(host_batch["token_ids"][:n]),
            "token_mask": jnp.asarray(host_batch["token_mask"][:n]),
            "z": z, "real": host_batch["image"][:n], "captions": captions}

  def _write_samples(self, writer, step: int, state, fixed) -> None:
    args = (fixed["token_ids"], fixed["token_mask"], fixed["z"])
    ema = self.samples(state.ema_params, state.g_batch_stats, *args)
    raw = self.samples(state.g_params, state.g_batch_stats, *args)
    writer.write_images(step, {"samples/ema": image_grid.make_grid(ema)[None],
                               "samples/raw": image_grid.make_grid(raw)[None],
                               "samples/real": image_grid.make_grid(fixed["real"])[None]})
    if fixed["captions"]:
      writer.write_texts(step, {"samples/captions": "\n\n".join(
          f"{i}: {c}" for i, c in enumerate(fixed["captions"]))})


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
  if not pending:
    return {}
  host = jax.device_get(pending)
  out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
  if "nonfinite" in host[0]:
    out["nonfinite"] = float(np.max([m["nonfinite"] for m in host]))
  return out


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, ml_collections.ConfigDict):
        visit(name + ".", value)
      elif isinstance(value, (int, float, str, bool)):
        flat[name] = value
  visit("", config)
  return flat
