"""Lab script behind docs/precision.md: XLA's TPU cost analysis of G's word attention and of the word-region loss
(forward + backward), compiled ahead of time for one v5e chip on a CPU machine (needs libtpu), per precision.

    python docs/experiments/precision_aot.py attention B R T E      # e.g. 64 256 17 768
    python docs/experiments/precision_aot.py loss N T R E GROUP     # e.g. 16 17 256 768 8

Prints one line per variant: FLOPs, bytes accessed and `optimal_seconds` (XLA's estimate, not a measurement).
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xmc_gan_jax import losses
from xmc_gan_jax import topology
from xmc_gan_jax.models import generator

HI, DEF = jax.lax.Precision.HIGHEST, jax.lax.Precision.DEFAULT


def _attention_variant(precision, dtype):
  """Grad of sum(context^2) w.r.t. regions; operands in `dtype`, logits and softmax float32."""
  def loss(regions, words, mask):
    real = (mask > 0)[:, :, None]
    r = generator.layers.safe_l2_normalize(regions.astype(jnp.float32)).astype(dtype)
    w = generator.layers.safe_l2_normalize(jnp.where(real, words, 0.0)).astype(dtype)
    logits = 15.0 * jnp.einsum("bre,bte->brt", r, w, precision=precision, preferred_element_type=jnp.float32)
    attn = jax.nn.softmax(jnp.where(jnp.swapaxes(real, 1, 2), logits, -1e9), -1).astype(dtype)
    context = jnp.einsum("brt,bte->bre", attn, w, precision=precision, preferred_element_type=jnp.float32)
    return jnp.sum(context ** 2)
  return jax.grad(loss)


def main(what, *dims):
  sharding = NamedSharding(Mesh(np.array(topology.devices(topology.parse("v5e:1x1"))), ("data",)), PartitionSpec())
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  if what == "attention":
    b, r, t, e = dims
    args = (spec((b, r, e), jnp.bfloat16), spec((b, t, e), jnp.float32), spec((b, t), jnp.int32))
    variants = {"f32 operands, HIGHEST": _attention_variant(HI, jnp.float32),
                "f32 operands, DEFAULT": _attention_variant(DEF, jnp.float32),
                "bf16 operands, f32 result, DEFAULT": _attention_variant(DEF, jnp.bfloat16),
                "bf16 operands, f32 result, HIGHEST": _attention_variant(HI, jnp.bfloat16)}
  else:
    n, t, r, e, group = dims
    args = (spec((n, t, e), jnp.float32), spec((n, t), jnp.int32), spec((n, r, e), jnp.float32))

    def variant(precision):
      def grad(words, mask, regions):
        losses._HI = precision  # pylint: disable=protected-access  (the loss reads it at trace time)
        return jax.grad(lambda x: losses.word_region_loss(words, mask, x, group_size=group)[0])(regions)
      return grad
    variants = {"loss einsums DEFAULT": variant(DEF), "loss einsums HIGHEST": variant(HI)}
  for name, fn in variants.items():
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    print(f"{name:38s} {cost['flops'] / 1e9:8.3f} GFLOP {cost['bytes accessed'] / 1e6:9.1f} MB "
          f"optimal_seconds {cost['optimal_seconds'] * 1e3:.3f} ms", flush=True)


if __name__ == "__main__":
  main(sys.argv[1], *map(int, sys.argv[2:]))
