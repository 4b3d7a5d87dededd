"""word_swaps: spec parsing, the lookup table and the distribution of swapped captions."""
import collections

import jax
import numpy as np
import pytest

from xmc_gan_jax import word_swaps

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "a", "red", "green", "blue", "circle", "disk", "square", "box", "triangle",
         "small", "large", "in", "the"]
SPEC = "circle/disk|square/box|triangle, red|green|blue, small|large"
FAMILY = {"circle": 0, "disk": 0, "square": 1, "box": 1, "triangle": 2, "red": 3, "green": 4, "blue": 5,
          "small": 6, "large": 7}            # word -> value (0-2 shapes, 3-5 colours, 6-7 sizes)
KIND = {w: ("shape" if v < 3 else "colour" if v < 6 else "size") for w, v in FAMILY.items()}


def _ids(words):
  return [VOCAB.index(w) for w in words]


def test_parse_spec():
  assert word_swaps.parse_spec("a/b|c, d|e") == [[["a", "b"], ["c"]], [["d"], ["e"]]]
  assert word_swaps.spec_words("a/b|c, d|e") == ["a", "b", "c", "d", "e"]
  assert word_swaps.join_family([["a", "b"], ["c"]]) == "a/b|c"
  with pytest.raises(ValueError, match="at least two"):
    word_swaps.parse_spec("a/b, c|d")
  with pytest.raises(ValueError, match="names no family"):
    word_swaps.parse_spec(" , ")


def test_build_table_probabilities():
  table = word_swaps.build_table(SPEC, VOCAB)
  assert list(table.ids) == sorted(_ids(FAMILY))
  for row, token in enumerate(table.ids):
    probs = {}
    for new_id, log_p in zip(table.candidates[row], table.log_probs[row]):
      if np.isfinite(log_p):
        probs[VOCAB[new_id]] = probs.get(VOCAB[new_id], 0.0) + float(np.exp(log_p))
    word = VOCAB[token]
    assert abs(sum(probs.values()) - 1.0) < 1e-6
    assert all(KIND[w] == KIND[word] and FAMILY[w] != FAMILY[word] for w in probs)
    if word == "circle":    # square and box share the square value's half; triangle has the other half
      assert probs == pytest.approx({"square": 0.25, "box": 0.25, "triangle": 0.5})
    if word == "red":
      assert probs == pytest.approx({"green": 0.5, "blue": 0.5})


def test_build_table_errors():
  with pytest.raises(ValueError, match="not one word piece"):
    word_swaps.build_table("circle|hexagon", VOCAB)
  with pytest.raises(ValueError, match="appears twice"):
    word_swaps.build_table("circle|square, circle|box", VOCAB)


def test_swap_words_changes_one_attribute_word():
  table = word_swaps.build_table(SPEC, VOCAB)
  caption = _ids(["[CLS]", "a", "red", "small", "disk", "in", "the", "[SEP]"]) + [0, 0]
  plain = _ids(["[CLS]", "a", "in", "the", "[SEP]"]) + [0] * 5
  k = 3000
  swapped, valid = word_swaps.swap_words(jax.random.key(0), np.array([caption, plain], np.int32), table, k)
  swapped, valid = np.asarray(swapped), np.asarray(valid)
  assert swapped.shape == (2, k, 10) and valid.tolist() == [[True] * k, [False] * k]
  np.testing.assert_array_equal(swapped[1], np.broadcast_to(plain, (k, 10)))   # nothing to swap: unchanged
  changed = swapped[0] != np.array(caption)
  assert np.all(changed.sum(axis=1) == 1)
  kinds, shapes = collections.Counter(), collections.Counter()
  for row, where in zip(swapped[0], changed.argmax(axis=1)):
    old, new = VOCAB[caption[where]], VOCAB[row[where]]
    assert KIND[old] == KIND[new] and FAMILY[old] != FAMILY[new]
    kinds[KIND[old]] += 1
    if KIND[old] == "shape":
      shapes[new] += 1
  # One of the caption's three attribute words, uniformly; another value uniformly, then a synonym uniformly.
  for kind in ("shape", "colour", "size"):
    assert abs(kinds[kind] / k - 1 / 3) < 0.04
  n_shape = kinds["shape"]
  assert abs(shapes["triangle"] / n_shape - 0.5) < 0.06
  assert abs(shapes["square"] / n_shape - 0.25) < 0.06 and abs(shapes["box"] / n_shape - 0.25) < 0.06


def test_build_exchange_table():
  table = word_swaps.build_exchange_table(SPEC, VOCAB)
  assert list(table.ids) == sorted(_ids(FAMILY))
  for token, family, value in zip(table.ids, table.family, table.value):
    word = VOCAB[token]
    assert ("shape", "colour", "size")[family] == KIND[word]
    assert value == FAMILY[word] - (0, 3, 6)[family]
  with pytest.raises(ValueError, match="not one word piece"):
    word_swaps.build_exchange_table("circle|hexagon", VOCAB)
  with pytest.raises(ValueError, match="appears twice"):
    word_swaps.build_exchange_table("circle|square, circle|box", VOCAB)


def test_exchange_words_exchanges_the_first_two_words_of_different_values():
  table = word_swaps.build_exchange_table("red/green|blue", VOCAB)    # red and green: synonyms of one value
  rows = [["a", "red", "circle", "blue"], ["a", "red", "green", "blue"], ["a", "red", "circle", "green"],
          ["a", "circle", "square", "triangle"], ["a", "blue", "red", "blue"]]
  want = [["a", "blue", "circle", "red"], ["a", "blue", "green", "red"], ["a", "red", "circle", "green"],
          ["a", "circle", "square", "triangle"], ["a", "red", "blue", "blue"]]
  ids = np.array([_ids(r) + [0, 0] for r in rows], np.int32)
  exchanged, valid = word_swaps.exchange_words(jax.random.key(0), ids, table)
  np.testing.assert_array_equal(np.asarray(exchanged), [_ids(r) + [0, 0] for r in want])
  np.testing.assert_array_equal(np.asarray(valid), [True, True, False, False, True])


def test_exchange_words_draws_the_family_among_those_that_allow_it():
  table = word_swaps.build_exchange_table(SPEC, VOCAB)
  both = _ids(["a", "red", "circle", "a", "blue", "box", "small"])        # colours and shapes differ, one size
  colour_only = _ids(["a", "red", "disk", "a", "blue", "circle", "in"])   # disk and circle: one shape value
  n = 2000
  ids = np.array([both] * n + [colour_only] * n, np.int32)
  exchanged, valid = word_swaps.exchange_words(jax.random.key(3), ids, table)
  exchanged = np.asarray(exchanged)
  assert np.all(np.asarray(valid))
  colours = exchanged[:n, 1] == VOCAB.index("blue")
  shapes = exchanged[:n, 2] == VOCAB.index("box")
  np.testing.assert_array_equal(colours, ~shapes)                # exactly one family exchanged per caption
  assert abs(colours.mean() - 0.5) < 0.04                         # 4 standard errors
  np.testing.assert_array_equal(exchanged[n:], [_ids(["a", "blue", "disk", "a", "red", "circle", "in"])] * n)
  np.testing.assert_array_equal(np.sort(exchanged, axis=1), np.sort(ids, axis=1))   # nothing added or lost
