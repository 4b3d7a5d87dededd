"""tf_text tokenisation against goldens from the reference tokenizer (tools/make_tokenizer_goldens.py)."""
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from xmc_gan_jax.data import tokenizer as tokenizer_lib

GOLDENS = os.path.join(os.path.dirname(__file__), "..", "goldens", "tokenizer_ids.json")


@pytest.fixture(scope="module")
def goldens():
  with open(GOLDENS, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def vocab_path(goldens):
  path = tokenizer_lib.default_vocab_path()
  with open(path, "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == goldens["vocab_sha256"], "goldens made with another vocab"
  return path


def test_goldens_are_varied(goldens):
  captions = goldens["captions"]
  assert len(captions) >= 20
  joined = "".join(captions)
  for probe in ("é", "東", "🐱", "7:30", "\t", "Straße"):
    assert probe in joined
  assert max(len(ids) for ids in goldens["wordpiece_ids"]) > 64  # a caption longer than the LN max length


def test_wordpieces_match_reference(goldens, vocab_path):
  tok = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=17)
  ours = tok.wordpieces(tf.constant(goldens["captions"])).to_list()
  for caption, got, want in zip(goldens["captions"], ours, goldens["wordpiece_ids"]):
    assert got == want, f"caption {caption!r}"


@pytest.mark.parametrize("max_length", [17, 64])
def test_padded_ids_and_mask_match_reference(goldens, vocab_path, max_length):
  tok = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=max_length)
  ids, mask = tok.tokenize(goldens["captions"])
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  assert ids.shape == (len(goldens["captions"]), max_length)
  np.testing.assert_array_equal(ids, np.array(goldens["input_ids"][str(max_length)]))
  np.testing.assert_array_equal(mask, np.array(goldens["attention_mask"][str(max_length)]))


def test_truncation_flag_counts_dropped_wordpieces(goldens, vocab_path):
  tok = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=17)
  out = tok.tokenize_tf(tf.constant(goldens["captions"]))
  want = [len(ids) > 15 for ids in goldens["wordpiece_ids"]]
  assert out.truncated.numpy().tolist() == want
  assert 0 < sum(want) < len(want)
  # A truncated row ends with [SEP] in the last slot and keeps the first 15 word pieces.
  for row, ids, long in zip(out.ids.numpy(), goldens["wordpiece_ids"], want):
    if long:
      assert row[0] == tok.cls_id and row[-1] == tok.sep_id and row[1:-1].tolist() == ids[:15]


def test_same_ids_inside_tf_data(goldens, vocab_path):
  tok = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=17)
  ds = tf.data.Dataset.from_tensor_slices(goldens["captions"]).batch(5).map(lambda c: tok.tokenize_tf(c).ids)
  np.testing.assert_array_equal(np.concatenate(list(ds.as_numpy_iterator())),
                                np.array(goldens["input_ids"]["17"]))


def test_invalid_utf8_is_replaced_not_fatal(vocab_path):
  tok = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=8)
  bad = tok.tokenize_tf(tf.constant([b"a \xff\xfedog\xc3"])).ids.numpy()
  clean, _ = tok.tokenize(["a dog"])
  np.testing.assert_array_equal(bad, clean)


def test_empty_list_and_empty_caption(vocab_path):
  tok = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=5)
  ids, mask = tok.tokenize([])
  assert ids.shape == (0, 5) and mask.shape == (0, 5)
  ids, mask = tok.tokenize([""])
  assert ids.tolist() == [[tok.cls_id, tok.sep_id, 0, 0, 0]] and mask.tolist() == [[1, 1, 0, 0, 0]]


def test_bad_arguments_raise_clear_errors(vocab_path, tmp_path):
  with pytest.raises(ValueError, match="max_length"):
    tokenizer_lib.BertTextTokenizer(vocab_path, max_length=1)
  with pytest.raises(FileNotFoundError):
    tokenizer_lib.BertTextTokenizer(str(tmp_path / "missing.txt"), max_length=8)
  not_bert = tmp_path / "vocab.txt"
  not_bert.write_text("a\nb\n")
  with pytest.raises(ValueError, match="CLS"):
    tokenizer_lib.BertTextTokenizer(str(not_bert), max_length=8)
  with pytest.raises(TypeError, match="list"):
    tokenizer_lib.BertTextTokenizer(vocab_path, max_length=8).tokenize("a single string")
  with pytest.raises(FileNotFoundError, match="vocab.txt"):
    tokenizer_lib.vocab_path_for(str(tmp_path / "no_such_bert"))
  assert tokenizer_lib.vocab_path_for("") == vocab_path


def test_cased_vocab_keeps_case(vocab_path, tmp_path):
  # A cased folder (do_lower_case false) must not lower-case: "Dog" is not in this uncased vocab -> pieces differ.
  folder = tmp_path / "cased"
  folder.mkdir()
  (folder / "vocab.txt").write_bytes(open(vocab_path, "rb").read())
  (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
  cased = tokenizer_lib.BertTextTokenizer(str(folder / "vocab.txt"), max_length=8)
  uncased = tokenizer_lib.BertTextTokenizer(vocab_path, max_length=8)
  assert not cased.lower_case and uncased.lower_case
  assert cased.tokenize(["Dog"])[0].tolist() != uncased.tokenize(["Dog"])[0].tolist()
  assert cased.tokenize(["dog"])[0].tolist() == uncased.tokenize(["dog"])[0].tolist()
