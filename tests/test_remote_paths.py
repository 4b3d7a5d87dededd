"""gs:// paths end to end through a fake GCS (tests/fake_gcs.py): a remote file or folder copied once to the local
cache, a gs:// BERT folder, `python -m xmc_gan_jax.sample` reading a gs:// workdir (orbax checkpoint, prompts
file) and writing its grid and single images to gs://, FID statistics files on gs://."""
import json
import os
import pathlib

import jax
import numpy as np
import pytest
from etils import epath

from configs import test as test_config
from tests import fake_gcs
from tests.models import test_text_encoder
from xmc_gan_jax import checkpointing, paths, sample, sharding
from xmc_gan_jax.evaluation import fid_stats
from xmc_gan_jax.models import text_encoder

TINY_BERT = dict(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
                 max_position_embeddings=12, type_vocab_size=2, hidden_act="gelu", model_type="bert")


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """The fake bucket root (gs://bucket/x is gcs / "bucket" / "x"), with the local cache in tmp_path/cache."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  with fake_gcs.mount(tmp_path / "gcs") as root:
    yield root


def test_the_fake_is_not_the_local_filesystem(gcs):
  (gcs / "bucket").mkdir()
  (gcs / "bucket" / "a.txt").write_text("remote")
  assert epath.Path("gs://bucket/a.txt").read_text() == "remote"
  assert not pathlib.Path("gs://bucket/a.txt").exists() and not os.path.exists("gs://bucket/a.txt")
  epath.Path("gs://bucket/new/b.txt").write_text("written")
  assert (gcs / "bucket" / "new" / "b.txt").read_text() == "written"


def test_local_copy_is_made_once_and_renewed_when_the_remote_changes(gcs, tmp_path, monkeypatch):
  folder = gcs / "bucket" / "weights"
  (folder / "sub").mkdir(parents=True)
  (folder / "a.bin").write_bytes(b"\x00\x01" * 1000)
  (folder / "sub" / "b.txt").write_text("hello")
  local = paths.local_copy("gs://bucket/weights")
  assert local.startswith(str(tmp_path / "cache" / "xmc_gan_jax" / "remote"))
  assert pathlib.Path(local, "a.bin").read_bytes() == b"\x00\x01" * 1000
  assert pathlib.Path(local, "sub", "b.txt").read_text() == "hello"
  assert not [p for p in pathlib.Path(local).parent.iterdir() if p.name.startswith(".partial")]
  # Again with the same names and sizes: the cached copy, no file read from the remote.
  with monkeypatch.context() as m:
    m.setattr(fake_gcs.FakeGcsBackend, "open", lambda *a: pytest.fail("read the remote again"))
    assert paths.local_copy("gs://bucket/weights") == local
  (folder / "sub" / "b.txt").write_text("hello, changed")
  renewed = paths.local_copy("gs://bucket/weights")
  assert renewed != local and pathlib.Path(renewed, "sub", "b.txt").read_text() == "hello, changed"
  # A single file; a local path is returned as it is; a missing remote is named.
  single = paths.local_copy("gs://bucket/weights/a.bin")
  assert pathlib.Path(single).read_bytes() == b"\x00\x01" * 1000
  assert paths.local_copy(str(folder)) == str(folder)
  with pytest.raises(FileNotFoundError, match="gs://bucket/nothing does not exist"):
    paths.local_copy("gs://bucket/nothing")


def test_bert_folder_on_gcs_loads_like_the_local_one(gcs, tmp_path):
  tensors = test_text_encoder._tiny_tensors(TINY_BERT)  # pylint: disable=protected-access
  local = test_text_encoder._write_folder(tmp_path / "bert", TINY_BERT, tensors)  # pylint: disable=protected-access
  test_text_encoder._write_folder(gcs / "bucket" / "bert", TINY_BERT, tensors)  # pylint: disable=protected-access
  remote = text_encoder.load_text_encoder("gs://bucket/bert")
  expected = text_encoder.load_text_encoder(local)
  assert remote.hidden_size == expected.hidden_size == TINY_BERT["hidden_size"]
  jax.tree.map(np.testing.assert_array_equal, remote.params, expected.params)
  # The tokenizer reads a local copy of the vocabulary, under the cache.
  assert remote.vocab_path.startswith(str(tmp_path / "cache")) and os.path.isfile(remote.vocab_path)
  assert pathlib.Path(remote.vocab_path).read_text() == pathlib.Path(local, "vocab.txt").read_text()
  # A remote folder that lacks a file is refused before anything is copied, naming the file.
  (gcs / "bucket" / "bert" / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=r"'gs://bucket/bert' lacks model\.safetensors"):
    text_encoder.load_text_encoder("gs://bucket/bert")
  with pytest.raises(FileNotFoundError, match=r"'gs://bucket/none' does not exist"):
    text_encoder.load_text_encoder("gs://bucket/none")


def test_fid_statistics_files_on_gcs(gcs):
  rng = np.random.default_rng(0)
  stats = fid_stats.FeatureStats.from_features(rng.normal(size=(20, 4)).astype(np.float32), keep_features=True, weights="w")
  path = fid_stats.real_stats_path("gs://bucket/stats", dataset="d", split="s", resolution=32, num_images=20,
                                   weights="w")
  fid_stats.save_stats(path, stats)
  assert (gcs / "bucket" / "stats" / "d_s_32px_n20_w.npz").is_file()
  assert not list((gcs / "bucket" / "stats").glob("*.tmp*"))
  loaded = fid_stats.load_stats(str(path))
  np.testing.assert_array_equal(loaded.mu, stats.mu)
  np.testing.assert_array_equal(loaded.features, stats.features)
  assert loaded.num_images == 20 and loaded.weights == "w"


@pytest.mark.slow  # compiles the test config's initial state and the sampler
def test_sample_reads_a_gcs_workdir_and_writes_there_as_it_does_locally(gcs, tmp_path):
  config = test_config.get_config()
  from xmc_gan_jax import runtime  # pylint: disable=import-outside-toplevel
  state = runtime.Runtime(config, mesh=sharding.make_mesh(config.mesh, jax.devices()[:1])).init_state()
  for workdir in ("gs://bucket/run", str(tmp_path / "run")):
    checkpointer = checkpointing.Checkpointer(workdir)  # orbax through the fake (TensorStore and epath)
    checkpointer.save(2, state, {"config": config.to_json_best_effort()})
    checkpointer.close()
  assert (gcs / "bucket" / "run" / "checkpoints" / "2").is_dir()
  (gcs / "bucket" / "prompts.txt").write_text("a small red circle\n# a comment\na big blue square\n")
  (tmp_path / "prompts.txt").write_text((gcs / "bucket" / "prompts.txt").read_text())

  def run(workdir, prompts, out, out_dir):
    return sample.main([f"--workdir={workdir}", f"--prompts-file={prompts}", "--num=2", "--seed=4",
                        f"--out={out}", f"--out-dir={out_dir}"])

  assert run("gs://bucket/run", "gs://bucket/prompts.txt", "gs://bucket/out/grid.png", "gs://bucket/out/one") == 0
  assert run(tmp_path / "run", tmp_path / "prompts.txt", tmp_path / "grid.png", tmp_path / "one") == 0
  out = gcs / "bucket" / "out"
  assert (out / "grid.png").read_bytes() == (tmp_path / "grid.png").read_bytes()
  names = sorted(p.name for p in (tmp_path / "one").iterdir())
  assert names == ["000_00.png", "000_01.png", "001_00.png", "001_01.png", "prompts.txt"]
  assert sorted(p.name for p in (out / "one").iterdir()) == names
  for name in names:
    assert (out / "one" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
  # The run's config is also found in WORKDIR/config.json on gs:// (checkpoint meta unreadable).
  (gcs / "bucket" / "run" / "config.json").write_text(json.dumps({"seed": 11}))

  class NoMeta:
    def restore_meta(self, step):
      raise FileNotFoundError(step)

  assert sample.load_run_config("gs://bucket/run", NoMeta(), 2).seed == 11
  assert sample.main(["--workdir=gs://bucket/missing", "--prompt=x", "--out=gs://bucket/x.png"]) == 2
