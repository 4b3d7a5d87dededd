"""XMC-GAN losses as pure JAX functions: hinge, sentence/image InfoNCE and DAMSM-style word-region loss.

All functions are pure and jit-able and import no TensorFlow. Inputs may be bfloat16; every loss is computed in
(at least) float32 and returned as a float32 scalar (float64 when jax_enable_x64 is on and inputs are float64).
The similarity einsums are float32 at Precision.HIGHEST (f32-accurate also on TPU, whose DEFAULT f32 matmul is one
bf16 pass), under the named scope "f32_contrastive_logits" of `models.precision.FLOAT32_EXCEPTIONS`.

Group size. The original ran under pmap with 8 examples per device, so contrastive negatives came only from the
local device batch. Under one global jit the batch axis is global; `group_size=g > 0` splits the N examples into
N/g consecutive groups and draws negatives only inside each group, which reproduces the per-device semantics when
the batch is laid out device-major. `group_size=0` uses the whole batch as one group.

Metrics returned by the contrastive losses (float32 scalars):
  accuracy: mean of row-argmax accuracy and column-argmax accuracy (the diagonal is the positive).
  entropy:  mean softmax entropy of the rows of the logits, in nats.
"""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from xmc_gan_jax.models import precision as policy

Metrics = Dict[str, jax.Array]


_SCOPE = "f32_contrastive_logits"
_HI = jax.lax.Precision.HIGHEST


def _compute_dtype(*xs) -> jnp.dtype:
  """The dtype losses are computed in: the inputs' common float type, at least float32."""
  dtype = jnp.result_type(*xs)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return jnp.promote_types(dtype, jnp.float32)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Returns x / ||x|| along `axis`, as x * rsqrt(max(sum(x^2), eps)).

  Safe for all-zero vectors: they map to zero with a finite gradient (no NaN). The squared norm is accumulated
  in at least float32; the result has x's dtype.
  """
  x = jnp.asarray(x)
  xf = x.astype(_compute_dtype(x))
  sq = jnp.sum(jnp.square(xf), axis=axis, keepdims=True)
  return (xf * jax.lax.rsqrt(jnp.maximum(sq, eps))).astype(x.dtype)


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator hinge loss: mean(relu(1 - real)) + mean(relu(1 + fake)).

  Args:
    real_logits: D logits on real images, any shape (typically [N] or [N, 1]).
    fake_logits: D logits on generated images, any shape.
  Returns:
    A scalar in at least float32.
  """
  real = jnp.asarray(real_logits)
  fake = jnp.asarray(fake_logits)
  dtype = _compute_dtype(real, fake)
  if real.size == 0 or fake.size == 0:
    raise ValueError(f"hinge_d_loss needs non-empty logits, got shapes {real.shape} and {fake.shape}.")
  return (jnp.mean(jax.nn.relu(1.0 - real.astype(dtype)))
          + jnp.mean(jax.nn.relu(1.0 + fake.astype(dtype))))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
  """Generator hinge loss: -mean(fake_logits). Returns a scalar in at least float32."""
  fake = jnp.asarray(fake_logits)
  if fake.size == 0:
    raise ValueError(f"hinge_g_loss needs non-empty logits, got shape {fake.shape}.")
  return -jnp.mean(fake.astype(_compute_dtype(fake)))


def _num_groups(n: int, group_size: int, name: str) -> int:
  """Number of consecutive groups of `group_size` in a batch of n (group_size 0 = one group)."""
  if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 0:
    raise ValueError(f"{name}: group_size must be an int >= 0 (0 = whole batch), got {group_size!r}.")
  if n == 0:
    raise ValueError(f"{name}: the batch is empty.")
  if group_size == 0:
    return 1
  if n % group_size != 0:
    raise ValueError(
        f"{name}: batch size {n} is not divisible by group_size {group_size}; choose a group size that divides "
        f"the (sub-)batch, or 0 for the whole batch.")
  return n // group_size


