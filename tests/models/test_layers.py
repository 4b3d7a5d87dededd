"""Tests of xmc_gan_jax.models.layers against numpy re-derivations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from xmc_gan_jax.models import layers


def _rng(seed=0):
  return np.random.default_rng(seed)


def _np_group_bn(x, group, eps=1e-5):
  """Normalised output, group means [G, C] and group variances [G, C] of x [B, ..., C] (float64)."""
  x = np.asarray(x, np.float64)
  b = x.shape[0]
  group = group or b
  ys, means, vars_ = [], [], []
  for start in range(0, b, group):
    chunk = x[start:start + group]
    axes = tuple(range(chunk.ndim - 1))
    mean, var = chunk.mean(axis=axes), chunk.var(axis=axes)
    ys.append((chunk - mean) / np.sqrt(var + eps))
    means.append(mean)
    vars_.append(var)
  return np.concatenate(ys), np.stack(means), np.stack(vars_)


@pytest.mark.parametrize("group", [0, 2])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 3)])
def test_group_batch_norm_matches_numpy(group, shape):
  rng = _rng(1)
  # Different per-example offsets so that per-group statistics differ from whole-batch ones.
  x = rng.normal(size=shape) * 2.0 + rng.normal(size=(shape[0],) + (1,) * (len(shape) - 1)) * 3.0 + 1.0
  x = jnp.asarray(x, jnp.float32)
  bn = layers.GroupBatchNorm(group_size=group, momentum=0.9, epsilon=1e-5, use_scale_bias=True)
  variables = bn.init(jax.random.key(0), x, train=True)
  c = shape[-1]
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(c))
  np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(c))
  scale, bias = rng.normal(size=c), rng.normal(size=c)
  variables = {"params": {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)},
               "batch_stats": variables["batch_stats"]}

  y, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  y_ref, means, vars_ = _np_group_bn(x, group)
  np.testing.assert_allclose(y, y_ref * scale + bias, rtol=1e-5, atol=1e-5)
  stats = updates["batch_stats"]
  np.testing.assert_allclose(stats["mean"], 0.1 * means.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * vars_.mean(0), rtol=1e-5, atol=1e-6)

  # Eval uses the running statistics and leaves them alone.
  y_eval = bn.apply({"params": variables["params"], "batch_stats": stats}, x, train=False)
  ref_eval = (np.asarray(x) - stats["mean"]) / np.sqrt(np.asarray(stats["var"]) + 1e-5) * scale + bias
  np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-5, atol=1e-5)


def test_group_batch_norm_group_sizes_differ():
  x = jnp.asarray(_rng(2).normal(size=(4, 2, 2, 3)) + np.arange(4)[:, None, None, None], jnp.float32)
  bn0, bn2 = layers.GroupBatchNorm(0), layers.GroupBatchNorm(2)
  v = bn0.init(jax.random.key(0), x, train=True)
  y0, _ = bn0.apply(v, x, train=True, mutable=["batch_stats"])
  y2, _ = bn2.apply(v, x, train=True, mutable=["batch_stats"])
  assert np.abs(np.asarray(y0) - np.asarray(y2)).max() > 0.1


def test_group_batch_norm_bfloat16_keeps_f32_stats():
  x = jnp.asarray(_rng(3).normal(size=(4, 2, 2, 3)), jnp.bfloat16)
  bn = layers.GroupBatchNorm(2, dtype=jnp.bfloat16)
  v = bn.init(jax.random.key(0), x, train=True)
  y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16
  assert upd["batch_stats"]["mean"].dtype == jnp.float32
  y_ref, _, _ = _np_group_bn(np.asarray(x, np.float32), 2)
  np.testing.assert_allclose(np.asarray(y, np.float32), y_ref, atol=3e-2)


def test_group_batch_norm_rejects_indivisible_batch():
  bn = layers.GroupBatchNorm(group_size=4)
  with pytest.raises(ValueError, match="not divisible"):
    bn.init(jax.random.key(0), jnp.ones((6, 2, 2, 3)), train=True)


def test_group_batch_norm_sharded_batch_matches_unsharded():
  """Group statistics must not depend on how the batch is sharded (explicit mesh, 8 devices, 2 per device)."""
  mesh = jax.make_mesh((8,), ("data",))
  x = jnp.asarray(_rng(4).normal(size=(16, 2, 2, 3)) + np.arange(16)[:, None, None, None], jnp.float32)
  bn = layers.GroupBatchNorm(group_size=8, use_scale_bias=False)
  v = bn.init(jax.random.key(0), x, train=True)
  fn = jax.jit(lambda v, x: bn.apply(v, x, train=True, mutable=["batch_stats"]))
  ref_y, ref_stats = fn(v, x)
  with jax.set_mesh(mesh):
    y, stats = fn(v, jax.device_put(x, NamedSharding(mesh, P("data"))))
  np.testing.assert_allclose(y, ref_y, atol=1e-5)
  np.testing.assert_allclose(stats["batch_stats"]["var"], ref_stats["batch_stats"]["var"], atol=1e-5)
  np.testing.assert_allclose(y, _np_group_bn(x, 8)[0], atol=1e-4)


def test_conditional_batch_norm_matches_numpy():
  rng = _rng(5)
  x = jnp.asarray(rng.normal(size=(4, 3, 3, 5)), jnp.float32)
  cond = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
  cbn = layers.ConditionalBatchNorm(group_size=2)
  v = cbn.init(jax.random.key(0), x, cond, train=True)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), v["params"])
  y, _ = cbn.apply({"params": params, "batch_stats": v["batch_stats"]}, x, cond, train=True,
                   mutable=["batch_stats"])
  p = jax.tree.map(np.asarray, params)
  gamma = np.asarray(cond) @ p["gamma"]["kernel"] + p["gamma"]["bias"]
  beta = np.asarray(cond) @ p["beta"]["kernel"] + p["beta"]["bias"]
  ref = _np_group_bn(x, 2)[0] * (1 + gamma[:, None, None, :]) + beta[:, None, None, :]
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
  assert "bn" not in params  # BN has no own scale/offset.


def _lcbn_with_random_params(seed, x_shape, cond_shape):
  """(module, variables, x, cond) for a LocalConditionalBatchNorm with N(0, 1) parameters."""
  rng = _rng(seed)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  cond = jnp.asarray(rng.normal(size=cond_shape), jnp.float32)
  lcbn = layers.LocalConditionalBatchNorm(group_size=0)
  v = lcbn.init(jax.random.key(0), x, cond, train=True)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), v["params"])
  return lcbn, {"params": params, "batch_stats": v["batch_stats"]}, x, cond


def test_local_conditional_batch_norm_matches_numpy():
  lcbn, variables, x, cond = _lcbn_with_random_params(6, (2, 4, 4, 3), (2, 4, 4, 6))
  params = variables["params"]
  y, _ = lcbn.apply(variables, x, cond, train=True, mutable=["batch_stats"])
  p = jax.tree.map(np.asarray, params)
  gamma = np.einsum("bhwd,dc->bhwc", cond, p["gamma"]["kernel"][0, 0]) + p["gamma"]["bias"]
  beta = np.einsum("bhwd,dc->bhwc", cond, p["beta"]["kernel"][0, 0]) + p["beta"]["bias"]
  ref = _np_group_bn(x, 0)[0] * (1 + gamma) + beta
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="matching"):
    lcbn.apply(variables, x, cond[:, :3, :3], train=False)


def test_local_conditional_batch_norm_coarse_condition_equals_upsampled_condition():
  """A [B, H/f, W/f, D] condition is modulated at its own resolution: same output as the upsampled condition."""
  lcbn, variables, x, coarse = _lcbn_with_random_params(7, (2, 8, 8, 3), (2, 2, 2, 6))
  fine = np.repeat(np.repeat(np.asarray(coarse), 4, axis=1), 4, axis=2)
  for train in (True, False):
    y_coarse = lcbn.apply(variables, x, coarse, train=train, mutable=["batch_stats"])[0]
    y_fine = lcbn.apply(variables, x, jnp.asarray(fine), train=train, mutable=["batch_stats"])[0]
    np.testing.assert_allclose(y_coarse, y_fine, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(y_coarse)[:, 0, 0] - np.asarray(y_coarse)[:, 0, 4]).max() > 1e-3  # cells differ


def _kernel_with_singular_values(shape, singular_values, seed):
  """A kernel whose (prod(shape[:-1]), shape[-1]) matrix has the given singular values."""
  rng = _rng(seed)
  rows, cols = int(np.prod(shape[:-1])), shape[-1]
  u, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
  v, _ = np.linalg.qr(rng.normal(size=(cols, cols)))
  return (u @ np.diag(singular_values) @ v.T).reshape(shape).astype(np.float32)


def _run_power_iterations(module, variables, x, steps):
  fn = jax.jit(lambda v: module.apply(v, x, update_stats=True, mutable=["spectral_norm_stats"]))
  for _ in range(steps):
    _, upd = fn(variables)
    variables = {"params": variables["params"], "spectral_norm_stats": upd["spectral_norm_stats"]}
  return variables


def test_spectral_dense_sigma_matches_svd():
  kernel = _kernel_with_singular_values((6, 4), [3.0, 1.7, 1.0, 0.3], seed=7)
  dense = layers.SpectralDense(4)
  eye = jnp.eye(6, dtype=jnp.float32)
  v = dense.init(jax.random.key(0), eye, update_stats=False)
  assert v["spectral_norm_stats"]["u"].shape == (1, 4)
  assert v["params"]["kernel"].shape == (6, 4)
  np.testing.assert_array_equal(v["params"]["bias"], np.zeros(4))
  v = {"params": {"kernel": jnp.asarray(kernel), "bias": v["params"]["bias"]},
       "spectral_norm_stats": v["spectral_norm_stats"]}
  v = _run_power_iterations(dense, v, eye, 30)
  effective = np.asarray(dense.apply(v, eye, update_stats=False))  # identity input -> W / sigma
  sigma = np.linalg.norm(kernel) / np.linalg.norm(effective)
  np.testing.assert_allclose(sigma, np.linalg.svd(kernel, compute_uv=False)[0], rtol=1e-3)
  np.testing.assert_allclose(np.linalg.svd(effective, compute_uv=False)[0], 1.0, rtol=1e-3)


def test_spectral_conv_sigma_matches_svd_and_conv():
  shape = (3, 3, 2, 5)
  kernel = _kernel_with_singular_values(shape, [2.5, 1.2, 0.9, 0.5, 0.1], seed=8)
  conv = layers.SpectralConv(5, (3, 3))
  # Example i has a unit impulse in channel i at the centre of a 3x3 image: the output reads out the kernel.
  impulses = np.zeros((2, 3, 3, 2), np.float32)
  impulses[0, 1, 1, 0] = impulses[1, 1, 1, 1] = 1.0
  impulses = jnp.asarray(impulses)
  v = conv.init(jax.random.key(1), impulses, update_stats=False)
  v = {"params": {"kernel": jnp.asarray(kernel), "bias": v["params"]["bias"]},
       "spectral_norm_stats": v["spectral_norm_stats"]}
  v = _run_power_iterations(conv, v, impulses, 30)
  out = np.asarray(conv.apply(v, impulses, update_stats=False))  # [in, 3, 3, out]
  effective = out[:, ::-1, ::-1, :].transpose(1, 2, 0, 3)  # y[i, 2-kh, 2-kw] = W[kh, kw, i] / sigma
  sigma = np.linalg.norm(kernel) / np.linalg.norm(effective)
  np.testing.assert_allclose(sigma, np.linalg.svd(kernel.reshape(-1, 5), compute_uv=False)[0], rtol=1e-3)
  # The same normalised kernel on a random image agrees with a direct numpy cross-correlation.
  img = _rng(9).normal(size=(1, 4, 4, 2)).astype(np.float32)
  padded = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros((1, 4, 4, 5))
  for i in range(4):
    for j in range(4):
      ref[0, i, j] = np.einsum("hwc,hwco->o", padded[0, i:i + 3, j:j + 3], effective)
  np.testing.assert_allclose(conv.apply(v, jnp.asarray(img), update_stats=False), ref, rtol=1e-4, atol=1e-5)


def test_spectral_u_updates_only_when_asked():
  dense = layers.SpectralDense(3)
  x = jnp.asarray(_rng(10).normal(size=(2, 5)), jnp.float32)
  v = dense.init(jax.random.key(2), x, update_stats=True)  # init never advances u
  u0 = np.asarray(v["spectral_norm_stats"]["u"])
  assert abs(np.linalg.norm(u0) - 1.0) > 1e-3  # raw N(0, 1) draw, not yet normalised
  _, frozen = dense.apply(v, x, update_stats=False, mutable=["spectral_norm_stats"])
  np.testing.assert_array_equal(frozen["spectral_norm_stats"]["u"], u0)
  _, moved = dense.apply(v, x, update_stats=True, mutable=["spectral_norm_stats"])
  u1 = np.asarray(moved["spectral_norm_stats"]["u"])
  # One numpy power iteration from u0.
  w = np.asarray(v["params"]["kernel"], np.float64)
  vv = u0 @ w.T
  vv /= np.linalg.norm(vv)
  u_ref = vv @ w
  np.testing.assert_allclose(u1, u_ref / np.linalg.norm(u_ref), rtol=1e-5, atol=1e-6)


def test_spectral_gradient_treats_u_v_as_constants():
  """d/dW sum(x @ W/sigma) with sigma = v W u^T and u, v fixed: (1/sigma) X^T 1 - (s/sigma^2) v^T u."""
  dense = layers.SpectralDense(3, use_bias=False)
  x = jnp.asarray(_rng(11).normal(size=(4, 5)), jnp.float32)
  v = dense.init(jax.random.key(3), x, update_stats=False)
  grad = jax.grad(lambda p: dense.apply({"params": p, "spectral_norm_stats": v["spectral_norm_stats"]},
                                        x, update_stats=False).sum())(v["params"])["kernel"]
  w = np.asarray(v["params"]["kernel"], np.float64)
  u0 = np.asarray(v["spectral_norm_stats"]["u"], np.float64)
  vv = u0 @ w.T
  vv /= np.linalg.norm(vv)
  u = vv @ w
  u /= np.linalg.norm(u)
  sigma = (vv @ w @ u.T)[0, 0]
  s = (np.asarray(x, np.float64) @ w).sum()
  ref = np.asarray(x).sum(0)[:, None] * np.ones((1, 3)) / sigma - s / sigma**2 * (vv.T @ u)
  np.testing.assert_allclose(grad, ref, rtol=1e-4, atol=1e-5)


def test_upsample_nearest_matches_kron():
  x = _rng(12).normal(size=(2, 3, 4, 2)).astype(np.float32)
  ref = np.stack([np.stack([np.kron(x[b, :, :, c], np.ones((2, 2))) for c in range(2)], -1) for b in range(2)])
  np.testing.assert_array_equal(layers.upsample_nearest(jnp.asarray(x)), ref)


@pytest.mark.parametrize("h,w", [(4, 6), (5, 3)])
def test_avg_pool_2x2_is_tf_style(h, w):
  x = _rng(13).normal(size=(2, h, w, 3)).astype(np.float32)
  ref = np.zeros((2, -(-h // 2), -(-w // 2), 3))
  for i in range(ref.shape[1]):
    for j in range(ref.shape[2]):
      ref[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))  # padding excluded
  np.testing.assert_allclose(layers.avg_pool_2x2(jnp.asarray(x)), ref, rtol=1e-6, atol=1e-6)


def test_safe_l2_normalize_zero_vectors():
  x = jnp.asarray([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(layers.safe_l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
  grad = jax.grad(lambda x: layers.safe_l2_normalize(x).sum())(x)
  assert np.all(np.isfinite(grad))
