"""The FID Inception network (TF inception-2015-12-05 as pytorch-fid runs it) in Flax Linen, NHWC.

Differences from a plain InceptionV3, all required for standard FID numbers: the average pools inside the
Mixed_5*/6b-e/7b blocks exclude the zero padding from their count, Mixed_7c's pool branch is a 3x3 *max* pool
(a quirk of the 2015 graph), BatchNorm uses eps = 1e-3, and there is no input transform. Input: images in
[-1, 1], [B, H, W, 3], H, W >= 75 (the standard is 299, see `features.preprocess`). Output: {'pool3': [B, 2048]}
(spatial mean after Mixed_7c, equal to pool3 / the fixed 8x8 pool at 299 px) and, with `with_logits`,
{'logits': [B, 1008]} = pool3 @ fc (no bias; the IS convention). Layer names follow pytorch-fid
(Conv2d_1a_3x3, Mixed_6b/branch7x7dbl_4, ...); `layer_name_map` gives each one's TF-graph name (as in
fid-helper's TorchScript), and `inception_weights.py` fills them from the real weights.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

BN_EPSILON = 1e-3
POOL3_DIM = 2048
NUM_LOGITS = 1008
MIN_IMAGE_SIZE = 75

Pad = tuple[int, int]


class ConvBN(nn.Module):
  """Conv (no bias) -> inference BatchNorm (TF style, eps 1e-3) -> ReLU. `padding` = symmetric zero pad (h, w)."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: Pad = (0, 0)
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
                        (kh, kw, x.shape[-1], self.features))
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,)).value
    var = self.variable("batch_stats", "var", jnp.ones, (self.features,)).value
    ph, pw = self.padding
    y = lax.conv_general_dilated(x, kernel, (self.strides, self.strides), ((ph, ph), (pw, pw)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    inv = scale * lax.rsqrt(var + BN_EPSILON)
    return nn.relu(y * inv + (bias - mean * inv))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3, stride 1, pad 1, padding excluded from the count (torch count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d (35x35): 64 + 64 + 96 + pool_features channels."""
  pool_features: int
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, p=(0, 0), name=None: ConvBN(f, k, padding=p, precision=self.precision, name=name)
    b1 = conv(64, (1, 1), name="branch1x1")(x)
    b5 = conv(48, (1, 1), name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), (2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), (1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), (1, 1), name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (35 -> 17): 384 + 96 + input channels."""
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(384, (3, 3), strides=2, precision=self.precision, name="branch3x3")(x)
    bd = ConvBN(64, (1, 1), precision=self.precision, name="branch3x3dbl_1")(x)
    bd = ConvBN(96, (3, 3), padding=(1, 1), precision=self.precision, name="branch3x3dbl_2")(bd)
    bd = ConvBN(96, (3, 3), strides=2, precision=self.precision, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e (17x17): 4 x 192 channels; `channels_7x7` is the width of the factorised 7x7 towers."""
  channels_7x7: int
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    conv = lambda f, k, p=(0, 0), name=None: ConvBN(f, k, padding=p, precision=self.precision, name=name)
    b1 = conv(192, (1, 1), name="branch1x1")(x)
    b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), (0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), (3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), (3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), (0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), (3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), (0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (17 -> 8): 320 + 192 + input channels."""
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, p=(0, 0), s=1, name=None: ConvBN(f, k, s, p, precision=self.precision, name=name)
    b3 = conv(192, (1, 1), name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), s=2, name="branch3x3_2")(b3)
    b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), (0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), (3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), s=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/7c (8x8): 320 + 2x384 + 2x384 + 192 = 2048 channels. `max_pool` selects Mixed_7c's quirk."""
  max_pool: bool = False
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, p=(0, 0), name=None: ConvBN(f, k, padding=p, precision=self.precision, name=name)
    b1 = conv(320, (1, 1), name="branch1x1")(x)
    b3 = conv(384, (1, 1), name="branch3x3_1")(x)
    b3a = conv(384, (1, 3), (0, 1), name="branch3x3_2a")(b3)
    b3b = conv(384, (3, 1), (1, 0), name="branch3x3_2b")(b3)
    bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), (1, 1), name="branch3x3dbl_2")(bd)
    bda = conv(384, (1, 3), (0, 1), name="branch3x3dbl_3a")(bd)
    bdb = conv(384, (3, 1), (1, 0), name="branch3x3dbl_3b")(bd)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = conv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """The FID Inception: [B, H, W, 3] in [-1, 1] -> {'pool3': [B, 2048]} (+ 'logits': [B, 1008])."""
  with_logits: bool = False
  precision: Any = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3 expects NHWC RGB images [B, H, W, 3], got shape {x.shape}.")
    if min(x.shape[1:3]) < MIN_IMAGE_SIZE:
      raise ValueError(f"FIDInceptionV3 needs images of at least {MIN_IMAGE_SIZE} px, got {x.shape[1:3]}; "
                       "resize to 299 first (features.preprocess).")
    prec = self.precision
    x = x.astype(jnp.float32)
    x = ConvBN(32, (3, 3), strides=2, precision=prec, name="Conv2d_1a_3x3")(x)
    x = ConvBN(32, (3, 3), precision=prec, name="Conv2d_2a_3x3")(x)
    x = ConvBN(64, (3, 3), padding=(1, 1), precision=prec, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = ConvBN(80, (1, 1), precision=prec, name="Conv2d_3b_1x1")(x)
    x = ConvBN(192, (3, 3), precision=prec, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, precision=prec, name="Mixed_5b")(x)
    x = InceptionA(64, precision=prec, name="Mixed_5c")(x)
    x = InceptionA(64, precision=prec, name="Mixed_5d")(x)
    x = InceptionB(precision=prec, name="Mixed_6a")(x)
    x = InceptionC(128, precision=prec, name="Mixed_6b")(x)
    x = InceptionC(160, precision=prec, name="Mixed_6c")(x)
    x = InceptionC(160, precision=prec, name="Mixed_6d")(x)
    x = InceptionC(192, precision=prec, name="Mixed_6e")(x)
    x = InceptionD(precision=prec, name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, precision=prec, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, precision=prec, name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    out = {"pool3": pool3}
    if self.with_logits:
      out["logits"] = nn.Dense(NUM_LOGITS, use_bias=False, precision=prec, name="fc")(pool3)
    return out


def abstract_variables(with_logits: bool = False, image_size: int = 299) -> dict:
  """Shapes/dtypes of the variables tree (jax.ShapeDtypeStruct leaves), without allocating anything."""
  model = FIDInceptionV3(with_logits=with_logits)
  dummy = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)


def check_variables(variables: dict, with_logits: bool) -> None:
  """Raises ValueError naming the first mismatch if `variables` do not fit `FIDInceptionV3(with_logits)`."""
  expected = abstract_variables(with_logits)
  got_paths = {jax.tree_util.keystr(p): tuple(getattr(v, "shape", ())) for p, v in
               jax.tree_util.tree_leaves_with_path(variables)}
  want_paths = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in
                jax.tree_util.tree_leaves_with_path(expected)}
  missing = sorted(set(want_paths) - set(got_paths))
  extra = sorted(set(got_paths) - set(want_paths))
  if missing or extra:
    raise ValueError(f"Inception variables do not match the network: missing {missing[:3]}, extra {extra[:3]}.")
  for key, shape in want_paths.items():
    if got_paths[key] != shape:
      raise ValueError(f"Inception variable {key} has shape {got_paths[key]}, expected {shape}.")