def _symmetric_ce(logits: jax.Array) -> Tuple[jax.Array, Metrics]:
  """Symmetric cross-entropy with diagonal targets over a stack of square logit matrices.

  Args:
    logits: [G, g, g] float; logits[k, i, j] scores item i against item j inside group k.
  Returns:
    (loss, metrics): loss = mean over all G*g rows of CE(rows) + mean of CE(columns); metrics `accuracy` and
    `entropy` as described in the module docstring.
  """
  g = logits.shape[-1]
  row_logp = jax.nn.log_softmax(logits, axis=-1)
  col_logp = jax.nn.log_softmax(logits, axis=-2)
  row_ce = -jnp.mean(jnp.diagonal(row_logp, axis1=-2, axis2=-1))
  col_ce = -jnp.mean(jnp.diagonal(col_logp, axis1=-2, axis2=-1))
  loss = row_ce + col_ce

  target = jnp.arange(g)
  row_acc = jnp.mean((jnp.argmax(logits, axis=-1) == target).astype(jnp.float32))
  col_acc = jnp.mean((jnp.argmax(logits, axis=-2) == target).astype(jnp.float32))
  row_entropy = -jnp.sum(jnp.exp(row_logp) * row_logp, axis=-1)
  metrics = {
      "accuracy": 0.5 * (row_acc + col_acc),
      "entropy": jnp.mean(row_entropy),
  }
  return loss, metrics


