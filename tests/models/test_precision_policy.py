"""The bf16 precision policy, checked in the lowered train step of configs/test.py (docs/precision.md).

Every stablehlo.convolution and stablehlo.dot_general of the bf16 step must have bf16 operands, except those under
a named scope of `precision.FLOAT32_EXCEPTIONS`, which must also look like what the list says they are. Lowering
from ShapeDtypeStructs allocates nothing and compiles nothing.
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core import tiny_setup
from xmc_gan_jax import describe
from xmc_gan_jax import model_factory
from xmc_gan_jax import sharding
from xmc_gan_jax import steps
from xmc_gan_jax import train_state
from xmc_gan_jax.models import precision
from xmc_gan_jax.models.text_encoder import BertEncoder

BN_GROUP = 4  # > 0 so that GroupBatchNorm's group-average matmul is in the step
_OP = re.compile(r"stablehlo\.(convolution|dot_general)\b.*: \((tensor<[^>]*>), (tensor<[^>]*>)\) -> "
                 r"(tensor<[^>]*>) loc\((#loc\d+)\)")
_LOC_DEF = re.compile(r"^(#loc\d+) = loc\((.*)\)$", re.M)


def _tensor(text: str) -> tuple[tuple[int, ...], str]:
  """'tensor<8x12x16xbf16>' -> ((8, 12, 16), 'bf16')."""
  *dims, dtype = text[len("tensor<"):-1].split("x")
  return tuple(int(d) for d in dims), dtype


def matmul_ops(mlir: str) -> list[dict]:
  """Convolutions and dot_generals of a StableHLO module printed with debug_info: kind, operand shapes and
  dtypes, result dtype, and `name` = every location string the op's location refers to, joined by ' | '."""
  defs = dict(_LOC_DEF.findall(mlir))

  def names(ref, seen):
    if ref in seen or ref not in defs:
      return []
    seen.add(ref)
    body = defs[ref]
    return re.findall(r'"([^"]*)"', body) + [n for r in re.findall(r"#loc\d+", body) for n in names(r, seen)]

  ops = []
  for kind, lhs, rhs, out, loc in _OP.findall(mlir):
    (ls, ld), (rs, rd) = _tensor(lhs), _tensor(rhs)
    ops.append(dict(kind=kind, shapes=(ls, rs), dtypes=(ld, rd), out=_tensor(out)[1],
                    name=" | ".join(names(loc, set()))))
  return ops


def _lowered_step_text(dtype: str) -> str:
  config = tiny_setup.tiny_config(**{"model.dtype": dtype, "model.batch_norm_group_size": BN_GROUP})
  modules = model_factory.build_modules(config, BertEncoder(tiny_setup.TINY_BERT), tiny_setup.TINY_BERT.hidden_size)
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  length = config.text_encoder.max_length
  text_params = jax.eval_shape(lambda: modules.text_module.init(
      jax.random.key(0), jnp.zeros((1, length), jnp.int32), jnp.ones((1, length), jnp.int32)))["params"]
  rng = jax.eval_shape(lambda: jax.random.key(0))
  step = jax.jit(functools.partial(steps.train_step, modules))
  lowered = step.lower(train_state.abstract_state(modules, config), text_params,
                       describe.abstract_batch(config, mesh), rng)
  return lowered.as_text(debug_info=True)


@pytest.fixture(scope="module")
def bf16_ops():
  return matmul_ops(_lowered_step_text("bfloat16"))


def _exception(op) -> str | None:
  # A scope shows as a path component of the op name, wrapped in the backward pass: ".../transpose(jvp(NAME))/...".
  found = [name for name in precision.FLOAT32_EXCEPTIONS if re.search(rf"[/(]{name}[)/]", op["name"])]
  assert len(found) <= 1, op
  return found[0] if found else None


def _describe(op) -> str:
  return f"{op['kind']} {op['dtypes']} {op['shapes']} at {op['name'][:160]}"


