"""tools/export_shapes_arrays.py and tools/sweep_shapes.py: the shrunk encoder, the array batches, the evaluation.

The shrunk encoder must give the full encoder's features on remapped ids (checked against the full encoder with
the same float16-rounded weights, so the comparison is exact up to float32 arithmetic); the training batches must
visit every image once per epoch with one of its own captions; the evaluation set must score generated images
exactly as `make demo` does (a stub sampler that draws each caption's true scene scores 1.0 on every column).
"""
import importlib.util
import json
import pathlib
import types

import numpy as np
import pytest
import safetensors.numpy

from tests.evaluation import shapes_batches
from tests.models.test_text_encoder import TINY, _tiny_tensors, _write_folder
from xmc_gan_jax import demo
from xmc_gan_jax.data import shapes_scene
from xmc_gan_jax.models import text_encoder

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _tool(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


export = _tool("export_shapes_arrays")
sweep = _tool("sweep_shapes")


# ---------------------------------------------------------------- the shrunk encoder


def test_shrunk_encoder_gives_the_full_features_on_remapped_ids(tmp_path):
  tensors = {k: (v.astype(np.float16).astype(np.float32) if v.dtype == np.float32 else v)
             for k, v in _tiny_tensors(TINY, seed=4).items()}
  full = _write_folder(tmp_path / "full", TINY, tensors)
  vocab = ["[PAD]"] + [f"tok{j}" for j in range(1, TINY["vocab_size"])]
  ids = np.array([[2, 7, 9, 3, 0, 0], [2, 41, 9, 9, 7, 3]], np.int32)
  kept = export.shrink_vocabulary(vocab, np.unique(ids))
  assert kept.tolist() == [0, 2, 3, 7, 9, 41]  # [PAD] (the only special token this vocabulary has), then used ids
  export.write_shrunk_encoder(full, str(tmp_path / "small"), vocab, kept)
  with open(tmp_path / "small" / "config.json") as f:
    assert json.load(f)["vocab_size"] == 6
  assert (tmp_path / "small" / "vocab.txt").read_text().split() == [vocab[i] for i in kept]
  stored = safetensors.numpy.load_file(str(tmp_path / "small" / "model.safetensors"))
  assert stored["embeddings.word_embeddings.weight"].dtype == np.float16
  remap = {old: new for new, old in enumerate(kept)}
  new_ids = np.vectorize(remap.get)(ids).astype(np.int32)
  mask = (ids > 0).astype(np.int32)
  a = text_encoder.load_text_encoder(full).encode(ids, mask)
  b = text_encoder.load_text_encoder(str(tmp_path / "small")).encode(new_ids, mask)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- training batches


def _train_arrays(n=10, captions=5, length=6):
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
  ids = np.zeros((n, captions, length), np.int16)
  ids[:, :, 0] = 2
  ids[:, :, 1] = np.arange(n)[:, None] * 10 + np.arange(captions)[None, :] + 100  # encodes (image, caption)
  ids[:, :, 2] = 3
  return images, ids


def test_batches_visit_each_image_once_per_epoch_with_its_own_captions():
  images, ids = _train_arrays()
  batches = sweep.ArrayBatches(images, ids, batch_size=3, seed=1)
  seen, captions = [], set()
  for _ in range(3):  # one epoch: 3 batches of 3 out of 10 images (the remainder is dropped)
    batch = next(batches)
    rows = batch["image"][:, 0, 0, 0].astype(int)
    seen += rows.tolist()
    owner, caption = np.divmod(batch["token_ids"][:, 1] - 100, 10)
    np.testing.assert_array_equal(owner, rows)
    captions |= set(caption.tolist())
    np.testing.assert_array_equal(batch["token_mask"], (batch["token_ids"] != 0).astype(np.int32))
    assert batch["token_ids"].dtype == np.int32
  assert len(seen) == len(set(seen)) == 9
  assert captions <= set(range(5)) and len(captions) > 1
  next_epoch = [next(batches)["image"][:, 0, 0, 0].tolist() for _ in range(3)]
  assert sum(next_epoch, []) != seen  # a fresh permutation


def test_batches_depend_on_the_seed_only():
  images, ids = _train_arrays()
  take = lambda seed: [next(b)["token_ids"] for b in [sweep.ArrayBatches(images, ids, 4, seed)] for _ in range(5)]
  for x, y in zip(take(3), take(3)):
    np.testing.assert_array_equal(x, y)
  assert any((x != y).any() for x, y in zip(take(3), take(4)))
  with pytest.raises(ValueError, match="cannot fill a batch"):
    sweep.ArrayBatches(images, ids, 16, 0)


def test_parse_variant():
  assert sweep.parse_variant("base") == ("base", [])
  assert sweep.parse_variant("rw:text_encoder.features=random_words;batch_size=32") == (
      "rw", ["text_encoder.features=random_words", "batch_size=32"])
  with pytest.raises(ValueError, match="plain name"):
    sweep.parse_variant("a/b:x=1")


# ---------------------------------------------------------------- evaluation set


def _exported_eval(scenes):
  batch = next(shapes_batches.shapes_batches(scenes, np.zeros((len(scenes), 32, 32, 3), np.uint8), len(scenes)))
  arrays = {"eval_token_ids": batch["token_ids"], "eval_token_mask": batch["token_mask"],
            "eval_num_objects": batch["num_objects"], "eval_caption": batch["caption"]}
  for key in ("color", "shape", "size", "row", "col"):
    arrays[f"eval_objects_{key}"] = batch[f"objects/{key}"]
  return arrays


def test_eval_batches_score_true_scenes_perfectly_and_blank_images_not_at_all():
  rng = np.random.default_rng(8)
  scenes = [shapes_scene.sample_scene(rng) for _ in range(10)]
  images = np.stack([shapes_scene.render_scene(s, 32) for s in scenes])
  batches = sweep.eval_batches(_exported_eval(scenes), batch_size=4)
  assert [len(b["token_ids"]) for b in batches] == [4, 4, 2]
  config = types.SimpleNamespace(seed=0, model=types.SimpleNamespace(z_dim=8))
  state = types.SimpleNamespace(ema_params=None, g_batch_stats=None)
  true = types.SimpleNamespace(samples=lambda p, s, ids, mask, z: images[ids[:, 1]].astype(np.float32) / 255)
  blank = types.SimpleNamespace(samples=lambda p, s, ids, mask, z: np.full((len(ids), 32, 32, 3), 0.78))
  scores, (grid_images, grid_captions) = demo.alignment(true, state, config, 10, batches=batches)
  assert scores["ema_align_all"] == scores["ema_align_color_position"] == 1.0
  assert len(grid_images) == 4 and grid_captions[0] == "scene 0"
  scores, _ = demo.alignment(blank, state, config, 10, batches=batches)
  assert scores["ema_align_color_position"] == 0.0


def test_summary_table_lists_final_rows():
  row = dict(variant="a", sets=["x=1"], step=5, steps_per_sec=2.0, final=True,
             **{k: 0.5 for k in sweep.REPORT_KEYS})
  table = sweep.summarise([dict(row, final=False, step=2), row])
  lines = table.splitlines()
  assert len(lines) == 3 and lines[2].startswith("| a | x=1 | 5 | 2.0 | 0.500")
