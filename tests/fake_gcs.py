"""A fake Google Cloud Storage for tests, with no network: gs://BUCKET/PATH is the file ROOT/BUCKET/PATH.

It replaces the two ways gs:// paths reach storage here: etils.epath's gs:// backend (which our code, orbax's
metadata and commit files and clu use; normally tf.io.gfile's GCS client) and the TensorStore kvstore that orbax
builds for gs:// checkpoints (normally TensorStore's own GCS driver). Everything else is untouched, so code that
handles a gs:// path with pathlib, os.path or open() sees the local relative path "gs:/BUCKET/PATH", which does
not exist, and fails under this fake as it would on a real bucket. (tf.io.gfile itself is not faked: TFDS data
dirs and TensorBoard event files on gs:// are not covered.)

    with fake_gcs.mount(tmp_path / "gcs") as root:
      ...  # gs://bucket/x is root / "bucket" / "x"
"""
import contextlib
import os
import pathlib
from unittest import mock

from etils.epath import backend as backend_lib
from etils.epath import gpath

PREFIX = "gs://"


class FakeGcsBackend(backend_lib.Backend):
  """An epath backend that serves gs://BUCKET/PATH from ROOT/BUCKET/PATH through the local one."""

  def __init__(self, root: str):
    self.root = os.fspath(root)
    self.local = backend_lib.os_backend

  def to_local(self, path) -> str:
    text = os.fspath(path)
    assert text.startswith(PREFIX), f"the fake GCS backend got a non-gs:// path {text!r}"
    rest = text[len(PREFIX):].strip("/")
    assert rest, f"{text!r} names no bucket"
    return os.path.join(self.root, rest)

  def to_remote(self, path) -> str:
    rel = os.path.relpath(os.fspath(path), self.root)
    return PREFIX + rel.replace(os.sep, "/")

  def open(self, path, mode):
    if any(m in mode for m in "wa"):
      os.makedirs(os.path.dirname(self.to_local(path)), exist_ok=True)  # GCS has no folders to create first
    return self.local.open(self.to_local(path), mode)

  def exists(self, path):
    return self.local.exists(self.to_local(path))

  def isdir(self, path):
    return self.local.isdir(self.to_local(path))

  def listdir(self, path):
    return self.local.listdir(self.to_local(path))

  def glob(self, path):
    return [self.to_remote(p) for p in self.local.glob(self.to_local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for root, dirs, files in self.local.walk(self.to_local(top), top_down=top_down, on_error=on_error):
      yield self.to_remote(root), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    del mode
    self.local.makedirs(self.to_local(path), exist_ok=exist_ok)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    del mode
    self.local.mkdir(self.to_local(path), exist_ok=exist_ok)

  def rmtree(self, path):
    self.local.rmtree(self.to_local(path))

  def remove(self, path):
    self.local.remove(self.to_local(path))

  def rename(self, path, dst):
    self.local.rename(self.to_local(path), self.to_local(dst))

  def replace(self, path, dst):
    self.local.replace(self.to_local(path), self.to_local(dst))

  def copy(self, path, dst, overwrite):
    self.local.copy(self.to_local(path), self.to_local(dst), overwrite=overwrite)

  def stat(self, path):
    return self.local.stat(self.to_local(path))


@contextlib.contextmanager
def mount(root):
  """Serves gs:// from the local folder `root` (created) inside the block; yields `root` as a pathlib.Path."""
  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint._src.path import gcs_utils
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  fake = FakeGcsBackend(str(root))

  def kvstore(path):  # what orbax hands TensorStore for a gs:// checkpoint directory
    return {"driver": "file", "path": fake.to_local(path)}

  with contextlib.ExitStack() as stack:
    stack.enter_context(mock.patch.dict(gpath._PREFIX_TO_BACKEND, {"gs": fake}))  # pylint: disable=protected-access
    # epath picks tf.io.gfile for gs:// whenever TensorFlow is installed; make it ask _PREFIX_TO_BACKEND.
    stack.enter_context(mock.patch.object(gpath, "_is_tf_installed", lambda: False))
    stack.enter_context(mock.patch.object(gcs_utils, "get_kvstore_for_gcs", kvstore))
    stack.enter_context(mock.patch.object(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False))
    yield root
