"""Plain float64 numpy reference for the XMC-GAN losses, written from the equations with explicit loops.

Used only by tests/test_losses.py. Deliberately naive: one (text, image) pair at a time, explicit context
vectors, explicit norms, so that it shares no structure with the vectorised JAX code.
"""
import math

import numpy as np


def _unit(v):
  """v / ||v|| for a 1-D vector; the zero vector stays zero."""
  norm = math.sqrt(float(np.dot(v, v)))
  return v / norm if norm > 0 else np.zeros_like(v)


def _log_sum_exp(values):
  """log(sum(exp(values))) of a non-empty list of floats."""
  top = max(values)
  return top + math.log(sum(math.exp(v - top) for v in values))


def hinge_d(real, fake):
  real = np.asarray(real, np.float64).ravel()
  fake = np.asarray(fake, np.float64).ravel()
  return float(np.mean(np.maximum(0.0, 1.0 - real)) + np.mean(np.maximum(0.0, 1.0 + fake)))


def hinge_g(fake):
  return float(-np.mean(np.asarray(fake, np.float64)))


def _groups(n, group_size):
  size = n if group_size == 0 else group_size
  return [list(range(start, start + size)) for start in range(0, n, size)]


def _symmetric_ce_stats(matrices):
  """Loss, accuracy and row entropy over a list of square score matrices (targets on the diagonal).

  Returns (mean row CE + mean column CE, mean of row- and column-argmax accuracy, mean row entropy), all
  averaged over every row of every matrix.
  """
  row_ce, col_ce, row_hit, col_hit, entropy = [], [], [], [], []
  for m in matrices:
    g = m.shape[0]
    for i in range(g):
      row = [float(x) for x in m[i, :]]
      col = [float(x) for x in m[:, i]]
      lse_row = _log_sum_exp(row)
      row_ce.append(lse_row - row[i])
      col_ce.append(_log_sum_exp(col) - col[i])
      row_hit.append(float(int(np.argmax(m[i, :])) == i))
      col_hit.append(float(int(np.argmax(m[:, i])) == i))
      probs = [math.exp(x - lse_row) for x in row]
      entropy.append(-sum(p * math.log(p) for p in probs if p > 0))
  loss = sum(row_ce) / len(row_ce) + sum(col_ce) / len(col_ce)
  accuracy = 0.5 * (sum(row_hit) / len(row_hit) + sum(col_hit) / len(col_hit))
  return loss, accuracy, sum(entropy) / len(entropy)


def contrastive(a, b, temperature=0.1, group_size=0):
  """Symmetric InfoNCE; returns (loss, accuracy, entropy)."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  matrices = []
  for idx in _groups(a.shape[0], group_size):
    m = np.zeros((len(idx), len(idx)))
    for r, i in enumerate(idx):
      for c, j in enumerate(idx):
        m[r, c] = float(np.dot(_unit(a[i]), _unit(b[j]))) / temperature
    matrices.append(m)
  return _symmetric_ce_stats(matrices)


def match_score(words, length_mask, regions, gamma1, gamma2):
  """DAMSM score S between one caption ([T, E] words, [T] mask) and one image ([R, E] regions)."""
  regions = [_unit(r) for r in np.asarray(regions, np.float64)]
  terms = []
  for word, real in zip(np.asarray(words, np.float64), length_mask):
    if not real:
      continue
    w = _unit(word)
    sims = [float(np.dot(w, r)) for r in regions]
    top = max(sims)
    weights = [math.exp(gamma1 * (s - top)) for s in sims]
    total = sum(weights)
    context = sum((wt / total) * r for wt, r in zip(weights, regions))
    terms.append(gamma2 * float(np.dot(w, _unit(context))))
  return _log_sum_exp(terms) / gamma2


def word_region(words, word_mask, regions, gamma1=5.0, gamma2=5.0, gamma3=50.0, group_size=0):
  """DAMSM-style word-region loss; logits[i, j] = gamma3 * S(text i, image j). Returns (loss, acc, entropy)."""
  words = np.asarray(words, np.float64)
  regions = np.asarray(regions, np.float64)
  word_mask = np.asarray(word_mask) != 0
  matrices = []
  for idx in _groups(words.shape[0], group_size):
    m = np.zeros((len(idx), len(idx)))
    for r, i in enumerate(idx):
      for c, j in enumerate(idx):
        m[r, c] = gamma3 * match_score(words[i], word_mask[i], regions[j], gamma1, gamma2)
    matrices.append(m)
  return _symmetric_ce_stats(matrices)
