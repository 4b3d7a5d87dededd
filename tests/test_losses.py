"""Tests of xmc_gan_jax.losses against the float64 numpy reference in tests/numpy_losses.py and hand cases."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpy_losses as ref
from xmc_gan_jax import losses

RTOL = 1e-5


def _close(actual, expected, rtol=RTOL, atol=1e-6):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def _paired_features(n=8, d=16, noise=1.0, seed=0):
  """a and b = a + noise, so that accuracy is neither 0 nor 1 in general."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, d)).astype(np.float32)
  b = (a + noise * rng.normal(size=(n, d))).astype(np.float32)
  return a, b


def _word_region_inputs(seed=0, n=8, t=6, r=5, e=8, lengths=(1, 6, 3, 4, 2, 5, 6, 1), garbage=100.0):
  """Captions of variable length (incl. length 1) with garbage in padded positions; regions share directions
  with their caption's words so that scores are informative."""
  rng = np.random.default_rng(seed)
  words = rng.normal(size=(n, t, e)).astype(np.float32)
  mask = (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
  regions = rng.normal(size=(n, r, e))
  for i in range(n):
    regions[i, :2] += 1.5 * words[i, :1]
  words = np.where(mask[..., None] == 1, words, garbage * rng.normal(size=words.shape)).astype(np.float32)
  return words, mask, regions.astype(np.float32)


# ---- l2_normalize -----------------------------------------------------------------------------------------


def test_l2_normalize_unit_norm_and_zero_vector_safe():
  x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
  y = np.asarray(losses.l2_normalize(jnp.asarray(x)))
  np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(losses.l2_normalize(v) * jnp.array([1.0, 2.0])))(jnp.zeros((2,)))
  assert np.all(np.isfinite(np.asarray(grad)))


def test_l2_normalize_keeps_bf16_dtype():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32)), jnp.bfloat16)
  y = losses.l2_normalize(x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.linalg.norm(np.asarray(y, np.float32), axis=-1), 1.0, rtol=1e-2)


# ---- hinge ------------------------------------------------------------------------------------------------


def test_hinge_losses_match_numpy():
  rng = np.random.default_rng(1)
  real = rng.normal(size=(8,)).astype(np.float32) * 2
  fake = rng.normal(size=(8,)).astype(np.float32) * 2
  _close(losses.hinge_d_loss(real, fake), ref.hinge_d(real, fake))
  _close(losses.hinge_g_loss(fake), ref.hinge_g(fake))


def test_hinge_hand_values():
  # relu(1-2)=0, relu(1-0)=1 -> 0.5 ; relu(1-1)=0, relu(1+1)=2 -> 1.0
  _close(losses.hinge_d_loss(jnp.array([2.0, 0.0]), jnp.array([-1.0, 1.0])), 1.5)
  _close(losses.hinge_g_loss(jnp.array([[1.0], [3.0]])), -2.0)


# ---- sentence / image InfoNCE ----------------------------------------------------------------------------


@pytest.mark.parametrize("group_size", [0, 2, 4])
def test_contrastive_matches_numpy(group_size):
  a, b = _paired_features(seed=group_size)
  loss, metrics = losses.contrastive_loss(a, b, temperature=0.1, group_size=group_size)
  want_loss, want_acc, want_ent = ref.contrastive(a, b, 0.1, group_size)
  _close(loss, want_loss)
  _close(metrics["accuracy"], want_acc)
  _close(metrics["entropy"], want_ent)
  assert loss.dtype == jnp.float32 and loss.shape == ()


def test_contrastive_group_differs_from_whole_batch():
  a, b = _paired_features(seed=3)
  whole, _ = losses.contrastive_loss(a, b, group_size=0)
  grouped, _ = losses.contrastive_loss(a, b, group_size=2)
  assert abs(float(whole) - float(grouped)) > 1e-3


def test_contrastive_perfect_alignment():
  n = 8
  a = 3.0 * np.eye(n, dtype=np.float32)   # orthogonal rows; scale is removed by the normalisation
  loss, metrics = losses.contrastive_loss(a, a, temperature=0.1)
  want = 2 * math.log(1 + (n - 1) * math.exp(-10.0))
  _close(loss, want, rtol=1e-4)
  assert float(loss) < 1e-3
  assert float(metrics["accuracy"]) == 1.0


def test_contrastive_identical_rows_gives_2_log_n():
  n = 8
  a = np.tile(np.arange(1.0, 5.0, dtype=np.float32), (n, 1))
  loss, metrics = losses.contrastive_loss(a, a)
  _close(loss, 2 * math.log(n))
  _close(metrics["entropy"], math.log(n))


