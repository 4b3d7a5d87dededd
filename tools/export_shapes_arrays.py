"""Exports captioned shapes and a shrunk text encoder as plain arrays, for machines without TensorFlow.

    python tools/export_shapes_arrays.py --out=.gpu/shapes32 [--res=32] [--data_dir=runs/tfds]

Writes into --out:
  arrays.npz     train_image uint8 [N,S,S,3]; train_token_ids int16 [N,5,T] (all 5 captions of each image,
                 tokenised as the tf.data pipeline does, ids in the shrunk vocabulary below); the evaluation set
                 of `make demo` (the first --eval_images validation examples with the demo's caption choice):
                 eval_token_ids / eval_token_mask int32 [E,T], eval_objects_{color,shape,size,row,col} int
                 [E,3], eval_num_objects [E], eval_caption bytes [E].
  text_encoder/  config.json, vocab.txt and model.safetensors of the config's BERT restricted to the word
                 pieces the captions use (float16): the encoder outputs the same features for these ids, to
                 float16 rounding (with text_encoder.features=random_words the random vectors differ from the
                 full vocabulary's draw, with the same distribution).
The shrunk encoder is ~25 MB instead of ~90 MB, so data and weights travel together (tools/sweep_shapes.py
trains from them with JAX alone). The tool checks that the shrunk encoder reproduces the full one's features on
the evaluation captions and prints the largest difference.
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
import numpy as np
import safetensors.numpy
import tensorflow as tf

from configs import shapes as shapes_config
from xmc_gan_jax.data import input_pipeline, sources
from xmc_gan_jax.data import tokenizer as tokenizer_lib
from xmc_gan_jax.models import bert_weights
from xmc_gan_jax.models import text_encoder as text_encoder_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder.", required=True)
flags.DEFINE_integer("res", 32, "Image size of the captioned_shapes config (32 or 64).")
flags.DEFINE_string("data_dir", "runs/tfds", "TFDS data_dir (prepared on first use).")
flags.DEFINE_integer("eval_images", 512, "Validation examples in the evaluation set.")

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CAPTIONS_PER_IMAGE = 5


def train_arrays(config, tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N,S,S,3], token ids int32 [N,5,T]) of the whole train split, in stored order."""
  spec = input_pipeline.dataset_spec("shapes", config.model.image_size)
  builder = input_pipeline.load_builder(spec, config.dataset.data_dir, "", 1)
  records, _ = input_pipeline.read_records(builder, spec, config.dataset.train_split, 0, 1)
  images, ids = [], []
  for batch in records.batch(1000).as_numpy_iterator():
    images.extend(tf.io.decode_png(encoded, channels=3).numpy() for encoded in batch["image"])
    captions = batch["captions"]
    if captions.shape[1] != CAPTIONS_PER_IMAGE:
      raise ValueError(f"expected {CAPTIONS_PER_IMAGE} captions per image, got {captions.shape[1]}")
    flat_ids, _ = tokenizer.tokenize([c.decode() for c in captions.reshape(-1)])
    ids.append(flat_ids.reshape(captions.shape[0], CAPTIONS_PER_IMAGE, -1))
  return np.stack(images), np.concatenate(ids)


def eval_arrays(config, vocab_path: str, num_images: int) -> dict[str, np.ndarray]:
  """The demo's evaluation batches (sources.eval_source), concatenated and stripped of padding rows."""
  parts = {}
  for batch in sources.eval_source(config, vocab_path, 0, num_examples=num_images, batch_size=64):
    rows = np.flatnonzero(batch.get("valid", np.ones(len(batch["caption"]))) > 0)
    for key in ("token_ids", "token_mask", "num_objects", "caption"):
      parts.setdefault(key, []).append(batch[key][rows])
    for key in ("color", "shape", "size", "row", "col"):
      parts.setdefault(f"objects_{key}", []).append(batch[f"objects/{key}"][rows])
  out = {f"eval_{key}": np.concatenate(value) for key, value in parts.items()}
  out["eval_caption"] = out["eval_caption"].astype(bytes)  # fixed-width bytes: npz loads it without pickle
  return out


