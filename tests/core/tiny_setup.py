"""Shared tiny fixtures for trainer tests: a random 2-layer BERT and the test config."""
import jax
import jax.numpy as jnp

from configs import test as test_config
from xmc_gan_jax.models import bert_weights
from xmc_gan_jax.models.text_encoder import BertEncoder, TextEncoder

TINY_BERT = bert_weights.BertConfig(vocab_size=2048, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=64, type_vocab_size=2)


def tiny_text_encoder(pooling: str = "mean") -> TextEncoder:
  module = BertEncoder(TINY_BERT)
  ids = jnp.ones((1, 8), jnp.int32)
  params = module.init(jax.random.key(7), ids, ids)["params"]
  return TextEncoder(module=module, params=params, vocab_path="", hidden_size=TINY_BERT.hidden_size,
                     pooling=pooling)


def tiny_config(**overrides):
  """configs/test.py with flattened overrides, e.g. tiny_config(**{"loss.word_weight": 0.0})."""
  config = test_config.get_config()
  config.update_from_flattened_dict(overrides)
  return config
