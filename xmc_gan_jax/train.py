"""The training loop: mesh, data, state, jitted steps and periodic actions (no model maths here)."""
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from xmc_gan_jax import checkpointing
from xmc_gan_jax import config_validation
from xmc_gan_jax import image_grid
from xmc_gan_jax import model_factory
from xmc_gan_jax import sharding
from xmc_gan_jax import steps
from xmc_gan_jax import train_state
from xmc_gan_jax.data import sources
from xmc_gan_jax.models import text_encoder as text_encoder_lib


TRAIN_DONE_FILE = "TRAIN_DONE"


def mark_training_done(workdir: str) -> None:
  """Writes WORKDIR/TRAIN_DONE, which tells `--mode=eval` followers that no more checkpoints will come."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  (epath.Path(workdir) / TRAIN_DONE_FILE).write_text("done\n")


def clear_training_done(workdir: str) -> None:
  """Removes a TRAIN_DONE left by an earlier, shorter run that this run extends."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  marker = epath.Path(workdir) / TRAIN_DONE_FILE
  if marker.exists():
    marker.unlink()


def training_done(workdir: str) -> bool:
  from etils import epath  # pylint: disable=g-import-not-at-top
  return (epath.Path(workdir) / TRAIN_DONE_FILE).exists()


# Settings a checkpoint must share with the config that resumes it, and what goes wrong otherwise. A text-encoder
# change alters no parameter shape, so the restore alone would not notice it; a model change would surface only as
# orbax's shape error.
RESUME_KEYS = {
    "text_encoder": (("path", "pooling", "features", "max_length"),
                     "the generator would be fed text features it was not trained on"),
    "model": (("image_size", "z_dim", "gf_dim", "df_dim", "cond_size", "g_channel_multipliers",
               "use_word_attention", "stem_sees_sentence", "d_coordinate_channels"),
              "the checkpoint's networks have another architecture"),
}


