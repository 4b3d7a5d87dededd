"""What a config needs on a mesh: the text encoder, the modules, the abstract state and its shardings, the jitted
train step and the jitted sampler, and restoring a checkpoint into them.

The training loop (train.py), evaluation, sampling and the demo all build one `Runtime`; nothing here trains.
Imports no TensorFlow: a runtime works on accelerator machines that lack it (feed random batches there).
"""
import functools
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from xmc_gan_jax import checkpointing
from xmc_gan_jax import config_validation
from xmc_gan_jax import model_factory
from xmc_gan_jax import sharding
from xmc_gan_jax import steps
from xmc_gan_jax import train_state
from xmc_gan_jax.data import sources
from xmc_gan_jax.models import text_encoder as text_encoder_lib

# Settings a checkpoint must share with the config that restores it, and what goes wrong otherwise. A text-encoder
# change alters no parameter shape, so the restore alone would not notice it; a model change would surface only as
# orbax's shape error.
RESUME_KEYS = {
    "text_encoder": (("path", "pooling", "features", "max_length"),
                     "the generator would be fed text features it was not trained on"),
    "model": (("image_size", "z_dim", "gf_dim", "df_dim", "cond_size", "g_channel_multipliers",
               "use_word_attention", "stem_sees_sentence"),
              "the checkpoint's networks have another architecture"),
}


def check_same_setup(meta: dict, config: ml_collections.ConfigDict, what: str) -> None:
  """Raises ValueError when the checkpoint's saved config (meta["config"], JSON) differs from `config` in a
  `RESUME_KEYS` setting (other text features, or networks of another shape). A key the saved config lacks is
  not compared (logged)."""
  saved_json = (meta or {}).get("config")
  if not saved_json:
    return
  saved_config = json.loads(saved_json) if isinstance(saved_json, str) else dict(saved_json)
  for section, (keys, consequence) in RESUME_KEYS.items():
    saved = saved_config.get(section, {})
    for key in keys:
      if key not in saved:
        logging.warning("%s has no %s.%s in its saved config; not compared.", what, section, key)
        continue
      before, now = saved[key], config[section][key]
      if isinstance(now, tuple):
        before = tuple(before)
      if before != now:
        raise ValueError(
            f"{what} was trained with {section}.{key}={before!r}, but this config has {now!r}: {consequence}. "
            f"Train in a new workdir, or set --config.{section}.{key}={before!r} to continue.")


class Runtime:
  """The compiled pieces of one config on one mesh (default: the mesh of `config.mesh` over all devices).

  Attributes: config, mesh, text (TextEncoder), modules (GANModules), k (sub-batches per step), text_params
  (replicated), abstract_state, state_shardings, rng (the run's key), train_step and sample_fn (jitted).
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh=None, text_encoder=None):
    self.config = config
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    config_validation.validate(config, sharding.batch_devices(self.mesh), jax.process_count())
    self.text = text_encoder
    if text_encoder is None:  # weights read from disk: a damaged file must not look like a training divergence
      self.text = text_encoder_lib.load_text_encoder(
          config.text_encoder.path, config.text_encoder.pooling, config.text_encoder.features)
      config_validation.check_finite_text_params(
          self.text.params, config.text_encoder.path or os.path.dirname(self.text.vocab_path) or "(default)")
    self.modules = model_factory.build_modules(config, self.text.module, self.text.hidden_size)
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
    """A fresh state from config.seed, created straight into its shardings."""
    # Initialisers draw from an RBG key: its XLA program compiles ~4x faster on CPU than threefry's.
    init_rng = jax.random.key(self.config.seed, impl="rbg")
    state, _ = train_state.create_state(self.modules, self.config, self.mesh, init_rng)
    return state

  def device_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Host batch [B_local,...] -> global arrays [k, B/k, ...] sharded on the example axis."""
    arrays = {key: host_batch[key] for key in sources.DEVICE_KEYS}
    return sharding.to_global_batch(steps.split_batch(arrays, self.k), self.mesh, leading_dims=1)

  def step(self, state, host_batch):
    """One jitted train step on a host batch: (new state, metrics). `state` is donated."""
    return self.device_step(state, self.device_batch(host_batch))

  def device_step(self, state, batch: dict[str, jax.Array]):
    """One jitted train step on a batch already placed by `device_batch`: (new state, metrics), dispatched
    asynchronously (nothing here waits for the device). `state` is donated."""
    return self.train_step(state, self.text_params, batch, self.rng)

  def samples(self, params, batch_stats, token_ids, token_mask, z) -> np.ndarray:
    """Generator images float32 [B, H, W, 3] in [0, 1] on the host (pass EMA params for EMA samples)."""
    images = self.sample_fn(params, batch_stats, self.text_params, token_ids, token_mask, z)
    return np.asarray(jax.device_get(images))

  def restore(self, checkpointer: checkpointing.Checkpointer, step: int) -> train_state.TrainState:
    """The state of checkpoint `step`, in this runtime's shardings, after checking the saved config's setup."""
    # Compare settings before touching the arrays: a shape mismatch would otherwise surface as orbax's error.
    check_same_setup(checkpointer.restore_meta(step), self.config,
                     f"The checkpoint of step {step} in {checkpointer.directory}")
    return checkpointer.restore(step, self.abstract_state, self.state_shardings)