# --------------------------------------------------------------------------------------------------------------
# Layer names: pytorch-fid name (ours) -> TF graph name (as fid-helper's TorchScript spells it).


def _block_layers(kind: str) -> dict[str, str]:
  """pytorch-fid branch name -> TorchScript sub-name inside one Inception block of type A..E."""
  if kind == "A":
    return {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
            "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
            "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
  if kind == "B":
    return {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
            "branch3x3dbl_3": "tower.conv_2"}
  if kind == "C":
    layers = {"branch1x1": "conv", "branch_pool": "tower_2.conv"}
    layers.update({f"branch7x7_{i + 1}": f"tower.{_tf_conv(i)}" for i in range(3)})
    layers.update({f"branch7x7dbl_{i + 1}": f"tower_1.{_tf_conv(i)}" for i in range(5)})
    return layers
  if kind == "D":
    layers = {f"branch3x3_{i + 1}": f"tower.{_tf_conv(i)}" for i in range(2)}
    layers.update({f"branch7x7x3_{i + 1}": f"tower_1.{_tf_conv(i)}" for i in range(4)})
    return layers
  if kind == "E":
    return {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
            "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
            "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
            "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
  raise ValueError(kind)


def _tf_conv(i: int) -> str:
  return "conv" if i == 0 else f"conv_{i}"


# pytorch-fid top-level name -> (TF name, block type or None for a stem conv).
_TOP_LEVEL = (
    ("Conv2d_1a_3x3", "conv", None), ("Conv2d_2a_3x3", "conv_1", None), ("Conv2d_2b_3x3", "conv_2", None),
    ("Conv2d_3b_1x1", "conv_3", None), ("Conv2d_4a_3x3", "conv_4", None),
    ("Mixed_5b", "mixed", "A"), ("Mixed_5c", "mixed_1", "A"), ("Mixed_5d", "mixed_2", "A"),
    ("Mixed_6a", "mixed_3", "B"), ("Mixed_6b", "mixed_4", "C"), ("Mixed_6c", "mixed_5", "C"),
    ("Mixed_6d", "mixed_6", "C"), ("Mixed_6e", "mixed_7", "C"), ("Mixed_7a", "mixed_8", "D"),
    ("Mixed_7b", "mixed_9", "E"), ("Mixed_7c", "mixed_10", "E"),
)


def layer_name_map() -> dict[tuple[str, ...], str]:
  """Every conv layer: Flax path (pytorch-fid names, e.g. ('Mixed_6b', 'branch7x7dbl_4')) -> TF dotted name
  (e.g. 'mixed_4.tower_1.conv_3'). 94 entries."""
  names = {}
  for top, tf_top, kind in _TOP_LEVEL:
    if kind is None:
      names[(top,)] = tf_top
    else:
      for branch, tf_sub in _block_layers(kind).items():
        names[(top, branch)] = f"{tf_top}.{tf_sub}"
  return names
