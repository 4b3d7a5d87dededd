"""Building blocks shared by the XMC-GAN generator and discriminator (Flax Linen).

- `GroupBatchNorm`: BatchNorm whose training statistics are taken per group of consecutive examples, which
  reproduces the original's per-device BatchNorm under `jit` (where the batch is global).
- `ConditionalBatchNorm` / `LocalConditionalBatchNorm`: BN without own affine, modulated as x * (1 + gamma) + beta,
  with gamma/beta predicted from a global [B, D] or a spatial [B, H, W, D] condition.
- `SpectralDense` / `SpectralConv`: spectral normalisation by one power iteration per call, as in the original
  (u of shape (1, out) in collection `spectral_norm_stats`, eps 1e-10 as TF).
- `upsample_nearest`, `avg_pool_2x2`, `safe_l2_normalize`: stateless helpers.

Images are NHWC. Parameters are float32; convolutions and matmuls run in `dtype` (e.g. bfloat16), statistics in
float32; the float32 matmuls (spectral norm, BatchNorm groups) run under the named scopes of
`precision.FLOAT32_EXCEPTIONS`.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xmc_gan_jax.models import precision as policy

Dtype = Any

default_kernel_init = nn.initializers.glorot_normal()
_SN_EPS = 1e-10  # Spectral-norm epsilon of the original ("same as TF").


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling of [B, H, W, C] to [B, H*factor, W*factor, C]."""
  if x.ndim != 4:
    raise ValueError(f"upsample_nearest expects [B, H, W, C], got shape {x.shape}.")
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """TF-style 2x2 average pooling, stride 2: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C].

  Padding cells (only present for odd H or W, TF 'SAME') are excluded from the average; on even sizes this is
  plain VALID pooling.
  """
  if x.ndim != 4:
    raise ValueError(f"avg_pool_2x2 expects [B, H, W, C], got shape {x.shape}.")
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)


def safe_l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / ||x|| along `axis`, as x * rsqrt(max(sum x^2, eps)): all-zero vectors give zeros, never NaN (or NaN grads)."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, jnp.asarray(eps, sq.dtype)))


def _group_average_matrix(batch: int, group: int) -> jax.Array:
  """[batch, batch] float32 matrix with 1/group where two examples share a group of `group` consecutive ones."""
  ids = jnp.arange(batch) // group
  return (ids[:, None] == ids[None, :]).astype(jnp.float32) / group


