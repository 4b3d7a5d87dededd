"""tools/probe_discriminator_swaps.py: D's preference for true over one-word-swapped captions, with a stub D."""
import importlib.util
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("probe_discriminator_swaps",
                                               ROOT / "tools" / "probe_discriminator_swaps.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "a", "red", "green", "blue", "circle", "square", "triangle"]
SPEC = "red|green|blue, circle|square|triangle"


def _batches(rng, n_batches=4, n=16):
  """Captions "[CLS] a COLOUR SHAPE [SEP]"; each image stores its colour's token id in pixel (0, 0, 0)."""
  for _ in range(n_batches):
    colours = rng.integers(4, 7, n)
    shapes = rng.integers(7, 10, n)
    ids = np.stack([np.ones(n), np.full(n, 3), colours, shapes, np.full(n, 2)], axis=1).astype(np.int32)
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = colours
    yield {"image": images, "token_ids": ids, "token_mask": np.ones_like(ids), "valid": np.ones(n)}


def _colour_only_d(images, token_ids, token_mask):
  """Scores 1 when the caption names the image's colour; blind to shape."""
  del token_mask
  match = np.any(token_ids == images[:, 0, 0, 0][:, None], axis=1).astype(np.float32)
  return match, 2.0 * match, -match


def test_preference_rows_tell_a_seen_attribute_from_an_ignored_one():
  families = probe._family_tables(SPEC, VOCAB)   # pylint: disable=protected-access
  rows = probe.preference_rows(_colour_only_d, _batches(np.random.default_rng(0)), families)
  by_name = {row["family"]: row for row in rows}
  assert [row["family"] for row in rows] == ["red ...", "circle ...", "random caption"]
  assert by_name["red ..."]["captions"] == 64
  assert by_name["red ..."]["cosine_wins"] == 1.0 and by_name["red ..."]["logit_wins"] == 1.0
  assert by_name["red ..."]["cosine_gap"] == 1.0
  assert by_name["red ..."]["word_region_wins"] == 0.0        # the stub's third score prefers the wrong colour
  assert by_name["circle ..."]["cosine_wins"] == 0.5 and by_name["circle ..."]["cosine_gap"] == 0.0
  # Another caption of the batch names another colour about 2/3 of the time (3 colours): wins 2/3 + ties 1/6.
  assert 0.7 < by_name["random caption"]["cosine_wins"] < 0.95


def test_exchange_tables_one_per_family():
  tables = probe._family_tables(SPEC, VOCAB, exchange=True)   # pylint: disable=protected-access
  assert list(tables) == ["red ...", "circle ..."]
  np.testing.assert_array_equal(tables["red ..."].ids, [4, 5, 6])
  np.testing.assert_array_equal(tables["red ..."].value, [0, 1, 2])
  np.testing.assert_array_equal(tables["circle ..."].ids, [7, 8, 9])


def _two_colour_batches(rng, n_batches=4, n=16):
  """Captions "[CLS] C1 C2 [SEP]"; each image stores C1 in pixel (0, 0, 0) and C2 in pixel (0, 1, 0)."""
  for _ in range(n_batches):
    colours = rng.integers(4, 7, (n, 2))
    ids = np.concatenate([np.ones((n, 1)), colours, np.full((n, 1), 2)], axis=1).astype(np.int32)
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, 0, :2, 0] = colours
    yield {"image": images, "token_ids": ids, "token_mask": np.ones_like(ids)}


def _binding_d(images, token_ids, token_mask):
  """1 when each colour stands in its place."""
  del token_mask
  match = np.all(token_ids[:, 1:3] == images[:, 0, :2, 0], axis=1).astype(np.float32)
  return match, match, match


def _bag_d(images, token_ids, token_mask):
  """1 when the caption names the image's colours, in any order."""
  del token_mask
  match = np.all(np.sort(token_ids[:, 1:3], axis=1) == np.sort(images[:, 0, :2, 0], axis=1), axis=1)
  return match.astype(np.float32), match.astype(np.float32), match.astype(np.float32)


def test_exchanged_rows_tell_a_binding_d_from_a_bag_of_words_d():
  exchanges = probe._family_tables(SPEC, VOCAB, exchange=True)   # pylint: disable=protected-access
  expected = {_binding_d: 1.0, _bag_d: 0.5}
  for score_fn, want in expected.items():
    rows = probe.preference_rows(score_fn, _two_colour_batches(np.random.default_rng(1)), {}, exchanges=exchanges)
    by_name = {row["family"]: row for row in rows}
    assert [row["family"] for row in rows] == ["red ... exchanged", "circle ... exchanged", "random caption"]
    colour = by_name["red ... exchanged"]
    assert 30 < colour["captions"] < 64          # only captions with two different colours (about 2/3)
    assert colour["cosine_wins"] == want and colour["logit_wins"] == want and colour["word_region_wins"] == want
    assert by_name["circle ... exchanged"]["captions"] == 0