def test_contrastive_gradient_matches_finite_differences():
  a, b = _paired_features(n=4, d=5, seed=7)
  grad = np.asarray(jax.grad(lambda x: losses.contrastive_loss(x, b, group_size=2)[0])(a))
  a64, h = a.astype(np.float64), 1e-5
  for idx in [(0, 0), (1, 3), (3, 4)]:
    plus, minus = a64.copy(), a64.copy()
    plus[idx] += h
    minus[idx] -= h
    fd = (ref.contrastive(plus, b, 0.1, 2)[0] - ref.contrastive(minus, b, 0.1, 2)[0]) / (2 * h)
    np.testing.assert_allclose(grad[idx], fd, rtol=1e-3, atol=1e-5)


# ---- word-region ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group_size", [0, 2])
def test_word_region_matches_numpy(group_size):
  words, mask, regions = _word_region_inputs(seed=10 + group_size)
  loss, metrics = losses.word_region_loss(words, mask, regions, group_size=group_size)
  want_loss, want_acc, want_ent = ref.word_region(words, mask, regions, 5.0, 5.0, 50.0, group_size)
  _close(loss, want_loss)
  _close(metrics["accuracy"], want_acc)
  _close(metrics["entropy"], want_ent)
  assert loss.dtype == jnp.float32 and loss.shape == ()


def test_word_region_other_gammas_match_numpy():
  words, mask, regions = _word_region_inputs(seed=4)
  loss, _ = losses.word_region_loss(words, mask, regions, gamma1=2.0, gamma2=10.0, gamma3=7.0, group_size=4)
  _close(loss, ref.word_region(words, mask, regions, 2.0, 10.0, 7.0, 4)[0])


def test_word_region_score_hand_case():
  # One word per caption, e_i; image j has every region along e_j: cos = delta_ij, so S = delta and
  # logits = 50 * I -> loss = 2 log(1 + (n-1) e^-50) ~ 0, accuracy 1.
  n = 4
  words = np.eye(n, dtype=np.float32)[:, None, :]
  regions = np.repeat(2.0 * np.eye(n, dtype=np.float32)[:, None, :], 3, axis=1)
  loss, metrics = losses.word_region_loss(words, np.ones((n, 1)), regions)
  assert float(loss) < 1e-6
  assert float(metrics["accuracy"]) == 1.0


@pytest.mark.slow
def test_word_region_padded_garbage_changes_nothing():
  words, mask, regions = _word_region_inputs(seed=5, garbage=0.0)
  noisy = np.where(mask[..., None] == 1, words, 1e4 * np.random.default_rng(1).normal(size=words.shape))
  with_nan = np.where(mask[..., None] == 1, words, np.nan)

  def loss_fn(w, r):
    return losses.word_region_loss(w, mask, r, group_size=4)[0]

  clean_loss, (clean_gw, clean_gr) = jax.value_and_grad(loss_fn, argnums=(0, 1))(words, regions)
  for other in (noisy.astype(np.float32), with_nan.astype(np.float32)):
    other_loss, (gw, gr) = jax.value_and_grad(loss_fn, argnums=(0, 1))(other, regions)
    assert float(other_loss) == float(clean_loss)
    np.testing.assert_array_equal(np.asarray(gw), np.asarray(clean_gw))
    np.testing.assert_array_equal(np.asarray(gr), np.asarray(clean_gr))


def test_word_region_zero_padding_gives_finite_gradients():
  words, mask, regions = _word_region_inputs(seed=6, garbage=0.0)
  assert np.all(words[mask == 0] == 0)
  gw, gr = jax.grad(lambda w, r: losses.word_region_loss(w, mask, r)[0], argnums=(0, 1))(words, regions)
  gw, gr = np.asarray(gw), np.asarray(gr)
  assert np.all(np.isfinite(gw)) and np.all(np.isfinite(gr))
  assert np.all(gw[mask == 0] == 0)
  assert np.abs(gw[mask == 1]).max() > 0


@pytest.mark.slow
def test_word_region_gradient_matches_finite_differences():
  words, mask, regions = _word_region_inputs(seed=8, n=4, t=3, r=3, e=4, lengths=(1, 3, 2, 3), garbage=0.0)
  grad = np.asarray(jax.grad(lambda r: losses.word_region_loss(words, mask, r, gamma3=10.0)[0])(regions))
  r64, h = regions.astype(np.float64), 1e-5
  for idx in [(0, 0, 0), (2, 1, 3), (3, 2, 1)]:
    plus, minus = r64.copy(), r64.copy()
    plus[idx] += h
    minus[idx] -= h
    fd = (ref.word_region(words, mask, plus, 5.0, 5.0, 10.0)[0]
          - ref.word_region(words, mask, minus, 5.0, 5.0, 10.0)[0]) / (2 * h)
    np.testing.assert_allclose(grad[idx], fd, rtol=2e-3, atol=1e-4)


