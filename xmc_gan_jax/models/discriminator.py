"""XMC-GAN discriminator (projection discriminator with contrastive heads), as in the released code.

images [N, H, W, 3] in [0, 1] (no rescale to [-1, 1]) and sentence [N, E] -> dict of
  logits [N] f32, features [N, Cd] (x_pool), regions [N, cond_size^2, E], sentence_features [N, Cd].

Every conv and dense layer is spectrally normalised (`layers.SpectralConv/SpectralDense`). Layout:
`DiscOptimizedBlock(df)` (image_size -> image_size/2), then pre-activation `DiscBlock`s with width multipliers
(of df) and downsampling:
  128 px: 2, 4, 8, 16, 16 / T, T, T, T, F        256 px: 2, 4, 8, 8, 16, 16 / T, T, T, T, T, F   (original)
  64 px:  2, 4, 8, 16 / T, T, T, F               (our choice: 64 -> 32 -> 16 -> 8 -> 4 -> 4, same 4x4 head and
                                                  Cd = 16 df as the 128 px model)
  32 px:  2, 4, 8 / T, T, F                      (our choice, for the CPU default job: 32 -> 16 -> 8 -> 4 -> 4)
Region features are the output of the last block (OptimizedBlock included) whose side equals `cond_size`, taken
before the final ReLU and projected by a SN 1x1 conv to the text width E. Then ReLU, sum over H, W -> x_pool;
logit = SNDense(1)(x_pool) + <x_pool, SNDense(Cd)(sentence)>.
Variables: `params`, `spectral_norm_stats` (u advances only with train=True and mutable=['spectral_norm_stats']).
"""
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmc_gan_jax.models import layers

# image_size -> (width multipliers of df, downsample flags) of the DiscBlocks after the OptimizedBlock.
BLOCK_LAYOUT = {
    32: ((2, 4, 8), (True, True, False)),
    64: ((2, 4, 8, 16), (True, True, True, False)),
    128: ((2, 4, 8, 16, 16), (True, True, True, True, False)),
    256: ((2, 4, 8, 8, 16, 16), (True, True, True, True, True, False)),
}


class DiscOptimizedBlock(nn.Module):
  """First block: [B, H, W, Cin] -> [B, H/2, W/2, features].

  SNConv3x3 -> ReLU -> SNConv3x3 -> avgpool2, plus shortcut avgpool2 -> SNConv1x1 (no leading ReLU).
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h = layers.SpectralConv(self.features, (3, 3), dtype=self.dtype, name="conv0")(x, train)
    h = layers.SpectralConv(self.features, (3, 3), dtype=self.dtype, name="conv1")(nn.relu(h), train)
    h = layers.avg_pool_2x2(h)
    shortcut = layers.SpectralConv(self.features, (1, 1), dtype=self.dtype, name="shortcut")(
        layers.avg_pool_2x2(x), train)
    return h + shortcut


class DiscBlock(nn.Module):
  """Pre-activation block: [B, H, W, Cin] -> [B, H/2 or H, W/2 or W, features].

  ReLU -> SNConv3x3 -> ReLU -> SNConv3x3; shortcut SNConv1x1 when downsampling or Cin != features; then avgpool2
  on both paths when downsampling.
  """
  features: int
  downsample: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h = layers.SpectralConv(self.features, (3, 3), dtype=self.dtype, name="conv0")(nn.relu(x), train)
    h = layers.SpectralConv(self.features, (3, 3), dtype=self.dtype, name="conv1")(nn.relu(h), train)
    shortcut = x
    if self.downsample or x.shape[-1] != self.features:
      shortcut = layers.SpectralConv(self.features, (1, 1), dtype=self.dtype, name="shortcut")(x, train)
    if self.downsample:
      h, shortcut = layers.avg_pool_2x2(h), layers.avg_pool_2x2(shortcut)
    return h + shortcut


class Discriminator(nn.Module):
  """XMC-GAN discriminator (see module docstring).

  Attributes:
    image_size: input side in pixels: 64, 128 or 256.
    df_dim: base channel width (paper: 96); the global feature width is Cd = 16 * df_dim.
    text_dim: E, width of the word/sentence embeddings (768 for BERT-base); regions are projected to it.
    cond_size: side of the region-feature map (some block output must have this size).
    dtype: compute dtype (jnp dtype or name): convolution and matmul operands and results; params, spectral-norm
      vectors and power iterations, the spatial pooling and the outputs stay float32 (docs/precision.md).
  """
  image_size: int
  df_dim: int = 96
  text_dim: int = 768
  cond_size: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, sentence: jax.Array, train: bool) -> Dict[str, jax.Array]:
    """images [N, H, W, 3] in [0, 1], sentence [N, E] -> dict(logits [N], features [N, Cd],
    regions [N, cond_size^2, E], sentence_features [N, Cd]), all float32."""
    if self.image_size not in BLOCK_LAYOUT:
      raise ValueError(f"Discriminator image_size must be one of {sorted(BLOCK_LAYOUT)}, got {self.image_size}.")
    size = self.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
      raise ValueError(f"images must be [N, {size}, {size}, 3], got {images.shape}.")
    if sentence.ndim != 2 or sentence.shape != (images.shape[0], self.text_dim):
      raise ValueError(f"sentence must be [N={images.shape[0]}, text_dim={self.text_dim}] (one row per image; "
                       f"repeat it for real and fake halves), got {sentence.shape}.")
    mults, downsamples = BLOCK_LAYOUT[size]
    sizes = [size // 2]
    for down in downsamples:
      sizes.append(sizes[-1] // 2 if down else sizes[-1])
    if self.cond_size not in sizes:
      raise ValueError(f"cond_size={self.cond_size} matches no discriminator block output at {size} px "
                       f"(block sides: {sizes}).")
    cond_block = len(sizes) - 1 - sizes[::-1].index(self.cond_size)  # last block at that side, as the original.
    dtype = jnp.dtype(self.dtype)

    x = images.astype(dtype)
    x = DiscOptimizedBlock(self.df_dim, dtype, name="block0")(x, train)
    x_cond = x
    for i, (mult, down) in enumerate(zip(mults, downsamples), start=1):
      x = DiscBlock(self.df_dim * mult, down, dtype, name=f"block{i}")(x, train)
      if i == cond_block:
        x_cond = x

    regions = layers.SpectralConv(self.text_dim, (1, 1), dtype=dtype, name="region_proj")(x_cond, train)
    regions = regions.reshape(regions.shape[0], self.cond_size * self.cond_size, self.text_dim)
    x_pool = jnp.sum(nn.relu(x).astype(jnp.float32), axis=(1, 2))  # [N, Cd] float32; the heads cast it to dtype
    sentence_features = layers.SpectralDense(x_pool.shape[-1], dtype=dtype, name="sentence_proj")(sentence, train)
    logits = layers.SpectralDense(1, dtype=dtype, name="logit")(x_pool, train)[:, 0]
    logits = logits.astype(jnp.float32) + jnp.sum(
        x_pool.astype(jnp.float32) * sentence_features.astype(jnp.float32), axis=-1)
    return dict(logits=logits, features=x_pool.astype(jnp.float32), regions=regions.astype(jnp.float32),
                sentence_features=sentence_features.astype(jnp.float32))
