"""Does a trained run's discriminator tell each validation image's caption from copies with one word swapped?

    python tools/probe_discriminator_swaps.py --workdir=runs/demo [--step=S] [--images=512] [--data-dir=runs/tfds]
        [--words="circle/disk|square/box|triangle, red|green|blue"]

G learns an attribute through D: the sentence-image loss rewards fakes whose D features match their caption's
projection better than other captions'. For each family of --words (default: the run's loss.swap_words, else
configs/shapes.py's) this swaps one word of that family in each validation caption (xmc_gan_jax/word_swaps.py) and
prints, over the captions that have such a word, how often D scores the real image with its true caption above the
swapped one: by the cosine of the sentence-image loss, by D's conditional logit and by the word-region score of D's
regions (`losses.paired_word_region_scores`). 0.5 = D ignores the attribute. Rows "... exchanged" do the same with
the caption's first two words of different values of the family exchanged (e.g. "a red circle on the left and a
blue square on the right" against blue and red exchanged): the binding that a bag of words cannot see. A row for a
random other caption of the batch gives the in-batch negatives' level.
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


# Scores this close are a tie: identical bags of word vectors give sentence vectors equal up to float32 rounding.
TIE_TOLERANCE = 1e-5
# What score_fn returns, in order: the sentence-image cosine, D's conditional logit, the word-region score S.
SCORES = ("cosine", "logit", "word_region")


def _wins(true_scores: np.ndarray, other_scores: np.ndarray) -> np.ndarray:
  """1 where the true caption scores higher by more than TIE_TOLERANCE, 0.5 on a tie, 0 below."""
  diff = true_scores - other_scores
  return (diff > TIE_TOLERANCE) + 0.5 * (np.abs(diff) <= TIE_TOLERANCE)


def preference_rows(score_fn, batches, families: dict[str, object], rng_seed: int = 0,
                    exchanges: dict[str, object] | None = None) -> list[dict]:
  """Per family (and "random caption"): fraction of captions whose true (image, caption) scores beat the swapped.

  Args:
    score_fn: (images uint8 [N,S,S,3], token_ids [N,T], token_mask [N,T]) -> numpy [N] scores named by SCORES.
    batches: iterable of host batches with image, token_ids, token_mask and optional valid.
    families: name -> word_swaps.SwapTable of that family alone.
    exchanges: name -> word_swaps.ExchangeTable of a family alone, whose words `word_swaps.exchange_words` exchanges.
  Returns:
    [{"family", "captions", "cosine_wins", "logit_wins", "word_region_wins", "cosine_gap"}] in the order of
    `families`, then `exchanges` (named "NAME exchanged"), then random; a win counts 1, a tie 0.5.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import word_swaps  # pylint: disable=g-import-not-at-top
  exchanges = exchanges or {}
  names = list(families) + [f"{n} exchanged" for n in exchanges] + ["random caption"]
  wins = {name: [[] for _ in range(len(SCORES) + 1)] for name in names}
  key = jax.random.key(rng_seed)
  perm_rng = np.random.default_rng(rng_seed)
  for b, batch in enumerate(batches):
    rows = np.flatnonzero(np.asarray(batch.get("valid", np.ones(len(batch["token_ids"])))) > 0)
    images, ids, mask = (np.asarray(batch[k])[rows] for k in ("image", "token_ids", "token_mask"))
    true = score_fn(images, ids, mask)

    def record(name, other_ids, other_mask, keep):
      other = score_fn(images, other_ids, other_mask)
      columns = [_wins(t, o) for t, o in zip(true, other)] + [true[0] - other[0]]
      for column, value in enumerate(columns):
        wins[name][column].append(value[keep])

    for f, (name, table) in enumerate(families.items()):
      swapped, valid = word_swaps.swap_words(jax.random.fold_in(key, b * 1000 + f), ids, table, 1)
      record(name, np.asarray(swapped[:, 0]), mask, np.asarray(valid[:, 0]))
    for f, (name, table) in enumerate(exchanges.items()):
      exchanged, valid = word_swaps.exchange_words(jax.random.fold_in(key, b * 1000 + 500 + f), ids, table)
      record(f"{name} exchanged", np.asarray(exchanged), mask, np.asarray(valid))
    other = perm_rng.permutation(len(rows))
    record("random caption", ids[other], mask[other], other != np.arange(len(rows)))
  out = []
  for name, columns in wins.items():
    columns = [np.concatenate(x) if x else np.zeros(0) for x in columns]
    n = len(columns[0])
    row = {"family": name, "captions": n}
    for column, values in zip([f"{s}_wins" for s in SCORES] + ["cosine_gap"], columns):
      row[column] = float(np.mean(values)) if n else float("nan")
    out.append(row)
  return out


