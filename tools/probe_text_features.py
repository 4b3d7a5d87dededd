"""How strongly the frozen text encoder's sentence vectors encode each attribute of one-object shapes captions.

    python tools/probe_text_features.py [--captions=1024] [--data-dir=runs/tfds] [--set text_encoder.pooling=cls]

For the one-object captions among the first --captions validation examples of configs/shapes.py it prints, per
attribute (colour, shape, size, row, column):
  variance share  between-class sum of squares / total sum of squares of the centred sentence vectors [N, E]:
                  the fraction of the vectors' spread that the attribute explains;
  probe accuracy  held-out accuracy of a ridge-regression probe (first 60 % fit, rest scored), i.e. whether the
                  attribute can be read off linearly at all.
An attribute with a high probe accuracy but a small variance share is present but faint: a learned projection has
to amplify it against the dominant directions before G or D can use it.
"""
import argparse
import os
import pathlib
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

ATTRIBUTES = ("color", "shape", "size", "row", "col")


def variance_share(vectors: np.ndarray, labels: np.ndarray) -> float:
  """Between-class / total sum of squares of vectors [N, E] grouped by integer labels [N] (in [0, 1])."""
  centred = np.asarray(vectors, np.float64) - np.mean(vectors, axis=0)
  total = float(np.sum(centred ** 2))
  between = sum(float(np.sum(centred[labels == k].mean(axis=0) ** 2)) * int(np.sum(labels == k))
                for k in np.unique(labels))
  return between / total if total > 0 else 0.0


def probe_accuracy(vectors: np.ndarray, labels: np.ndarray, fit_fraction: float = 0.6,
                   ridge: float = 1e-3) -> float:
  """Held-out accuracy of ridge regression onto one-hot labels, fit on the first `fit_fraction` of the rows."""
  x = np.asarray(vectors, np.float64)
  x = x - x.mean(axis=0)
  classes, index = np.unique(labels, return_inverse=True)
  targets = np.eye(len(classes))[index]
  fit = np.arange(len(x)) < int(round(fit_fraction * len(x)))
  if fit.all() or not fit.any():
    raise ValueError(f"fit_fraction={fit_fraction} leaves no rows to fit or to score ({len(x)} rows).")
  a = x[fit]
  weights = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ targets[fit])
  return float(np.mean(np.argmax(x[~fit] @ weights, axis=1) == index[~fit]))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--captions", type=int, default=1024, help="validation examples to read (first caption each)")
  parser.add_argument("--data-dir", default="runs/tfds", help="TFDS data_dir of captioned_shapes")
  parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (repeatable)")
  args = parser.parse_args(argv)
  from xmc_gan_jax import demo  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax.data import sources  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax.models import text_encoder  # pylint: disable=g-import-not-at-top
  config = demo.build_config(argparse.Namespace(res=32, data_dir=args.data_dir, set=args.set))
  encoder = text_encoder.load_text_encoder(config.text_encoder.path, config.text_encoder.pooling,
                                           config.text_encoder.features)
  sentences, objects = [], {}
  for batch in sources.eval_source(config, encoder.vocab_path, encoder.vocab_size, num_examples=args.captions,
                                   batch_size=config.eval.batch_size):
    rows = np.flatnonzero(batch.get("valid", np.ones(len(batch["token_ids"]))) > 0)
    sentences.append(np.asarray(encoder.encode(batch["token_ids"], batch["token_mask"])[1])[rows])
    for key in ("num_objects",) + tuple(f"objects/{a}" for a in ATTRIBUTES):
      objects.setdefault(key, []).append(np.asarray(batch[key])[rows])
  sentences = np.concatenate(sentences)
  objects = {k: np.concatenate(v) for k, v in objects.items()}
  one = objects["num_objects"] == 1
  if one.sum() < 10:
    raise ValueError(f"Only {int(one.sum())} one-object captions among {len(one)}; raise --captions.")
  print(f"{int(one.sum())} one-object captions, {config.text_encoder.path or 'all-MiniLM-L6-v2'} "
        f"({config.text_encoder.features} features, {config.text_encoder.pooling} pooling), sentence vectors of "
        f"width {sentences.shape[1]}")
  print("| attribute | variance share | probe accuracy |\n|---|---|---|")
  for attribute in ATTRIBUTES:
    labels = objects[f"objects/{attribute}"][one, 0]
    print(f"| {attribute} | {variance_share(sentences[one], labels):.3f} | "
          f"{probe_accuracy(sentences[one], labels):.3f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