def check_same_setup(meta: dict, config: ml_collections.ConfigDict, what: str) -> None:
  """Raises ValueError when the checkpoint's saved config (meta["config"], JSON) differs from `config` in a
  `RESUME_KEYS` setting (other text features, or networks of another shape).

  A key the saved config lacks (it predates the option) counts as configs/common.py's default, which is what the
  code did before the option existed."""
  from configs import common  # pylint: disable=g-import-not-at-top
  saved_json = (meta or {}).get("config")
  if not saved_json:
    return
  saved_config = json.loads(saved_json) if isinstance(saved_json, str) else dict(saved_json)
  defaults = common.get_base_config()
  for section, (keys, consequence) in RESUME_KEYS.items():
    saved = saved_config.get(section, {})
    for key in keys:
      before = saved.get(key, defaults[section][key])
      now = config[section][key]
      if isinstance(now, tuple):
        before = tuple(before)
      if before != now:
        raise ValueError(
            f"{what} was trained with {section}.{key}={before!r}, but this config has {now!r}: {consequence}. "
            f"Train in a new workdir, or set {section}.{key}={before!r} (--config.{section}.{key}=..., or make "
            "demo's --set) to continue.")


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite loss or gradient; the last good checkpoint is kept on disk."""


class Trainer:
  """Owns the compiled steps and the state for one config on one mesh. `run(workdir)` trains."""

  def __init__(self, config: ml_collections.ConfigDict, mesh=None, text_encoder=None):
    self.config = config
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    config_validation.validate(config, sharding.batch_devices(self.mesh), jax.process_count())
    self.text = text_encoder or text_encoder_lib.load_text_encoder(
        config.text_encoder.path, config.text_encoder.pooling, config.text_encoder.features)
    vocab = self.text.word_pieces() if model_factory.needs_vocab(config) else None
    self.modules = model_factory.build_modules(config, self.text.module, self.text.hidden_size, vocab=vocab)
    self.k = int(config.optim.d_steps_per_g_step)
    replicated = sharding.replicated(self.mesh)
    self.text_params = jax.device_put(self.text.params, replicated)
    self.abstract_state = train_state.abstract_state(self.modules, config)
    self.state_shardings = sharding.state_shardings(self.abstract_state, self.mesh)
    self.rng = jax.random.key(config.seed)
    self.train_step = jax.jit(
        functools.partial(steps.train_step, self.modules),
        in_shardings=(self.state_shardings, replicated, sharding.batch_sharding(self.mesh, 1), replicated),
        out_shardings=(self.state_shardings, replicated),
        donate_argnums=(0,))
    self.sample_fn = jax.jit(functools.partial(steps.sample, self.modules), out_shardings=replicated)

  def init_state(self) -> train_state.TrainState:
    # Initialisers draw from an RBG key: its XLA program compiles ~4x faster on CPU than threefry's.
    init_rng = jax.random.key(self.config.seed, impl="rbg")
    state, _ = train_state.create_state(self.modules, self.config, self.mesh, init_rng)
    return state

  def device_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Host batch [B_local,...] -> global arrays [k, B/k, ...] sharded on the example axis."""
    arrays = {key: host_batch[key] for key in sources.DEVICE_KEYS}
    return sharding.to_global_batch(steps.split_batch(arrays, self.k), self.mesh, leading_dims=1)

  def step(self, state, host_batch):
    return self.train_step(state, self.text_params, self.device_batch(host_batch), self.rng)

  def samples(self, params, batch_stats, token_ids, token_mask, z) -> np.ndarray:
    images = self.sample_fn(params, batch_stats, self.text_params, token_ids, token_mask, z)
    return np.asarray(jax.device_get(images))

  def restore_or_init(self, checkpointer: checkpointing.Checkpointer) -> train_state.TrainState:
    latest = checkpointer.latest_step()
    if latest is None:
      return self.init_state()
    logging.info("Resuming from checkpoint at step %d in %s", latest, checkpointer.directory)
    # Compare settings before touching the arrays: a shape mismatch would otherwise surface as orbax's error.
    check_same_setup(checkpointer.restore_meta(latest), self.config,
                     f"The checkpoint of step {latest} in {checkpointer.directory}")
    state = checkpointer.restore(latest, self.abstract_state, self.state_shardings)
    return state

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
    `log_every_steps`. Returns the final state.
    """
    from clu import metric_writers, periodic_actions  # pylint: disable=g-import-not-at-top

    config = self.config
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
    state = self.restore_or_init(checkpointer)
    start = int(jax.device_get(state.step))
    if start < config.total_steps and jax.process_index() == 0:
      clear_training_done(workdir)
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start == 0:
      writer.write_hparams(_flat_hparams(config))
    progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
    data = sources.train_source(config, self.text.vocab_path, self.text.vocab_size, start)
    fixed = None
    pending: list[dict[str, jax.Array]] = []
    last_log_time, last_log_step = time.time(), start
    meta = {"config": config.to_json_best_effort()}
    step = start
    stop_time = deadline if deadline is not None else float("inf")
    if config.max_train_seconds:
      stop_time = min(stop_time, time.time() + config.max_train_seconds)
    with checkpointing.PreemptionWatcher() as preemption:
      while step < config.total_steps:
        host_batch = next(data)
        if fixed is None:
          fixed = self._fixed_sample_inputs(host_batch)
        state, metrics = self.step(state, host_batch)
        step += 1
        pending.append(metrics)
        progress(step)
        out_of_time = time.time() > stop_time
        is_last = step == config.total_steps or out_of_time
        if step % config.log_every_steps == 0 or is_last or preemption.requested:
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
        if step % config.sample_every_steps == 0 or is_last:
          self._write_samples(writer, step, state, fixed)
        if evaluator is not None and config.eval.every_steps and (step % config.eval.every_steps == 0 or is_last):
          evaluator.evaluate(state, step, writer)
        if step % config.checkpoint_every_steps == 0 or is_last or preemption.requested:
          if pending and _mean_metrics(pending).get("nonfinite", 0.0) > 0:
            checkpointer.close()
            raise NonFiniteLossError(f"Non-finite loss before step {step}; last good checkpoint "
                                     f"{checkpointer.latest_step()} kept, nothing saved.")
          checkpointer.save(step, state, meta)
        if preemption.requested:
          logging.warning("SIGTERM received: saved step %d, exiting.", step)
          break
        if out_of_time:
          logging.info("Time budget (max_train_seconds or deadline) reached at step %d: saved, stopping.", step)
          break
    checkpointer.close()
    writer.flush()
    if step >= config.total_steps and jax.process_index() == 0:
      mark_training_done(workdir)
    return state

  def _fixed_sample_inputs(self, host_batch: dict[str, np.ndarray]) -> dict[str, Any]:
    n = min(self.config.num_sample_images, host_batch["image"].shape[0])
    z = jax.random.normal(jax.random.fold_in(self.rng, 0x5A3), (n, self.config.model.z_dim))
    captions = [c.decode() if isinstance(c, bytes) else str(c) for c in host_batch.get("caption", [])[:n]]
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
  """Entry used by main.py: writes WORKDIR/config.json, trains, evaluates every `config.eval.every_steps`."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  trainer = Trainer(config)
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config.to_json_best_effort(indent=2))
  evaluator = None
  if config.eval.every_steps > 0:
    from xmc_gan_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
    evaluator = evaluator_lib.Evaluator(config, trainer)
  return trainer.run(workdir, evaluator=evaluator)