def shrink_vocabulary(vocab: list[str], used_ids: np.ndarray) -> np.ndarray:
  """Old ids kept, in order: the special tokens, then every id the captions use. Returns int64 [V_small]."""
  keep = {vocab.index(token) for token in SPECIAL_TOKENS if token in vocab}
  keep |= {int(i) for i in used_ids}
  return np.array(sorted(keep), np.int64)


def write_shrunk_encoder(source: str, out: str, vocab: list[str], kept_ids: np.ndarray) -> None:
  """config.json / vocab.txt / model.safetensors (float16) of the BERT folder `source` (vocabulary `vocab`) with
  only the rows `kept_ids` of the word table."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
    raw = json.load(f)
  raw["vocab_size"] = int(len(kept_ids))
  with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
    json.dump(raw, f, indent=1)
  with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("".join(vocab[i] + "\n" for i in kept_ids))
  tensors = safetensors.numpy.load_file(os.path.join(source, "model.safetensors"))
  shrunk = {}
  for name, value in tensors.items():
    if name.endswith("word_embeddings.weight"):
      value = value[kept_ids]
    if np.issubdtype(value.dtype, np.floating):
      value = value.astype(np.float16)
    shrunk[name] = np.ascontiguousarray(value)
  safetensors.numpy.save_file(shrunk, os.path.join(out, "model.safetensors"))


def max_feature_difference(full_path: str, shrunk_path: str, ids: np.ndarray, new_ids: np.ndarray,
                           mask: np.ndarray) -> float:
  """Largest |word feature| difference between the full encoder on `ids` and the shrunk one on `new_ids`."""
  full = text_encoder_lib.load_text_encoder(full_path)
  small = text_encoder_lib.load_text_encoder(shrunk_path)
  a, _ = full.encode(ids, mask)
  b, _ = small.encode(new_ids, mask)
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def main(argv):
  del argv
  config = shapes_config.get_config(f"res={FLAGS.res}")
  config.dataset.data_dir = os.path.abspath(FLAGS.data_dir)
  encoder_path = config.text_encoder.path or bert_weights.default_text_encoder_path()
  vocab_path = tokenizer_lib.vocab_path_for(config.text_encoder.path)
  tokenizer = tokenizer_lib.BertTextTokenizer(vocab_path, int(config.text_encoder.max_length))
  images, train_ids = train_arrays(config, tokenizer)
  evaluation = eval_arrays(config, vocab_path, FLAGS.eval_images)
  vocab = tokenizer_lib.read_vocab(vocab_path)
  kept = shrink_vocabulary(vocab, np.union1d(np.unique(train_ids), np.unique(evaluation["eval_token_ids"])))
  remap = np.full(len(vocab), -1, np.int64)
  remap[kept] = np.arange(len(kept))
  new_train = remap[train_ids].astype(np.int16)
  new_eval = remap[evaluation["eval_token_ids"]].astype(np.int32)
  assert new_train.min() >= 0 and new_eval.min() >= 0

  encoder_out = os.path.join(FLAGS.out, "text_encoder")
  write_shrunk_encoder(encoder_path, encoder_out, vocab, kept)
  original_eval_ids = evaluation["eval_token_ids"]
  evaluation["eval_token_ids"] = new_eval
  np.savez_compressed(os.path.join(FLAGS.out, "arrays.npz"), train_image=images, train_token_ids=new_train,
                      **evaluation)
  difference = max_feature_difference(encoder_path, encoder_out, original_eval_ids[:64], new_eval[:64],
                                      evaluation["eval_token_mask"][:64])
  size_mb = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(FLAGS.out)
                for f in files) / 1e6
  print(f"{len(images)} train images, {len(new_eval)} eval captions, vocabulary {len(vocab)} -> {len(kept)} "
        f"word pieces; largest word-feature difference shrunk vs full encoder: {difference:.2e}; "
        f"{size_mb:.1f} MB in {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
