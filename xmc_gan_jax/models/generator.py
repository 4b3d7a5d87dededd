"""XMC-GAN generator (Zhang et al., CVPR 2021), as in the released code.

z [B, z_dim] and text (sentence [B, E], words [B, T, E]) -> images [B, H, W, 3] in [0, 1].

- Global condition gc = concat(Dense(z_dim)(sentence), z) (2*z_dim = 256 channels).
- Stem Dense(m0*gf*4*4)(z) -> [B, 4, 4, m0*gf], m0 = first channel multiplier (16 at 64-256 px, as the original;
  the stem sees z only, as in the original code). `stem_sees_sentence=True` feeds it gc = concat(projected
  sentence, z) instead, as the paper's text describes ("z and e_s concatenated and passed through the first FC").
- `GenBlock`s (self-modulated by gc through ConditionalBatchNorm) from 4x4 up to `cond_size`.
- Word attention once at `cond_size`: regions = 1x1 Conv(E)(x); per region, a softmax over the real words of
  gamma_for_g * cos(region, word) weights the L2-normalised words into a context vector.
- Spatial condition = concat(context [E], tiled gc [256]) at `cond_size`, nearest-upsampled to each later
  block's resolution; `GenSpatialBlock`s (LocalConditionalBatchNorm: per-pixel modulation) up to `image_size`.
  The modulation's 1x1 convs run at `cond_size` and their outputs are upsampled (the same numbers, fewer FLOPs).
- Head LCBN -> ReLU -> Conv3x3(3) -> tanh -> (x + 1) / 2. The head conv's bias starts at
  atanh(2 * initial_output_level - 1), so an untrained G's pixels centre on `initial_output_level` (0.5 = zero
  bias, the original).

Channel multipliers of gf per block (output widths), 4x4 -> image_size:
  128 px: 16, 8 | 4, 2, 1        256 px: 16, 8 | 8, 4, 2, 1   (original)
  64 px:  16, 8 | 2, 1           (our choice: the original has no 64 px config; we keep the two global blocks and
                                  the last two spatial widths of the 128 px model)
  32 px:  16, 8 | 1              (our choice: one attention-modulated block)
`channel_multipliers` replaces the table's entry (configs/shapes.py uses 8, 4 | 2 at 32 px: fewer FLOPs in the
low-resolution blocks, more channels in the last one).
With cond_size = 16, the first two blocks are GenBlocks and the rest GenSpatialBlocks. No spectral norm in G.
Variables: `params`, `batch_stats` (pass `mutable=['batch_stats']` when train=True).
"""
import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmc_gan_jax.models import layers
from xmc_gan_jax.models import precision as policy

CHANNEL_MULTIPLIERS = {32: (16, 8, 1), 64: (16, 8, 2, 1), 128: (16, 8, 4, 2, 1), 256: (16, 8, 8, 4, 2, 1)}
_MASK_LOGIT = -1e9


def _conv(features: int, kernel: int, dtype: Any, name: Optional[str] = None,
          bias_init=nn.initializers.zeros) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), dtype=dtype, kernel_init=layers.default_kernel_init,
                 bias_init=bias_init, name=name)


class GenBlock(nn.Module):
  """Up-block with global modulation: [B, H, W, Cin], cond [B, D] -> [B, 2H, 2W, features].

  CBN -> ReLU -> up x2 -> Conv3x3 -> CBN -> ReLU -> Conv3x3, plus shortcut up x2 -> Conv1x1.
  """
  features: int
  group_size: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    h = layers.ConditionalBatchNorm(self.group_size, self.dtype, name="cbn0")(x, cond, train)
    h = _conv(self.features, 3, self.dtype, "conv0")(layers.upsample_nearest(nn.relu(h)))
    h = layers.ConditionalBatchNorm(self.group_size, self.dtype, name="cbn1")(h, cond, train)
    h = _conv(self.features, 3, self.dtype, "conv1")(nn.relu(h))
    shortcut = _conv(self.features, 1, self.dtype, "shortcut")(layers.upsample_nearest(x))
    return h + shortcut


