"""Tests of the XMC-GAN discriminator: size, shapes, projection head, region features, spectral stats, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import host_variables
from xmc_gan_jax.models.discriminator import Discriminator

E = 12  # tiny text width for behaviour tests


def _inputs(size, batch=2, text_dim=E, seed=0):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
  return images, jnp.asarray(rng.normal(size=(batch, text_dim)), jnp.float32)


_variables = host_variables.host_variables


def _sn_kernel(params, stats):
  """numpy: kernel / sigma after one power iteration from the stored u (the original's formula)."""
  w = np.asarray(params["kernel"], np.float64)
  w = w.reshape(-1, w.shape[-1])
  v = np.asarray(stats["u"], np.float64) @ w.T
  v /= np.linalg.norm(v)
  u = v @ w
  u /= np.linalg.norm(u)
  return w / (v @ w @ u.T)[0, 0]


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("size,expected", [(128, 87.9e6), (256, 99.4e6)])
def test_parameter_count_matches_original(size, expected):
  d = Discriminator(size, df_dim=96, text_dim=768)
  shapes = jax.eval_shape(lambda: d.init(jax.random.key(0), *_inputs(size, text_dim=768), train=False))
  assert set(shapes) == {"params", "spectral_norm_stats"}
  assert abs(_count(shapes["params"]) - expected) / expected < 0.01


def test_init_values():
  d = Discriminator(64, df_dim=4, text_dim=E)
  variables = jax.jit(lambda k, *a: d.init(k, *a, train=False))(jax.random.key(0, impl="unsafe_rbg"), *_inputs(64))
  params, stats = variables["params"], variables["spectral_norm_stats"]
  kernel = np.asarray(params["block2"]["conv0"]["kernel"])  # glorot normal: std sqrt(2 / (fan_in + fan_out))
  np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * kernel.shape[2] + 9 * kernel.shape[3])), rtol=0.15)
  assert all(float(jnp.abs(b).max()) == 0.0 for p, b in jax.tree_util.tree_leaves_with_path(params)
             if p[-1].key == "bias")
  # One u [1, out] per spectrally normalised layer (= per kernel), drawn N(0, 1).
  kernels = {p[:-1]: k.shape[-1] for p, k in jax.tree_util.tree_leaves_with_path(params) if p[-1].key == "kernel"}
  us = {p[:-1]: u.shape for p, u in jax.tree_util.tree_leaves_with_path(stats)}
  assert us == {p: (1, out) for p, out in kernels.items()}
  all_u = np.concatenate([np.ravel(u) for u in jax.tree.leaves(stats)])
  assert abs(all_u.mean()) < 0.15 and abs(all_u.std() - 1.0) < 0.15


@pytest.mark.parametrize("size", [64, 128, 256])
def test_output_shapes(size):
  d = Discriminator(size, df_dim=2, text_dim=E)
  args = _inputs(size)
  variables = _variables(d, *args)
  out, updates = jax.jit(lambda v, *a: d.apply(v, *a, train=True, mutable=["spectral_norm_stats"]))(variables, *args)
  expected = dict(logits=(2,), features=(2, 32), regions=(2, 256, E), sentence_features=(2, 32))
  assert {k: v.shape for k, v in out.items()} == expected
  assert all(v.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(v))) for v in out.values())
  assert float(jnp.abs(out["logits"]).max()) > 0.0
  # train=True advanced every u; a train=False call leaves them and needs no mutable collection.
  for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(variables["spectral_norm_stats"])):
    assert float(jnp.abs(a - b).max()) > 0.0
  if size == 64:
    _, frozen = jax.jit(lambda v, *a: d.apply(v, *a, train=False, mutable=["spectral_norm_stats"]))(variables, *args)
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(variables["spectral_norm_stats"])):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size,cond_block,last_block", [(64, "block1", "block4"), (128, "block2", "block5")])
def test_heads_match_numpy(size, cond_block, last_block):
  """regions = SN 1x1 conv of the 16x16 block output; features = sum of ReLU(last block); projection logit."""
  d = Discriminator(size, df_dim=2, text_dim=E)
  images, sentence = _inputs(size, batch=3)
  variables = _variables(d, images, sentence)
  out, state = jax.jit(lambda v, *a: d.apply(v, *a, train=False, capture_intermediates=True))(
      variables, images, sentence)
  inter = state["intermediates"]
  params, stats = variables["params"], variables["spectral_norm_stats"]
  cond_map = np.asarray(inter[cond_block]["__call__"][0], np.float64)
  last_map = np.asarray(inter[last_block]["__call__"][0], np.float64)
  assert cond_map.shape[1:3] == (16, 16) and last_map.shape[1:3] == (4, 4)

  w = _sn_kernel(params["region_proj"], stats["region_proj"])
  regions = cond_map.reshape(3, 256, -1) @ w + np.asarray(params["region_proj"]["bias"])
  np.testing.assert_allclose(out["regions"], regions, rtol=1e-4, atol=1e-5)

  x_pool = np.maximum(last_map, 0).sum(axis=(1, 2))
  np.testing.assert_allclose(out["features"], x_pool, rtol=1e-5, atol=1e-5)
  sent = np.asarray(sentence, np.float64) @ _sn_kernel(params["sentence_proj"], stats["sentence_proj"])
  np.testing.assert_allclose(out["sentence_features"], sent, rtol=1e-4, atol=1e-5)
  logits = (x_pool @ _sn_kernel(params["logit"], stats["logit"]))[:, 0] + (x_pool * sent).sum(-1)
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute():
  d = Discriminator(64, df_dim=2, text_dim=E, dtype="bfloat16")
  args = _inputs(64)
  variables = _variables(d, *args)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out_bf16 = jax.jit(lambda v, *a: d.apply(v, *a, train=False))(variables, *args)
  out_f32 = jax.jit(lambda v, *a: Discriminator(64, df_dim=2, text_dim=E).apply(v, *a, train=False))(variables, *args)
  assert all(v.dtype == jnp.float32 for v in out_bf16.values())
  np.testing.assert_allclose(out_bf16["features"], out_f32["features"], rtol=0.1, atol=0.1)


def test_bad_configs_and_inputs_raise():
  images, sentence = _inputs(64)
  cases = [(Discriminator(64, df_dim=2, text_dim=E), (images[:, :32, :32], sentence), "images must be"),
           (Discriminator(64, df_dim=2, text_dim=E), (images, sentence[:1]), "sentence must be"),
           (Discriminator(64, df_dim=2, text_dim=E + 1), (images, sentence), "text_dim"),
           (Discriminator(64, df_dim=2, text_dim=E, cond_size=12), (images, sentence), "cond_size"),
           (Discriminator(96, df_dim=2, text_dim=E), (images, sentence), "image_size")]
  for d, args, message in cases:
    with pytest.raises(ValueError, match=message):
      jax.eval_shape(lambda: d.init(jax.random.key(0), *args, train=False))