@pytest.mark.slow
def test_bf16_step_has_bf16_matmuls_except_the_listed(bf16_ops):
  unlisted = [op for op in bf16_ops if op["dtypes"] != ("bf16", "bf16") and _exception(op) is None]
  assert not unlisted, "matmuls outside the bf16 policy:\n" + "\n".join(map(_describe, unlisted))
  by_exception = {name: [op for op in bf16_ops if _exception(op) == name] for name in precision.FLOAT32_EXCEPTIONS}
  # Each listed exception occurs (the list does not rot), in float32, and looks like what its reason says.
  for name, ops in by_exception.items():
    assert ops, f"{name} is listed but no matmul of the step runs under it"
    assert all(op["kind"] == "dot_general" and op["dtypes"] == ("f32", "f32") for op in ops), name
  for op in by_exception["f32_spectral_norm"]:   # matrix-vector products with u or v ([1, n]) or their cotangent
    assert any(1 in shape for shape in op["shapes"]) or min(map(len, op["shapes"])) == 1, _describe(op)
  sub_batch = tiny_setup.tiny_config().batch_size // tiny_setup.tiny_config().optim.d_steps_per_g_step
  for op in by_exception["f32_batch_norm_groups"]:  # the [B, B] group-average matrix, B = 2 halves of a sub-batch
    assert any(shape[:1] * 2 == (s,) * 2 for shape in op["shapes"] for s in (sub_batch, 2 * sub_batch)
               if len(shape) == 2 and shape[0] == shape[1]), _describe(op)
  for op in by_exception["f32_contrastive_logits"]:
    assert "Generator" not in op["name"] and "Discriminator" not in op["name"], _describe(op)
  # The bf16 matmuls are where the FLOPs are: convolutions of G and D, and the text encoder's dense layers.
  bf16 = [op for op in bf16_ops if op["dtypes"] == ("bf16", "bf16")]
  for module, kind in (("Generator", "convolution"), ("Discriminator", "convolution"), ("BertEncoder", "dot_general")):
    assert any(module in op["name"] and op["kind"] == kind for op in bf16), (module, kind)
  # Attention logits (G's word attention, BERT's scores) keep a float32 result from bf16 operands.
  assert any(op["out"] == "f32" and "Generator" in op["name"] for op in bf16)
  assert any(op["out"] == "f32" and "BertEncoder" in op["name"] for op in bf16)
  assert not [op for op in bf16_ops if op["kind"] == "convolution" and op["dtypes"] != ("bf16", "bf16")]


def test_matmul_ops_parses_dtypes_and_scopes():
  def f(x, w):
    with precision.float32_scope("f32_spectral_norm"):
      y = jnp.matmul(x, w)
    return jnp.sum(jax.lax.conv_general_dilated(x.astype(jnp.bfloat16)[None, :, :, None],
                                                jnp.ones((3, 3, 1, 2), jnp.bfloat16), (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))) + y.sum()
  x = jax.ShapeDtypeStruct((4, 5), jnp.float32)
  w = jax.ShapeDtypeStruct((5, 3), jnp.float32)
  ops = matmul_ops(jax.jit(jax.value_and_grad(f, argnums=1)).lower(x, w).as_text(debug_info=True))
  kinds = sorted((op["kind"], op["dtypes"], _exception(op)) for op in ops)
  assert ("convolution", ("bf16", "bf16"), None) in kinds
  assert ("dot_general", ("f32", "f32"), "f32_spectral_norm") in kinds      # forward and transposed
  assert all(op["dtypes"] == ("bf16", "bf16") or _exception(op) for op in ops)


def test_float32_scope_refuses_unlisted_names():
  with pytest.raises(KeyError, match="FLOAT32_EXCEPTIONS"):
    precision.float32_scope("f32_whatever")


def test_einsum_f32_keeps_bf16_backward_and_f32_result():
  a = jax.random.normal(jax.random.key(0), (2, 3, 4))
  b = jax.random.normal(jax.random.key(1), (2, 5, 4))
  loss = lambda x, y: jnp.sum(jnp.sin(precision.einsum_f32("bre,bte->brt", x, y)))
  ref = lambda x, y: jnp.sum(jnp.sin(jnp.einsum("bre,bte->brt", x, y, precision=jax.lax.Precision.HIGHEST)))
  for got, want in zip(jax.grad(loss, (0, 1))(a, b), jax.grad(ref, (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  assert precision.einsum_f32("bre,bte->brt", a16, b16).dtype == jnp.float32
  ops = matmul_ops(jax.jit(jax.grad(loss, (0, 1))).lower(a16, b16).as_text(debug_info=True))
  assert len(ops) == 3 and all(op["dtypes"] == ("bf16", "bf16") for op in ops)
  assert sorted(op["out"] for op in ops) == ["bf16", "bf16", "f32"]


def test_matmul_precision():
  assert precision.matmul_precision(jnp.float32) == jax.lax.Precision.HIGHEST
  assert precision.matmul_precision("bfloat16") == jax.lax.Precision.DEFAULT