class GenSpatialBlock(nn.Module):
  """Up-block with per-pixel modulation: x [B, H, W, Cin], cond [B, H/f, W/f, D] (f >= 1 integer)
  -> [B, 2H, 2W, features]. Same layout as `GenBlock` with LocalConditionalBatchNorm; both modulate with the
  nearest-upsampled cond (to H, then 2H), computed at cond's resolution (see `LocalConditionalBatchNorm`)."""
  features: int
  group_size: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    h = layers.LocalConditionalBatchNorm(self.group_size, self.dtype, name="lcbn0")(x, cond, train)
    h = _conv(self.features, 3, self.dtype, "conv0")(layers.upsample_nearest(nn.relu(h)))
    h = layers.LocalConditionalBatchNorm(self.group_size, self.dtype, name="lcbn1")(h, cond, train)
    h = _conv(self.features, 3, self.dtype, "conv1")(nn.relu(h))
    shortcut = _conv(self.features, 1, self.dtype, "shortcut")(layers.upsample_nearest(x))
    return h + shortcut


def word_attention(regions: jax.Array, words: jax.Array, word_mask: jax.Array, gamma: float,
                   dtype: Any = jnp.float32) -> jax.Array:
  """Region-to-word attention of the original `attention_for_g`.

  Args:
    regions: [B, R, E] region features.
    words: [B, T, E] word (token) features; values at padded positions are ignored entirely.
    word_mask: [B, T], nonzero = real token.
    gamma: logit scale applied to the cosine similarities.
    dtype: matmul operand dtype. float32: both einsums at Precision.HIGHEST (f32-accurate on TPU); bfloat16:
      bf16 operands, float32 logits (f32 accumulation), bf16 context (docs/precision.md).

  Returns:
    [B, R, E] in `dtype`: sum_t softmax_t(gamma * cos(region, word_t)) * word_t / ||word_t|| over real words
    (all-zero when a caption has no real word). L2 norms, masking and the softmax are float32.
  """
  dtype = jnp.dtype(dtype)
  precision = policy.matmul_precision(dtype)
  real = (word_mask > 0)[:, :, None]
  words = jnp.where(real, words.astype(jnp.float32), 0.0)  # garbage (even NaN) in padding cannot leak.
  regions = layers.safe_l2_normalize(regions.astype(jnp.float32)).astype(dtype)
  words = layers.safe_l2_normalize(words).astype(dtype)
  logits = gamma * policy.einsum_f32("bre,bte->brt", regions, words, precision)
  logits = jnp.where(jnp.swapaxes(real, 1, 2), logits, _MASK_LOGIT)
  attn = jax.nn.softmax(logits, axis=-1).astype(dtype)
  return jnp.einsum("brt,bte->bre", attn, words, precision=precision)


