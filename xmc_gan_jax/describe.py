"""`--mode=describe`: parameter counts, FLOPs per train step and compiled memory, without training.

Everything is abstract (ShapeDtypeStructs): nothing is allocated, so the paper's 256 px model can be described on
a laptop. The text encoder's weights are not needed: its architecture comes from the folder's config.json or, for
well-known names such as `bert-base-uncased`, from the published hyper-parameters.
"""
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections

from xmc_gan_jax import config_validation
from xmc_gan_jax import model_factory
from xmc_gan_jax import sharding
from xmc_gan_jax import steps
from xmc_gan_jax import train_state
from xmc_gan_jax.models import bert_weights
from xmc_gan_jax.models.text_encoder import encoder_for_features

# Published architectures, so that describe works before the weights are downloaded.
KNOWN_BERT_CONFIGS = {
    "bert-base-uncased": bert_weights.BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, type_vocab_size=2),
    "bert-large-uncased": bert_weights.BertConfig(
        vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=512, type_vocab_size=2),
}


def text_encoder_architecture(path: str) -> tuple[bert_weights.BertConfig, str]:
  """(BertConfig, where it came from) for a folder, the default MiniLM, or a well-known model name."""
  folder = path or bert_weights.default_text_encoder_path()
  if os.path.isfile(os.path.join(folder, "config.json")):
    return bert_weights.read_bert_config(folder), os.path.join(folder, "config.json")
  name = os.path.basename(os.path.normpath(folder))
  if name in KNOWN_BERT_CONFIGS:
    return KNOWN_BERT_CONFIGS[name], f"published {name} architecture (weights not found at {folder!r})"
  bert_weights.check_bert_folder(folder)  # raises with instructions
  raise AssertionError("unreachable")


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def describe(config: ml_collections.ConfigDict) -> str:
  """Returns a printable report for `config` on the mesh built from `config.mesh`."""
  mesh = sharding.make_mesh(config.mesh)
  config_validation.validate(config, sharding.batch_devices(mesh), jax.process_count())
  bert_config, source = text_encoder_architecture(config.text_encoder.path)
  text_module = encoder_for_features(bert_config, config.text_encoder.features)
  modules = model_factory.build_modules(config, text_module, bert_config.hidden_size)
  state = train_state.abstract_state(modules, config)
  length = config.text_encoder.max_length
  text_params = jax.eval_shape(lambda: text_module.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32),
                                                        jnp.ones((1, length), jnp.int32)))["params"]
  replicated = sharding.replicated(mesh)
  state_sh = sharding.state_shardings(state, mesh)
  k = config.optim.d_steps_per_g_step
  n = config.batch_size // k
  size = config.model.image_size
  batch_sh = sharding.batch_sharding(mesh, 1)
  batch = {"image": jax.ShapeDtypeStruct((k, n, size, size, 3), jnp.uint8, sharding=batch_sh),
           "token_ids": jax.ShapeDtypeStruct((k, n, length), jnp.int32, sharding=batch_sh),
           "token_mask": jax.ShapeDtypeStruct((k, n, length), jnp.int32, sharding=batch_sh)}
  step_fn = jax.jit(functools.partial(steps.train_step, modules),
                    in_shardings=(state_sh, replicated, batch_sh, replicated),
                    out_shardings=(state_sh, replicated), donate_argnums=(0,))
  rng = jax.eval_shape(lambda: jax.random.key(0))
  compiled = step_fn.lower(_abstract(state, state_sh), jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), text_params), batch, rng).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  memory = compiled.memory_analysis()

  counts = {"generator": train_state.count_params(state.g_params),
            "discriminator": train_state.count_params(state.d_params),
            "text encoder (frozen)": train_state.count_params(text_params)}
  lines = [f"config: {size} px, gf={config.model.gf_dim}, df={config.model.df_dim}, z={config.model.z_dim}, "
           f"text width {bert_config.hidden_size} ({source}; {config.text_encoder.features} features), "
           f"dtype {config.model.dtype}",
           f"mesh: {dict(mesh.shape)} over {mesh.devices.size} {jax.devices()[0].platform} device(s); "
           f"global batch {config.batch_size} per step = {k} sub-batches of {n}",
           "parameters:"]
  lines += [f"  {name:<22} {count / 1e6:9.2f} M" for name, count in counts.items()]
  lines.append(f"train step FLOPs (XLA cost analysis, whole program): {flops / 1e12:.3f} TFLOP "
               f"({flops / max(config.batch_size, 1) / 1e9:.2f} GFLOP per example)")
  if memory is not None:
    gib = 2.0 ** 30
    lines.append("compiled step memory per device: "
                 f"arguments {memory.argument_size_in_bytes / gib:.2f} GiB, "
                 f"outputs {memory.output_size_in_bytes / gib:.2f} GiB, "
                 f"temporaries {memory.temp_size_in_bytes / gib:.2f} GiB, "
                 f"generated code {memory.generated_code_size_in_bytes / 2**20:.1f} MiB")
  return "\n".join(lines)