class GroupBatchNorm(nn.Module):
  """BatchNorm over the last axis with statistics per group of `group_size` consecutive examples.

  Input [B, ..., C] (NHWC or [B, C]). In training, each group of `group_size` consecutive examples along the batch
  axis is normalised with its own mean and (biased) variance over the batch and spatial axes, computed in float32;
  `group_size=0` uses the whole batch as one group. Running statistics (`batch_stats`: `mean`, `var`, shape [C])
  follow r = momentum * r + (1 - momentum) * (mean over groups of the group statistics); they are not updated while
  initialising. In eval (`train=False`) the running statistics are used.

  Attributes:
    group_size: examples per statistics group (0 = whole batch). The batch must be divisible by it.
    momentum: running-average decay.
    epsilon: added to the variance.
    use_scale_bias: learn a per-channel scale (init 1) and bias (init 0).
    dtype: output/compute dtype (statistics are float32 regardless).
  """
  group_size: int = 0
  momentum: float = 0.9
  epsilon: float = 1e-5
  use_scale_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if x.ndim < 2:
      raise ValueError(f"GroupBatchNorm expects [B, ..., C], got shape {x.shape}.")
    batch, channels = x.shape[0], x.shape[-1]
    if self.group_size < 0:
      raise ValueError(f"group_size must be >= 0 (0 = whole batch), got {self.group_size}.")
    group = self.group_size or batch
    if batch % group != 0:
      raise ValueError(
          f"Batch size {batch} is not divisible by the BatchNorm group size {group}; change "
          f"config.model.batch_norm_group_size or the batch size (0 = whole batch as one group).")
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((channels,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((channels,), jnp.float32))
    xf = x.astype(jnp.float32)
    if train:
      # Per-example statistics [B, C], averaged within groups by a block-diagonal [B, B] matrix. Unlike a
      # [B/g, g, ...] reshape, this works for any sharding of the batch axis (also under explicit meshes).
      spatial = tuple(range(1, x.ndim - 1))
      if group == batch:
        average = lambda s: jnp.broadcast_to(jnp.mean(s, axis=0, keepdims=True), s.shape)
      else:
        groups = _group_average_matrix(batch, group)
        def average(s):
          with policy.float32_scope("f32_batch_norm_groups"):
            return jnp.matmul(groups, s, precision=jax.lax.Precision.HIGHEST)
      expand = lambda s: s.reshape((batch,) + (1,) * len(spatial) + (channels,))
      mean = average(jnp.mean(xf, axis=spatial))  # [B, C], each row = its group's mean
      centred = xf - expand(mean)
      var = average(jnp.mean(jnp.square(centred), axis=spatial))  # [B, C], group (biased) variance
      if not self.is_initializing():
        # Groups have equal sizes, so the mean over examples equals the mean over groups.
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * jnp.mean(mean, axis=0)
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * jnp.mean(var, axis=0)
      y = centred * expand(jax.lax.rsqrt(var + self.epsilon))
    else:
      y = (xf - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
    y = y.astype(self.dtype)
    if self.use_scale_bias:
      scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
      bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
      y = y * scale.astype(self.dtype) + bias.astype(self.dtype)
    return y


class ConditionalBatchNorm(nn.Module):
  """x [B, H, W, C], cond [B, D] -> BN(x) * (1 + gamma) + beta, gamma/beta = two Dense(C)(cond).

  BN has no own scale/offset (momentum 0.9, eps 1e-5, statistics per `group_size` examples).
  """
  group_size: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    if cond.ndim != 2 or cond.shape[0] != x.shape[0]:
      raise ValueError(f"ConditionalBatchNorm: cond must be [B, D] with B={x.shape[0]}, got {cond.shape}.")
    channels = x.shape[-1]
    dense = lambda name: nn.Dense(channels, dtype=self.dtype, kernel_init=default_kernel_init, name=name)
    gamma = dense("gamma")(cond)[:, None, None, :]
    beta = dense("beta")(cond)[:, None, None, :]
    y = GroupBatchNorm(self.group_size, use_scale_bias=False, dtype=self.dtype, name="bn")(x, train)
    return y * (gamma + 1.0) + beta


class LocalConditionalBatchNorm(nn.Module):
  """x [B, H, W, C], cond [B, H/f, W/f, Dc] -> BN(x) * (1 + gamma) + beta, gamma/beta = two 1x1 Conv(C)(cond).

  Per-pixel modulation ("attentional self-modulation"); BN as in `ConditionalBatchNorm`. The condition may be
  coarser than x by an integer factor f: gamma/beta are computed at the condition's resolution and then
  nearest-upsampled, which equals applying the 1x1 convs to the nearest-upsampled condition (a 1x1 conv acts per
  pixel) at 1/f^2 of the cost: at 32 px with a 16x16 condition of 640 channels this is most of the generator's
  modulation FLOPs.
  """
  group_size: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    factor = x.shape[1] // cond.shape[1] if cond.ndim == 4 and cond.shape[1] else 0
    if (cond.ndim != 4 or cond.shape[0] != x.shape[0] or factor < 1 or cond.shape[1] * factor != x.shape[1]
        or cond.shape[2] * factor != x.shape[2]):
      raise ValueError(f"LocalConditionalBatchNorm: cond must be [B, H/f, W/f, D] matching x {x.shape[:3]} for an "
                       f"integer factor f >= 1, got {cond.shape}.")
    channels = x.shape[-1]
    conv = lambda name: nn.Conv(channels, (1, 1), dtype=self.dtype, kernel_init=default_kernel_init, name=name)
    gamma = conv("gamma")(cond)
    beta = conv("beta")(cond)
    if factor > 1:
      gamma, beta = upsample_nearest(gamma, factor), upsample_nearest(beta, factor)
    y = GroupBatchNorm(self.group_size, use_scale_bias=False, dtype=self.dtype, name="bn")(x, train)
    return y * (gamma + 1.0) + beta


def _power_normalize(x: jax.Array) -> jax.Array:
  """Whole-array L2 normalisation x * rsqrt(sum x^2 + 1e-10), the power-iteration normaliser of the original."""
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x)) + _SN_EPS)


def _spectral_normalize(module: nn.Module, kernel: jax.Array, update_stats: bool) -> jax.Array:
  """Returns kernel / sigma(kernel) after one power iteration on the (kh*kw*in, out) matrix (float32).

  u [1, out] lives in `spectral_norm_stats/u`, initialised N(0, 1) from the `params` rng and written back only
  when `update_stats` is true (and not while initialising). u and v are treated as constants for gradients.
  """
  out = kernel.shape[-1]
  w = kernel.reshape(-1, out).astype(jnp.float32)
  u_var = module.variable("spectral_norm_stats", "u",
                          lambda: jax.random.normal(module.make_rng("params"), (1, out), jnp.float32))
  hi = jax.lax.Precision.HIGHEST
  with policy.float32_scope("f32_spectral_norm"):
    v = _power_normalize(jnp.matmul(u_var.value, w.T, precision=hi))
    u = _power_normalize(jnp.matmul(v, w, precision=hi))
    u = jax.lax.stop_gradient(u)
    v = jax.lax.stop_gradient(v)
    if update_stats and not module.is_initializing():
      u_var.value = u
    sigma = jnp.matmul(jnp.matmul(v, w, precision=hi), u.T, precision=hi)[0, 0]
  return (w / (sigma + _SN_EPS)).reshape(kernel.shape)


class SpectralDense(nn.Module):
  """Spectrally normalised Dense: [..., in] -> [..., features]. Glorot-normal kernel, zero bias.

  Call with `update_stats=True` (training, `mutable=['spectral_norm_stats']`) to advance the power iteration.
  """
  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    kernel = self.param("kernel", default_kernel_init, (x.shape[-1], self.features), jnp.float32)
    kernel = _spectral_normalize(self, kernel, update_stats).astype(self.dtype)
    y = jnp.matmul(x.astype(self.dtype), kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y


class SpectralConv(nn.Module):
  """Spectrally normalised 2-D convolution, stride 1, SAME padding: [B, H, W, in] -> [B, H, W, features].

  Kernel (kh, kw, in, features) is normalised as the (kh*kw*in, features) matrix. Glorot-normal kernel, zero bias.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"SpectralConv expects [B, H, W, C], got shape {x.shape}.")
    shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param("kernel", default_kernel_init, shape, jnp.float32)
    kernel = _spectral_normalize(self, kernel, update_stats).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y
