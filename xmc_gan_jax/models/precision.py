"""The mixed-precision policy of `model.dtype` (docs/precision.md), and its float32 exceptions in one place.

With `model.dtype="bfloat16"` every convolution and matmul of G, D and the text encoder takes bf16 operands and
gives a bf16 result: the MXU (TPU) and tensor cores (GPU) accumulate in float32 and round once at the end, and the
backward pass then runs on bf16 operands too. Where a result must stay float32 (attention logits before a
softmax) `einsum_f32` gives a float32 result from bf16 operands without turning the backward matmuls float32.
Parameters, optimizer state, BatchNorm statistics, losses and logits stay float32.

The ops that keep float32 operands run under `jax.named_scope(name)` with a name from `FLOAT32_EXCEPTIONS`;
tests/models/test_precision_policy.py checks in the lowered bf16 train step that every other convolution and
dot_general has bf16 operands. Imports no TensorFlow.
"""
import functools

import jax
import jax.numpy as jnp

# Named scope -> why its matmuls keep float32 operands in bf16 mode (one line each).
FLOAT32_EXCEPTIONS = {
    "f32_spectral_norm": "power iteration on the float32 kernel: [1, n] matrix-vector products, negligible FLOPs; "
                         "a bf16 sigma would rescale every D layer by a rounding error",
    "f32_batch_norm_groups": "GroupBatchNorm's [B, B] group average of per-example mean and variance "
                             "(normalisation statistics stay float32)",
    "f32_contrastive_logits": "similarities inside the losses: cos / 0.1 and 50 * word-region scores are logits; "
                              "bf16 would round them by up to ~0.2",
}


def float32_scope(name: str):
  """`jax.named_scope(name)` for an op listed in FLOAT32_EXCEPTIONS (KeyError for an unlisted name)."""
  if name not in FLOAT32_EXCEPTIONS:
    raise KeyError(f"{name!r} is not a listed float32 exception; add it to FLOAT32_EXCEPTIONS with its reason.")
  return jax.named_scope(name)


def matmul_precision(dtype) -> jax.lax.Precision:
  """HIGHEST for float32 compute (f32-accurate on TPU, 6 bf16 passes), DEFAULT for bf16 (one pass; see docs)."""
  return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def einsum_f32(spec: str, a: jax.Array, b: jax.Array, precision=None) -> jax.Array:
  """jnp.einsum(spec, a, b) with a float32 result from operands of one dtype (bf16: f32 accumulation, no
  rounding of the result). The gradients are einsums of the cotangent cast to the operands' dtype, so the
  backward pass keeps bf16 operands (plain `preferred_element_type` would make it float32). Pass `precision`
  positionally."""
  return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=jnp.float32)


def _einsum_f32_fwd(spec, a, b, precision):
  return einsum_f32(spec, a, b, precision), (a, b)


def _einsum_f32_bwd(spec, precision, residuals, g):
  a, b = residuals
  _, vjp = jax.vjp(lambda x, y: jnp.einsum(spec, x, y, precision=precision), a, b)
  return vjp(g.astype(jnp.result_type(a, b)))


einsum_f32.defvjp(_einsum_f32_fwd, _einsum_f32_bwd)