def contrastive_loss(a: jax.Array, b: jax.Array, temperature: float = 0.1,
                     group_size: int = 0) -> Tuple[jax.Array, Metrics]:
  """Symmetric InfoNCE between paired rows of a and b, as in the original (both directions summed).

  Both sides are L2-normalised; logits = a . b^T / temperature inside each group; row i of a is the positive of
  row i of b. loss = CE over rows + CE over columns, each averaged over all rows of all groups.

  Args:
    a: [N, D] features (e.g. image features).
    b: [N, D] features (e.g. sentence features).
    temperature: softmax temperature tau > 0 (the original uses 0.1).
    group_size: negatives come from consecutive groups of this many examples; 0 = the whole batch.
  Returns:
    (loss scalar, {"accuracy", "entropy"}).
  Raises:
    ValueError: on mismatched shapes, N % group_size != 0, or a non-positive temperature.
  """
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(f"contrastive_loss expects a and b of equal shape [N, D], got {a.shape} and {b.shape}.")
  if not temperature > 0:
    raise ValueError(f"contrastive_loss: temperature must be > 0, got {temperature}.")
  n, d = a.shape
  groups = _num_groups(n, group_size, "contrastive_loss")
  dtype = _compute_dtype(a, b)
  a = l2_normalize(a.astype(dtype)).reshape(groups, n // groups, d)
  b = l2_normalize(b.astype(dtype)).reshape(groups, n // groups, d)
  with policy.float32_scope(_SCOPE):
    logits = jnp.einsum("kid,kjd->kij", a, b, precision=_HI) / temperature
  return _symmetric_ce(logits)


def _word_region_scores(words: jax.Array, word_mask: jax.Array, regions: jax.Array, gamma1: float,
                        gamma2: float) -> jax.Array:
  """Matching scores S(i, j) between every text i and image j of each group.

  Args:
    words: [G, g, T, E] L2-normalised word vectors (padded positions already zero).
    word_mask: [G, g, T] bool, True on real words.
    regions: [G, g, R, E] L2-normalised region vectors.
  Returns:
    [G, g, g] scores: S[k, i, j] = (1/gamma2) logsumexp over real words t of text i of
    gamma2 * cos(word_t, c_t), with c_t = sum_r softmax_r(gamma1 cos(word_t, region_r)) region_r of image j.

  cos(word_t, c_t) is computed without materialising c_t ([g, g, T, E]): word_t . c_t = sum_r alpha_r cos_tr and
  |c_t|^2 = alpha^T (regions regions^T) alpha, so the largest temporaries are [G, g, g, T, R].
  """
  with policy.float32_scope(_SCOPE):
    cos_wr = jnp.einsum("kite,kjre->kijtr", words, regions, precision=_HI)       # [G, g, g, T, R]
    alpha = jax.nn.softmax(gamma1 * cos_wr, axis=-1)                               # attention over regions
    dot_wc = jnp.sum(alpha * cos_wr, axis=-1)                                      # word_t . c_t  [G, g, g, T]
    gram = jnp.einsum("kjre,kjse->kjrs", regions, regions, precision=_HI)         # region Gram   [G, g, R, R]
    alpha_gram = jnp.einsum("kijtr,kjrs->kijts", alpha, gram, precision=_HI)      # [G, g, g, T, R]
  norm_sq_c = jnp.sum(alpha_gram * alpha, axis=-1)                     # |c_t|^2            [G, g, g, T]
  cos_wc = dot_wc * jax.lax.rsqrt(jnp.maximum(norm_sq_c, 1e-12))
  mask = jnp.broadcast_to(word_mask[:, :, None, :], cos_wc.shape)
  # Padded words get -inf before the logsumexp; `where` keeps their gradient exactly zero.
  masked = jnp.where(mask, gamma2 * cos_wc, -jnp.inf)
  return jax.nn.logsumexp(masked, axis=-1) / gamma2


def word_region_loss(words: jax.Array, word_mask: jax.Array, regions: jax.Array, gamma1: float = 5.0,
                     gamma2: float = 5.0, gamma3: float = 50.0, group_size: int = 0) -> Tuple[jax.Array, Metrics]:
  """DAMSM-style word-region contrastive loss of the original XMC-GAN (`word_loss`).

  For every text i and image j in a group: words and regions are L2-normalised; each real word t attends over
  the regions with alpha = softmax_r(gamma1 cos(word_t, region_r)); c_t = sum_r alpha_r region_r;
  S(i, j) = (1/gamma2) logsumexp_{real t}(gamma2 cos(word_t, c_t)); logits[i, j] = gamma3 S(i, j) (text i,
  image j). Loss = CE over rows (text -> image) + CE over columns (image -> text), each averaged over all rows
  of all groups. Padded words are fully masked: their values (even NaN) change neither loss nor gradient.

  Memory: O(g^2 * T * R) floats per group of g examples (g = N when group_size = 0), e.g. g=64, T=17, R=256
  is about 71 MB in float32 per temporary; fine for groups up to ~64, large for a whole global batch.

  Args:
    words: [N, T, E] word features (e.g. BERT token outputs).
    word_mask: [N, T], nonzero/True on real words; every caption needs at least one real word.
    regions: [N, R, E] image region features.
    gamma1: attention sharpness over regions (original: 5).
    gamma2: word aggregation sharpness (original: 5).
    gamma3: logit scale (original: 50).
    group_size: negatives come from consecutive groups of this many examples; 0 = the whole batch.
  Returns:
    (loss scalar, {"accuracy", "entropy"}).
  Raises:
    ValueError: on inconsistent shapes, N % group_size != 0, or (for concrete masks) a caption with no real word.
      Under jit an empty caption cannot be detected and yields NaN.
  """
  words = jnp.asarray(words)
  regions = jnp.asarray(regions)
  word_mask = jnp.asarray(word_mask)
  if words.ndim != 3 or regions.ndim != 3 or word_mask.ndim != 2:
    raise ValueError(
        "word_region_loss expects words [N, T, E], word_mask [N, T], regions [N, R, E]; got shapes "
        f"{words.shape}, {word_mask.shape}, {regions.shape}.")
  n, t, e = words.shape
  if word_mask.shape != (n, t) or regions.shape[0] != n or regions.shape[2] != e:
    raise ValueError(
        "word_region_loss: inconsistent shapes words [N, T, E]={}, word_mask [N, T]={}, regions [N, R, E]={}."
        .format(words.shape, word_mask.shape, regions.shape))
  # Checked in numpy: a concrete mask closed over inside a jit would turn jnp results into tracers.
  if not isinstance(word_mask, jax.core.Tracer) and not np.all(np.any(np.asarray(word_mask) != 0, axis=1)):
    raise ValueError("word_region_loss: every caption needs at least one real word (a row of word_mask is all 0).")
  groups = _num_groups(n, group_size, "word_region_loss")
  g = n // groups
  dtype = _compute_dtype(words, regions)
  mask = word_mask != 0
  words = jnp.where(mask[..., None], words.astype(dtype), 0)
  words = l2_normalize(words).reshape(groups, g, t, e)
  regions = l2_normalize(regions.astype(dtype)).reshape(groups, g, regions.shape[1], e)
  logits = gamma3 * _word_region_scores(words, mask.reshape(groups, g, t), regions, gamma1, gamma2)
  return _symmetric_ce(logits)