def _family_name(values: list[list[str]]) -> str:
  """A parsed family's row name: its first word, e.g. "circle ..."."""
  return values[0][0] + " ..."


def _family_tables(spec: str, vocab: list[str], exchange: bool = False) -> dict[str, object]:
  """One table per family of the spec, named by `_family_name`: word_swaps.SwapTable, or ExchangeTable when
  `exchange`."""
  from xmc_gan_jax import word_swaps  # pylint: disable=g-import-not-at-top
  build = word_swaps.build_exchange_table if exchange else word_swaps.build_table
  return {_family_name(values): build(word_swaps.join_family(values), vocab) for values in word_swaps.parse_spec(spec)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a run trained on captioned shapes")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
  parser.add_argument("--images", type=int, default=512, help="validation images to score")
  parser.add_argument("--data-dir", default="runs/tfds", help="TFDS data_dir of captioned_shapes")
  parser.add_argument("--words", help="word_swaps spec (default: the run's loss.swap_words, else the shapes one)")
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  from configs import shapes as shapes_config  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax import losses, sample, sharding, steps, train  # pylint: disable=g-import-not-at-top
  from xmc_gan_jax.data import sources  # pylint: disable=g-import-not-at-top

  checkpointer, step, config = sample.open_run(args.workdir, args.step)
  config.dataset.data_dir = os.path.abspath(args.data_dir)
  trainer = train.Trainer(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1]))
  state = checkpointer.restore(step, trainer.abstract_state, trainer.state_shardings)
  spec = args.words or config.loss.swap_words or shapes_config.SWAP_WORDS
  vocab = trainer.text.word_pieces()
  families = _family_tables(spec, vocab)

  @jax.jit
  def scores(images, token_ids, token_mask):
    words, sentence = steps.text_features(trainer.modules, trainer.text_params, token_ids, token_mask)
    out, _ = steps.discriminate(trainer.modules, state.d_params, state.d_sn_stats, steps.to_unit_range(images),
                                sentence, train=False)
    cosine = (losses.l2_normalize(out["features"]) * losses.l2_normalize(out["sentence_features"])).sum(-1)
    word_region = losses.paired_word_region_scores(words, token_mask, out["regions"], config.loss.gamma1,
                                                   config.loss.gamma2)
    return cosine, out["logits"], word_region

  def score_fn(images, token_ids, token_mask):
    return tuple(np.asarray(x) for x in scores(images, token_ids, token_mask))

  batches = sources.eval_source(config, trainer.text.vocab_path, trainer.text.vocab_size,
                                num_examples=args.images, batch_size=config.eval.batch_size)
  rows = preference_rows(score_fn, batches, families, exchanges=_family_tables(spec, vocab, exchange=True))
  print(f"{args.workdir} step {step}: D prefers the true caption of a real validation image over a copy with one "
        f"word of the family swapped or two of its words exchanged ({args.images} images)")
  print("| swapped | captions | by sentence-image cosine | by D's logit | by word-region score | mean cosine gap |\n"
        "|---|---|---|---|---|---|")
  for row in rows:
    print(f"| {row['family']} | {row['captions']} | {row['cosine_wins']:.3f} | {row['logit_wins']:.3f} | "
          f"{row['word_region_wins']:.3f} | {row['cosine_gap']:.3f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
