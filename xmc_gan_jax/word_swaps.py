"""Attribute-swap negatives: copies of a caption with one attribute word replaced by a word of another value.

In-batch negatives rarely differ from the positive in one attribute only, so once colour and position tell the
captions of a batch apart the sentence-image loss stops asking D (and through D, G) for the rest: after 10,501
steps of the shapes demo D preferred the true caption of a validation image over a copy with one shape word
swapped 69 % of the time, against 97 % for a swapped colour word (tools/probe_discriminator_swaps.py). A swapped
copy is a negative that only the swapped attribute tells apart (`loss.swap_negatives`; not in the original).

Spec (`loss.swap_words`): families separated by ",", a family's values by "|", a value's synonyms by "/", e.g.
"circle/disk|square/box|triangle, red|green|blue". Every word must be one word piece of the vocabulary. A swap
picks one word of the caption that belongs to some family (uniformly among the caption's such words) and replaces
it by a word of another value of that family (values equally likely, then synonyms equally likely).

Exchange negatives (`loss.exchange_negatives`, also not in the original) keep every word and move two: a
caption's first word of a family is exchanged with its first later word of another value of that family ("a red
circle in the top left with a blue square below it" -> "a blue circle ... a red square ..."), the family drawn
uniformly among those where the caption allows it. Only features that see word order tell the two apart.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SwapTable(NamedTuple):
  """Lookup arrays, S = number of swappable word pieces, C = most replacements of any of them.

  ids: int32 [S], the swappable token ids, sorted.
  candidates: int32 [S, C], replacement ids of each (padding repeats the first with probability 0).
  log_probs: float32 [S, C], log probability of each replacement (-inf on padding).
  """
  ids: np.ndarray
  candidates: np.ndarray
  log_probs: np.ndarray


def parse_spec(spec: str) -> list[list[list[str]]]:
  """"a/b|c, d|e" -> [[["a", "b"], ["c"]], [["d"], ["e"]]]; ValueError if a family has fewer than 2 values."""
  families = []
  for family_text in spec.split(","):
    if not family_text.strip():
      continue
    values = [[w for w in value.strip().split("/") if w] for value in family_text.split("|")]
    if len(values) < 2 or any(not v for v in values):
      raise ValueError(f"loss.swap_words: family {family_text.strip()!r} needs at least two non-empty values "
                       "separated by '|' (synonyms by '/', families by ',').")
    families.append(values)
  if not families:
    raise ValueError(f"loss.swap_words={spec!r} names no family of words to swap.")
  return families


def join_family(values) -> str:
  """One family in spec form: [["a", "b"], ["c"]] -> "a/b|c"."""
  return "|".join("/".join(words) for words in values)


def spec_words(spec: str) -> list[str]:
  """Every word of the spec once, in order: a stand-in vocabulary giving a table of the right shape."""
  return [word for values in parse_spec(spec) for value in values for word in value]


class ExchangeTable(NamedTuple):
  """Lookup arrays for exchanges, S = number of listed word pieces.

  ids: int32 [S], the listed token ids, sorted.
  family: int32 [S], the family index of each (order of the spec).
  value: int32 [S], its value index within the family (synonyms share one).
  """
  ids: np.ndarray
  family: np.ndarray
  value: np.ndarray


def _vocab_index(spec: str, vocab: list[str]) -> dict[str, int]:
  """{word piece: id} of `vocab`; ValueError if a word of `spec` is not one word piece of it."""
  index = {piece: i for i, piece in enumerate(vocab)}
  for word in spec_words(spec):
    if word not in index:
      raise ValueError(f"loss.swap_words: {word!r} is not one word piece of the text encoder's vocabulary; "
                       "use words the tokenizer keeps whole.")
  return index


def build_table(spec: str, vocab: list[str]) -> SwapTable:
  """SwapTable of `spec` over `vocab` (word pieces in id order). ValueError on unknown or repeated words."""
  index = _vocab_index(spec, vocab)
  families = parse_spec(spec)
  replacements: dict[int, list[tuple[int, float]]] = {}
  for values in families:
    for v, value in enumerate(values):
      others = [other for o, other in enumerate(values) if o != v]
      for word in value:
        if index[word] in replacements:
          raise ValueError(f"loss.swap_words: {word!r} appears twice.")
        replacements[index[word]] = [(index[w], 1.0 / (len(others) * len(other))) for other in others
                                     for w in other]
  ids = np.array(sorted(replacements), np.int32)
  width = max(len(r) for r in replacements.values())
  candidates = np.zeros((len(ids), width), np.int32)
  log_probs = np.full((len(ids), width), -np.inf, np.float32)
  for row, token in enumerate(ids):
    for col, (new_id, prob) in enumerate(replacements[int(token)]):
      candidates[row, col], log_probs[row, col] = new_id, np.log(prob)
    candidates[row, len(replacements[int(token)]):] = candidates[row, 0]
  return SwapTable(ids, candidates, log_probs)


def swap_words(rng: jax.Array, token_ids: jax.Array, table: SwapTable, k: int) -> tuple[jax.Array, jax.Array]:
  """k independent one-word swaps of each caption.

  Args:
    rng: PRNG key.
    token_ids: int [N, T].
    table: from build_table.
    k: swapped copies per caption.
  Returns:
    (ids int [N, k, T], valid bool [N, k]): copies of the captions with one word replaced; valid is False for a
    caption with no swappable word (its copies are unchanged and must not be used as negatives).
  """
  ids_table = jnp.asarray(table.ids)
  row = jnp.clip(jnp.searchsorted(ids_table, token_ids), 0, ids_table.shape[0] - 1)   # [N, T]
  swappable = ids_table[row] == token_ids
  n, t = token_ids.shape
  pick_rng, word_rng = jax.random.split(rng)
  position_logits = jnp.broadcast_to(jnp.where(swappable, 0.0, -jnp.inf)[:, None, :], (n, k, t))
  position = jax.random.categorical(pick_rng, position_logits, axis=-1)                  # [N, k]
  valid = jnp.broadcast_to(jnp.any(swappable, axis=-1)[:, None], (n, k))
  position = jnp.where(valid, position, 0)
  table_row = jnp.take_along_axis(row, position, axis=-1)                                # [N, k]
  choice = jax.random.categorical(word_rng, jnp.asarray(table.log_probs)[table_row], axis=-1)
  new_id = jnp.asarray(table.candidates)[table_row, choice]
  at = jnp.arange(t)[None, None, :] == position[:, :, None]
  swapped = jnp.where(at & valid[:, :, None], new_id[:, :, None].astype(token_ids.dtype), token_ids[:, None, :])
  return swapped, valid


def build_exchange_table(spec: str, vocab: list[str]) -> ExchangeTable:
  """ExchangeTable of `spec` over `vocab` (word pieces in id order). ValueError on unknown or repeated words."""
  index = _vocab_index(spec, vocab)
  rows: dict[int, tuple[int, int]] = {}
  for f, values in enumerate(parse_spec(spec)):
    for v, value in enumerate(values):
      for word in value:
        if index[word] in rows:
          raise ValueError(f"loss.swap_words: {word!r} appears twice.")
        rows[index[word]] = (f, v)
  ids = np.array(sorted(rows), np.int32)
  return ExchangeTable(ids, np.array([rows[int(i)][0] for i in ids], np.int32),
                       np.array([rows[int(i)][1] for i in ids], np.int32))


def exchange_words(rng: jax.Array, token_ids: jax.Array, table: ExchangeTable) -> tuple[jax.Array, jax.Array]:
  """One exchange per caption (see the module docstring).

  Args:
    rng: PRNG key (picks the family where a caption allows exchanges in more than one).
    token_ids: int [N, T].
    table: from build_exchange_table.
  Returns:
    (ids int [N, T], valid bool [N]): the captions with two words exchanged; valid is False for a caption with no
    two words of different values in any family (it is returned unchanged and must not be used as a negative).
  """
  ids_table = jnp.asarray(table.ids)
  row = jnp.clip(jnp.searchsorted(ids_table, token_ids), 0, ids_table.shape[0] - 1)   # [N, T]
  listed = ids_table[row] == token_ids
  family = jnp.where(listed, jnp.asarray(table.family)[row], -1)
  value = jnp.where(listed, jnp.asarray(table.value)[row], -1)
  position = jnp.arange(token_ids.shape[1])[None, :]
  firsts, seconds, allowed = [], [], []
  for f in range(int(table.family.max()) + 1):
    in_family = family == f
    first = jnp.argmax(in_family, axis=-1)                                              # [N]
    first_value = jnp.take_along_axis(value, first[:, None], axis=-1)
    later = in_family & (position > first[:, None]) & (value != first_value)
    firsts.append(first)
    seconds.append(jnp.argmax(later, axis=-1))
    allowed.append(jnp.any(in_family, axis=-1) & jnp.any(later, axis=-1))
  allowed = jnp.stack(allowed, axis=-1)                                                 # [N, F]
  valid = jnp.any(allowed, axis=-1)
  # Rows with no allowed family draw from all (any index; they stay unchanged below).
  choice = jax.random.categorical(rng, jnp.where(allowed | ~valid[:, None], 0.0, -jnp.inf), axis=-1)
  first = jnp.take_along_axis(jnp.stack(firsts, -1), choice[:, None], axis=-1)         # [N, 1]
  second = jnp.take_along_axis(jnp.stack(seconds, -1), choice[:, None], axis=-1)
  first_id = jnp.take_along_axis(token_ids, first, axis=-1)
  second_id = jnp.take_along_axis(token_ids, second, axis=-1)
  exchanged = jnp.where(position == first, second_id, jnp.where(position == second, first_id, token_ids))
  return jnp.where(valid[:, None], exchanged, token_ids), valid
