"""Builds the generator, discriminator and optimizers from a config; bundles what the pure steps need."""
import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import optax

from xmc_gan_jax.models.discriminator import Discriminator
from xmc_gan_jax.models.generator import Generator

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class GANModules:
  """Static (hashable) pieces of the model: Linen modules, optimizers and loss settings.

  `text_module`/`pooling` describe the frozen text encoder whose params travel separately.
  `pretrained_features`, when set, maps images [N,H,W,3] in [0,1] to features [N,F] for the pretrained
  image-image contrastive term (e.g. VGG-19); None disables that term.
  """
  generator: nn.Module
  discriminator: nn.Module
  text_module: nn.Module
  text_dim: int
  pooling: str
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  loss: ml_collections.FrozenConfigDict
  z_dim: int
  ema_decay: float
  pretrained_features: Callable[[Any], Any] | None = None

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other


def compute_dtype(config: ml_collections.ConfigDict):
  if config.model.dtype not in _DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {config.model.dtype!r}.")
  return _DTYPES[config.model.dtype]


def build_modules(config: ml_collections.ConfigDict, text_module: nn.Module, text_dim: int,
                  pretrained_features=None) -> GANModules:
  """Creates the Linen modules and Adam optimizers (β = (beta1, beta2), constant learning rates)."""
  dtype = compute_dtype(config)
  m = config.model
  generator = Generator(
      image_size=m.image_size, z_dim=m.z_dim, gf_dim=m.gf_dim, cond_size=m.cond_size,
      gamma_for_g=m.gamma_for_g, use_word_attention=m.use_word_attention,
      stem_sees_sentence=m.stem_sees_sentence, initial_output_level=m.initial_output_level,
      batch_norm_group_size=m.batch_norm_group_size,
      channel_multipliers=tuple(int(c) for c in m.g_channel_multipliers), dtype=dtype)
  discriminator = Discriminator(
      image_size=m.image_size, df_dim=m.df_dim, text_dim=text_dim, cond_size=m.cond_size,
      dtype=dtype)
  o = config.optim
  g_tx = optax.adam(o.g_lr, b1=o.beta1, b2=o.beta2, eps=o.eps)
  d_tx = optax.adam(o.d_lr, b1=o.beta1, b2=o.beta2, eps=o.eps)
  if "dtype" in getattr(text_module, "__dataclass_fields__", {}):
    text_module = text_module.clone(dtype=dtype)  # the frozen encoder's matmuls follow model.dtype too
  return GANModules(
      generator=generator, discriminator=discriminator, text_module=text_module, text_dim=text_dim,
      pooling=config.text_encoder.pooling, g_tx=g_tx, d_tx=d_tx,
      loss=ml_collections.FrozenConfigDict(config.loss), z_dim=m.z_dim, ema_decay=o.ema_decay,
      pretrained_features=pretrained_features)