class Generator(nn.Module):
  """XMC-GAN generator (see module docstring).

  Attributes:
    image_size: output side in pixels: 32, 64, 128 or 256.
    z_dim: noise width (also the width of the projected sentence).
    gf_dim: base channel width (paper: 96).
    cond_size: side of the word-attention map (power of two, 4 <= cond_size <= image_size / 2).
    gamma_for_g: attention logit scale.
    use_word_attention: False = spatial condition is the tiled global condition only (ablation).
    stem_sees_sentence: True = the 4x4 stem is a Dense of gc (paper's text), False = of z only (original code).
    initial_output_level: pixel value in (0, 1) that an untrained G's output centres on (0.5 = the original).
    batch_norm_group_size: examples per BatchNorm statistics group (0 = whole batch; original: 8 per device).
    channel_multipliers: output width of each block in units of gf_dim, 4x4 -> image_size (log2(image_size / 4)
      entries; the first is also the stem's width); () = CHANNEL_MULTIPLIERS[image_size].
    dtype: compute dtype (jnp dtype or name); params and BN statistics stay float32; output is float32.
  """
  image_size: int
  z_dim: int = 128
  gf_dim: int = 96
  cond_size: int = 16
  gamma_for_g: float = 15.0
  use_word_attention: bool = True
  stem_sees_sentence: bool = False
  initial_output_level: float = 0.5
  batch_norm_group_size: int = 0
  channel_multipliers: Tuple[int, ...] = ()
  dtype: Any = jnp.float32

  def _check_config(self):
    if self.image_size not in CHANNEL_MULTIPLIERS:
      raise ValueError(f"Generator image_size must be one of {sorted(CHANNEL_MULTIPLIERS)}, got {self.image_size}.")
    blocks = len(CHANNEL_MULTIPLIERS[self.image_size])
    custom = tuple(self.channel_multipliers)
    if custom and (len(custom) != blocks or any(int(m) != m or m < 1 for m in custom)):
      raise ValueError(f"Generator channel_multipliers must be {blocks} positive integers at {self.image_size} px "
                       f"(one per block, 4x4 -> {self.image_size}), got {custom}.")
    if self.image_size < 2 * self.cond_size:
      raise ValueError(f"Generator needs image_size >= 2 * cond_size (at least one attention-modulated block); "
                       f"got image_size={self.image_size}, cond_size={self.cond_size}.")
    if not 0.0 < self.initial_output_level < 1.0:
      raise ValueError(f"Generator initial_output_level must lie in (0, 1) (a pixel value; 0.5 = zero head bias), "
                       f"got {self.initial_output_level}.")
    if self.cond_size < 4 or self.cond_size & (self.cond_size - 1):
      raise ValueError(f"Generator cond_size must be a power of two >= 4, got {self.cond_size}.")

  @nn.compact
  def __call__(self, z: jax.Array, sentence: jax.Array, words: Optional[jax.Array],
               word_mask: Optional[jax.Array], train: bool) -> jax.Array:
    """z [B, z_dim], sentence [B, E], words [B, T, E], word_mask [B, T] (1 = real token) -> [B, H, W, 3] f32 in [0, 1].

    `words`/`word_mask` may be None when use_word_attention is False.
    """
    self._check_config()
    dtype = jnp.dtype(self.dtype)
    batch = z.shape[0]
    if z.ndim != 2 or z.shape[1] != self.z_dim:
      raise ValueError(f"z must be [B, {self.z_dim}], got {z.shape}.")
    if sentence.ndim != 2 or sentence.shape[0] != batch:
      raise ValueError(f"sentence must be [B={batch}, E], got {sentence.shape}.")
    if self.use_word_attention:
      if words is None or word_mask is None:
        raise ValueError("words and word_mask are required when use_word_attention=True.")
      if words.ndim != 3 or words.shape[0] != batch or word_mask.shape != words.shape[:2]:
        raise ValueError(f"words must be [B={batch}, T, E] and word_mask [B, T]; got {words.shape}, "
                         f"{word_mask.shape}.")
    group = self.batch_norm_group_size
    dense = lambda n, name: nn.Dense(n, dtype=dtype, kernel_init=layers.default_kernel_init, name=name)

    z = z.astype(dtype)
    gc = jnp.concatenate([dense(self.z_dim, "sentence_proj")(sentence.astype(dtype)), z], axis=-1)
    mults = tuple(self.channel_multipliers) or CHANNEL_MULTIPLIERS[self.image_size]
    stem_width = self.gf_dim * mults[0]
    x = dense(stem_width * 4 * 4, "stem")(gc if self.stem_sees_sentence else z).reshape(batch, 4, 4, stem_width)

    num_global = int(math.log2(self.cond_size // 4))
    for i in range(num_global):
      x = GenBlock(self.gf_dim * mults[i], group, dtype, name=f"block{i}")(x, gc, train)

    size = self.cond_size
    spatial_cond = jnp.broadcast_to(gc[:, None, None, :], (batch, size, size, gc.shape[-1]))
    if self.use_word_attention:
      regions = _conv(words.shape[-1], 1, dtype, "region_proj")(x).reshape(batch, size * size, -1)
      context = word_attention(regions, words, word_mask, self.gamma_for_g, dtype)
      context = context.reshape(batch, size, size, -1)
      spatial_cond = jnp.concatenate([context, spatial_cond], axis=-1)

    # The spatial condition stays at cond_size: each LCBN computes its modulation there and upsamples it.
    for i in range(num_global, len(mults)):
      x = GenSpatialBlock(self.gf_dim * mults[i], group, dtype, name=f"block{i}")(x, spatial_cond, train)

    x = layers.LocalConditionalBatchNorm(group, dtype, name="head_lcbn")(x, spatial_cond, train)
    head_bias = math.atanh(2.0 * self.initial_output_level - 1.0)
    x = _conv(3, 3, dtype, "head_conv", nn.initializers.constant(head_bias))(nn.relu(x))
    return (jnp.tanh(x.astype(jnp.float32)) + 1.0) / 2.0