# ---- errors, jit, dtypes -----------------------------------------------------------------------------------


def test_bad_group_size_raises():
  a, b = _paired_features(n=6)
  with pytest.raises(ValueError, match="not divisible"):
    losses.contrastive_loss(a, b, group_size=4)
  with pytest.raises(ValueError, match="group_size"):
    losses.contrastive_loss(a, b, group_size=-1)
  words, mask, regions = _word_region_inputs()
  with pytest.raises(ValueError, match="not divisible"):
    losses.word_region_loss(words, mask, regions, group_size=3)


def test_bad_shapes_and_empty_caption_raise():
  a, b = _paired_features(n=8)
  with pytest.raises(ValueError, match="equal shape"):
    losses.contrastive_loss(a, b[:, :4])
  words, mask, regions = _word_region_inputs()
  with pytest.raises(ValueError, match="inconsistent"):
    losses.word_region_loss(words, mask[:, :3], regions)
  with pytest.raises(ValueError, match="inconsistent"):
    losses.word_region_loss(words, mask, regions[..., :3])
  empty = mask.copy()
  empty[2] = 0
  with pytest.raises(ValueError, match="at least one real word"):
    losses.word_region_loss(words, empty, regions)


def test_jit_matches_eager():
  a, b = _paired_features(seed=11)
  words, mask, regions = _word_region_inputs(seed=11)
  jit_c = jax.jit(functools.partial(losses.contrastive_loss, temperature=0.1, group_size=4))
  jit_w = jax.jit(functools.partial(losses.word_region_loss, group_size=2))
  for jitted, eager in ((jit_c(a, b), losses.contrastive_loss(a, b, group_size=4)),
                        (jit_w(words, mask, regions), losses.word_region_loss(words, mask, regions, group_size=2))):
    _close(jitted[0], float(eager[0]))
    _close(jitted[1]["accuracy"], float(eager[1]["accuracy"]))
    # Near one-hot rows: the entropy (~0.01 nats) sums p * log p with log p from a float32 log-softmax of logits
    # of tens, so fused and unfused code differ by ~1e-6 nats absolute (1.5e-6 seen on an AVX2-only CPU).
    _close(jitted[1]["entropy"], float(eager[1]["entropy"]), atol=1e-5)
  _close(jax.jit(losses.hinge_d_loss)(a[:, 0], b[:, 0]), ref.hinge_d(a[:, 0], b[:, 0]))


def test_bf16_inputs_give_float32_losses_close_to_f32():
  a, b = _paired_features(seed=12)
  words, mask, regions = _word_region_inputs(seed=12)
  f32_c = losses.contrastive_loss(a, b)[0]
  bf_c = losses.contrastive_loss(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))[0]
  f32_w = losses.word_region_loss(words, mask, regions)[0]
  bf_w = losses.word_region_loss(jnp.asarray(words, jnp.bfloat16), mask, jnp.asarray(regions, jnp.bfloat16))[0]
  bf_h = losses.hinge_d_loss(jnp.asarray(a[:, 0], jnp.bfloat16), jnp.asarray(b[:, 0], jnp.bfloat16))
  assert bf_c.dtype == jnp.float32 and bf_w.dtype == jnp.float32 and bf_h.dtype == jnp.float32
  np.testing.assert_allclose(float(bf_c), float(f32_c), rtol=2e-2)
  np.testing.assert_allclose(float(bf_w), float(f32_w), rtol=5e-2)


def test_word_region_loss_with_a_concrete_mask_closed_over_in_jit():
  """A concrete mask captured by a jitted function (not a traced argument) is still checked, in numpy."""
  words, mask, regions = _word_region_inputs(seed=12)
  mask_array = jnp.asarray(mask)
  jitted = jax.jit(lambda w, r: losses.word_region_loss(w, mask_array, r)[0])
  _close(jitted(words, regions), float(losses.word_region_loss(words, mask, regions)[0]))
  empty = jnp.asarray(mask).at[1].set(0)
  with pytest.raises(ValueError, match="at least one real word"):
    jax.jit(lambda w, r: losses.word_region_loss(w, empty, r)[0])(words, regions)
