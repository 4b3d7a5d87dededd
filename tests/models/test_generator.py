"""Tests of the XMC-GAN generator: size, shapes, word attention, BN grouping, ablation, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tests.models import host_variables
from xmc_gan_jax.models import generator as gen_lib
from xmc_gan_jax.models.generator import Generator

Z, E, T = 8, 12, 6  # tiny widths for behaviour tests


def _inputs(batch=2, z_dim=Z, text_dim=E, length=T, seed=0):
  rng = np.random.default_rng(seed)
  z = jnp.asarray(rng.normal(size=(batch, z_dim)), jnp.float32)
  sentence = jnp.asarray(rng.normal(size=(batch, text_dim)), jnp.float32)
  words = jnp.asarray(rng.normal(size=(batch, length, text_dim)), jnp.float32)
  lengths = rng.integers(2, length, size=batch)
  mask = jnp.asarray(np.arange(length)[None, :] < lengths[:, None], jnp.int32)
  return z, sentence, words, mask


_variables = host_variables.host_variables


def _train_apply(module):
  """Jitted (variables, *inputs) -> images in train mode (batch statistics, updates discarded)."""
  return jax.jit(lambda v, *a: module.apply(v, *a, train=True, mutable=["batch_stats"])[0])


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("size,expected", [(128, 78.5e6), (256, 92.9e6)])
def test_parameter_count_matches_original(size, expected):
  g = Generator(size, z_dim=128, gf_dim=96)
  args = _inputs(2, 128, 768, 17)
  shapes = jax.eval_shape(lambda: g.init(jax.random.key(0), *args, train=False))
  assert set(shapes) == {"params", "batch_stats"}
  assert abs(_count(shapes["params"]) - expected) / expected < 0.01


def test_init_values():
  g = Generator(64, z_dim=Z, gf_dim=4)
  args = _inputs()
  variables = jax.jit(lambda k, *a: g.init(k, *a, train=False))(jax.random.key(0, impl="unsafe_rbg"), *args)
  params = variables["params"]
  kernel = np.asarray(params["block1"]["conv0"]["kernel"])  # glorot normal: std sqrt(2 / (fan_in + fan_out))
  fan_in, fan_out = 9 * kernel.shape[2], 9 * kernel.shape[3]
  np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (fan_in + fan_out)), rtol=0.15)
  assert all(float(jnp.abs(b).max()) == 0.0 for p, b in jax.tree_util.tree_leaves_with_path(params)
             if p[-1].key == "bias")
  stats = jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
  assert stats and all(float(jnp.abs(v - (1.0 if p[-1].key == "var" else 0.0)).max()) == 0.0 for p, v in stats)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_output_shape_and_range(size):
  g = Generator(size, z_dim=Z, gf_dim=2)
  args = _inputs()
  variables = _variables(g, *args)
  images, updates = jax.jit(lambda v, *a: g.apply(v, *a, train=True, mutable=["batch_stats"]))(variables, *args)
  assert images.shape == (2, size, size, 3) and images.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  assert float(images.std()) > 0.0
  # Train mode moved the running statistics; eval mode uses them and gives a different, valid image.
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"], variables["batch_stats"])
  assert max(jax.tree.leaves(moved)) > 0.0
  if size == 64:
    eval_images = jax.jit(lambda v, *a: g.apply(v, *a, train=False))({"params": variables["params"], **updates},
                                                                        *args)
    assert eval_images.shape == images.shape and bool(jnp.all((eval_images >= 0) & (eval_images <= 1)))
    assert float(jnp.abs(eval_images - images).max()) > 1e-4


def test_block_layout_follows_original():
  """Widths per block at gf=1: 128 px -> 16, 8 | 4, 2, 1; spatial blocks are modulated by E + 2 z_dim channels."""
  g = Generator(128, z_dim=Z, gf_dim=1)
  params = jax.eval_shape(lambda: g.init(jax.random.key(0), *_inputs(), train=False))["params"]
  widths = [params[f"block{i}"]["conv1"]["kernel"].shape[-1] for i in range(5)]
  assert widths == [16, 8, 4, 2, 1]
  assert "cbn0" in params["block1"] and "lcbn0" in params["block2"]
  assert params["block2"]["lcbn0"]["gamma"]["kernel"].shape == (1, 1, E + 2 * Z, 8)
  assert params["stem"]["kernel"].shape == (Z, 16 * 16)  # the stem sees z only
  assert params["sentence_proj"]["kernel"].shape == (E, Z)
  assert params["region_proj"]["kernel"].shape == (1, 1, 8, E)


def test_word_attention_matches_numpy():
  rng = np.random.default_rng(1)
  regions = rng.normal(size=(2, 5, 4))
  words = rng.normal(size=(2, 3, 4))
  mask = np.array([[1, 1, 0], [1, 0, 0]])
  out = gen_lib.word_attention(jnp.asarray(regions, jnp.float32), jnp.asarray(words, jnp.float32),
                               jnp.asarray(mask), 15.0)
  rn = regions / np.linalg.norm(regions, axis=-1, keepdims=True)
  wn = words / np.linalg.norm(words, axis=-1, keepdims=True)
  for b in range(2):
    real = mask[b] > 0
    logits = 15.0 * rn[b] @ wn[b][real].T
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    np.testing.assert_allclose(out[b], attn @ wn[b][real], rtol=1e-5, atol=1e-6)


def test_padded_words_are_ignored_and_real_words_matter():
  g = Generator(64, z_dim=Z, gf_dim=2)
  z, sentence, words, mask = _inputs()
  variables = _variables(g, z, sentence, words, mask)
  apply = _train_apply(g)
  run = lambda w: apply(variables, z, sentence, w, mask)
  base = run(words)
  pad = (np.asarray(mask) == 0)[:, :, None]
  garbage = np.where(pad, np.random.default_rng(2).normal(size=words.shape) * 1e6, np.asarray(words))
  garbage[0, -1, 0], garbage[1, -1, 1] = np.nan, np.inf  # the last position is always padding
  np.testing.assert_array_equal(run(jnp.asarray(garbage, jnp.float32)), base)
  changed = np.asarray(words).copy()
  changed[:, 0] = -changed[:, 0]
  assert float(jnp.abs(run(jnp.asarray(changed)) - base).max()) > 1e-4


def test_zero_padded_words_give_finite_gradients():
  g = Generator(64, z_dim=Z, gf_dim=2)
  z, sentence, words, mask = _inputs()
  words = words * mask[:, :, None]  # all-zero padding vectors
  mask = mask.at[1].set(0)  # and one caption with no real token at all
  variables = _variables(g, z, sentence, words, mask)

  def loss(params, words):  # eval-mode BN keeps the graph small; the attention path is the same.
    images = g.apply({"params": params, "batch_stats": variables["batch_stats"]}, z, sentence, words, mask,
                     train=False)
    return jnp.mean(images)

  g_params, g_words = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], words)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g_params))
  assert bool(jnp.all(jnp.isfinite(g_words)))
  assert float(jnp.abs(g_params["region_proj"]["kernel"]).max()) > 0.0


def test_without_word_attention_words_are_ignored():
  g = Generator(64, z_dim=Z, gf_dim=2, use_word_attention=False)
  z, sentence, words, mask = _inputs()
  variables = _variables(g, z, sentence, None, None)
  assert "region_proj" not in variables["params"]
  assert variables["params"]["block2"]["lcbn0"]["gamma"]["kernel"].shape[2] == 2 * Z
  run = _train_apply(g)
  out_none = run(variables, z, sentence, None, None)
  np.testing.assert_array_equal(run(variables, z, sentence, words, mask), out_none)
  np.testing.assert_array_equal(run(variables, z, sentence, -words, 1 - mask), out_none)
  # The sentence still conditions the image.
  assert float(jnp.abs(run(variables, z, -sentence, None, None) - out_none).max()) > 1e-5


@pytest.mark.parametrize("stem_sees_sentence", [False, True])
def test_stem_input(stem_sees_sentence):
  """The stem is Dense(z) (original code) or Dense(concat(Dense(sentence), z)) (paper's text), checked in numpy."""
  g = Generator(32, z_dim=Z, gf_dim=2, stem_sees_sentence=stem_sees_sentence)
  z, sentence, words, mask = _inputs()
  variables = _variables(g, z, sentence, words, mask)
  params = jax.tree.map(np.asarray, variables["params"])
  stem_in = np.asarray(z)
  if stem_sees_sentence:
    proj = np.asarray(sentence) @ params["sentence_proj"]["kernel"] + params["sentence_proj"]["bias"]
    stem_in = np.concatenate([proj, stem_in], axis=-1)
  assert params["stem"]["kernel"].shape[0] == stem_in.shape[1]
  expected = (stem_in @ params["stem"]["kernel"] + params["stem"]["bias"]).reshape(2, 4, 4, -1)
  got = g.apply(variables, z, sentence, words, mask, train=False,
                capture_intermediates=lambda m, _: m.name == "stem")[1]["intermediates"]["stem"]["__call__"][0]
  np.testing.assert_allclose(np.asarray(got).reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", [0.5, 0.78])
def test_initial_output_level_sets_head_bias(level):
  """An untrained G with a zeroed head kernel outputs exactly `level` everywhere."""
  g = Generator(32, z_dim=Z, gf_dim=2, initial_output_level=level)
  args = _inputs()
  variables = jax.jit(lambda k, *a: g.init(k, *a, train=False))(jax.random.key(0, impl="unsafe_rbg"), *args)
  bias = np.asarray(variables["params"]["head_conv"]["bias"])
  np.testing.assert_allclose(bias, np.full(3, np.arctanh(2 * level - 1)), rtol=1e-6, atol=1e-7)
  params = jax.tree.map(lambda x: x, variables["params"])
  params["head_conv"] = dict(params["head_conv"], kernel=jnp.zeros_like(params["head_conv"]["kernel"]))
  out = g.apply(dict(variables, params=params), *args, train=False)
  np.testing.assert_allclose(np.asarray(out), level, rtol=1e-6)


@pytest.mark.parametrize("group,independent", [(2, True), (0, False)])
def test_batch_norm_groups_isolate_examples(group, independent):
  """In training, example 0's image depends on examples 2, 3 only when they share its BN group."""
  g = Generator(64, z_dim=Z, gf_dim=2, batch_norm_group_size=group)
  z, sentence, words, mask = _inputs(batch=4)
  variables = _variables(g, z, sentence, words, mask)
  apply = _train_apply(g)
  run = lambda z: apply(variables, z, sentence, words, mask)
  diff = np.abs(np.asarray(run(z)[:2]) - np.asarray(run(z.at[2:].set(3.0 * z[2:]))[:2])).max()
  assert (diff < 1e-6) if independent else (diff > 1e-5)


def test_batch_norm_group_must_divide_batch():
  g = Generator(64, z_dim=Z, gf_dim=2, batch_norm_group_size=3)
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(lambda: g.init(jax.random.key(0), *_inputs(batch=4), train=True))


def test_sharded_batch_matches_single_device():
  g = Generator(64, z_dim=Z, gf_dim=2, batch_norm_group_size=2)
  args = _inputs(batch=8)
  variables = _variables(g, *args)
  fn = jax.jit(lambda v, *a: g.apply(v, *a, train=True, mutable=["batch_stats"]))
  ref, ref_stats = fn(variables, *args)
  mesh = jax.make_mesh((8,), ("data",))
  with jax.set_mesh(mesh):
    sharded = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in args]
    out, stats = fn(variables, *sharded)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute():
  g = Generator(64, z_dim=Z, gf_dim=2, dtype="bfloat16")
  args = _inputs()
  variables = _variables(g, *args)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  images = _train_apply(g)(variables, *args)
  assert images.dtype == jnp.float32 and bool(jnp.all((images >= 0) & (images <= 1)))


def test_bad_configs_and_inputs_raise():
  args = _inputs()
  cases = [(Generator(64, z_dim=Z, gf_dim=2, cond_size=64), args, "cond_size"),
           (Generator(64, z_dim=Z, gf_dim=2, cond_size=12), args, "power of two"),
           (Generator(96, z_dim=Z, gf_dim=2), args, "image_size"),
           (Generator(64, z_dim=Z + 1, gf_dim=2), args, "z must be"),
           (Generator(64, z_dim=Z, gf_dim=2), (args[0], args[1], None, None), "words and word_mask"),
           (Generator(64, z_dim=Z, gf_dim=2), (args[0], args[1][:1]) + args[2:], "sentence must be"),
           (Generator(64, z_dim=Z, gf_dim=2, initial_output_level=1.0), args, "initial_output_level")]
  for g, a, message in cases:
    with pytest.raises(ValueError, match=message):
      jax.eval_shape(lambda: g.init(jax.random.key(0), *a, train=False))


def _block_widths(params, blocks):
  return [params[f"block{i}"]["conv1"]["kernel"].shape[-1] for i in range(blocks)]


def test_channel_multipliers_set_the_stem_and_block_widths():
  args = _inputs()
  default = jax.eval_shape(lambda: Generator(32, z_dim=Z, gf_dim=2).init(jax.random.key(0), *args, train=False))
  assert _block_widths(default["params"], 3) == [2 * m for m in gen_lib.CHANNEL_MULTIPLIERS[32]]
  g = Generator(32, z_dim=Z, gf_dim=2, channel_multipliers=(4, 2, 3))
  variables = _variables(g, *args)
  params = variables["params"]
  assert _block_widths(params, 3) == [8, 4, 6]
  assert params["stem"]["kernel"].shape == (Z, 8 * 4 * 4)
  assert params["head_conv"]["kernel"].shape == (3, 3, 6, 3)
  images = _train_apply(g)(variables, *args)
  assert images.shape == (2, 32, 32, 3) and bool(jnp.all(jnp.isfinite(images)))


@pytest.mark.parametrize("mults", [(4, 2), (4, 2, 1, 1), (4, 0, 1), (4, 2.5, 1)])
def test_bad_channel_multipliers_raise(mults):
  g = Generator(32, z_dim=Z, gf_dim=2, channel_multipliers=mults)
  with pytest.raises(ValueError, match="channel_multipliers must be 3 positive integers at 32 px"):
    jax.eval_shape(lambda: g.init(jax.random.key(0), *_inputs(), train=False))
