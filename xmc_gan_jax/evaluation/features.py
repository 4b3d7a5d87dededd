"""Inception features of image batches with pytorch-fid input semantics, jitted and sharded over local devices.

Input semantics (pytorch-fid on PNG files): uint8 images are divided by 255; float images in [0, 1] (generator
outputs) are first rounded to uint8 levels (floor(255 x + 0.5), as when saving a PNG) unless `quantize=False`;
then bilinear resize to 299 x 299 without antialiasing (= torch F.interpolate(mode='bilinear',
align_corners=False), also when downsampling; done as two matmuls with exact interpolation weights), then
2x - 1. Layout is NHWC.

`FeatureExtractor` holds the weights replicated on a 1-D mesh of the local devices and runs fixed-size batches
(padded at the end) split over that mesh; `extract_features(images_iterable)` returns `Features(pool3 [N, 2048],
logits [N, 1008] or None)` as float32 numpy. `resize_bilinear_host` is the same resize in numpy for images of
mixed sizes (the CLI).
"""
import functools
from typing import Iterable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xmc_gan_jax.evaluation import inception
from xmc_gan_jax.evaluation import inception_weights

FID_IMAGE_SIZE = 299


class Features(NamedTuple):
  """pool3 features [N, 2048] and, when the weights include the fc layer, IS logits [N, 1008] (float32)."""
  pool3: np.ndarray
  logits: np.ndarray | None


def quantize_unit_float(images: jax.Array) -> jax.Array:
  """[0, 1] floats -> the nearest of the 256 uint8 levels (floor(255 x + 0.5) / 255), clipped to [0, 1]."""
  return jnp.floor(jnp.clip(images.astype(jnp.float32), 0.0, 1.0) * 255.0 + 0.5) / 255.0


def preprocess(images: jax.Array, image_size: int = FID_IMAGE_SIZE, quantize: bool = True) -> jax.Array:
  """uint8 [B, H, W, 3] or float [0, 1] [B, H, W, 3] -> float32 [B, S, S, 3] in [-1, 1] (see module doc)."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"Expected NHWC RGB images [B, H, W, 3], got shape {images.shape}.")
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  elif jnp.issubdtype(images.dtype, jnp.floating):
    x = quantize_unit_float(images) if quantize else images.astype(jnp.float32)
  else:
    raise ValueError(f"Images must be uint8 or float in [0, 1], got dtype {images.dtype}.")
  return 2.0 * resize_bilinear(x, image_size) - 1.0


def resize_bilinear(images: jax.Array, size: int = FID_IMAGE_SIZE) -> jax.Array:
  """float [B, H, W, C] -> [B, size, size, C]: torch bilinear (align_corners=False, no antialias) as two
  matmuls with the float64-built weights of `bilinear_matrix` (the same numbers as `resize_bilinear_host`)."""
  _, height, width, _ = images.shape
  if (height, width) == (size, size):
    return images
  rows = jnp.asarray(_cached_matrix(height, size), images.dtype)
  cols = jnp.asarray(_cached_matrix(width, size), images.dtype)
  hi = jax.lax.Precision.HIGHEST
  images = jnp.einsum("ih,bhwc->biwc", rows, images, precision=hi)
  return jnp.einsum("jw,biwc->bijc", cols, images, precision=hi)


def inception_features(variables: dict, images: jax.Array, *, image_size: int = FID_IMAGE_SIZE,
                       quantize: bool = True, with_logits: bool = False) -> dict[str, jax.Array]:
  """Pure, jittable: images -> {'pool3': [B, 2048]} (+ 'logits': [B, 1008] if `with_logits`)."""
  model = inception.FIDInceptionV3(with_logits=with_logits)
  return model.apply(variables, preprocess(images, image_size, quantize))


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] float64 weights of torch's 1-D bilinear resize with align_corners=False."""
  scale = in_size / out_size
  src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = src - low
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), high), frac)
  return matrix


@functools.lru_cache(maxsize=64)
def _cached_matrix(in_size: int, out_size: int) -> np.ndarray:
  return bilinear_matrix(in_size, out_size)


def resize_bilinear_host(image: np.ndarray, size: int = FID_IMAGE_SIZE) -> np.ndarray:
  """numpy [H, W, C] -> float32 [size, size, C], same units as the input, torch bilinear (no antialias)."""
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"Expected one image [H, W, C], got shape {image.shape}.")
  height, width, _ = image.shape
  if (height, width) == (size, size):
    return image.astype(np.float32)
  rows = _cached_matrix(height, size)
  cols = _cached_matrix(width, size)
  out = np.einsum("ih,hwc,jw->ijc", rows, image.astype(np.float64), cols, optimize=True)
  return out.astype(np.float32)


def _check_host_images(images: np.ndarray) -> np.ndarray:
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"Expected RGB images [B, H, W, 3] or [H, W, 3], got shape {images.shape}.")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"Images must be uint8 or float in [0, 1], got dtype {images.dtype}.")
  if images.size and (images.max() > 2.0 or images.min() < -0.5):
    raise ValueError(f"Float images must be in [0, 1] (got range [{images.min():.3g}, {images.max():.3g}]); "
                     "pass uint8 for 0..255 data and map [-1, 1] data with (x + 1) / 2.")
  return images.astype(np.float32)


class FeatureExtractor:
  """Jitted FID-Inception feature extraction over a 1-D ('data') mesh of `devices` (default: local devices).

  Batches are padded to `batch_size` (rounded up to a multiple of the device count), so each input shape
  compiles once. `image_size` < 299 is only for tests with random weights; standard FID needs 299.
  """

  def __init__(self, variables: dict | None = None, *, weights_path: str | None = None, batch_size: int = 50,
               image_size: int = FID_IMAGE_SIZE, quantize: bool = True, devices=None):
    if variables is None:
      variables = inception_weights.load_inception_variables(weights_path)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    self.with_logits = inception_weights.has_logits(variables)
    inception.check_variables(variables, self.with_logits)
    devices = list(jax.local_devices() if devices is None else devices)
    self.mesh = Mesh(np.array(devices), ("data",))
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    self.image_size = image_size
    replicated = NamedSharding(self.mesh, P())
    self._data_sharding = NamedSharding(self.mesh, P("data"))
    self._variables = jax.device_put(variables, replicated)
    fn = functools.partial(inception_features, image_size=image_size, quantize=quantize,
                           with_logits=self.with_logits)
    self._fn = jax.jit(fn, in_shardings=(replicated, self._data_sharding), out_shardings=self._data_sharding)

  def _run_padded(self, images: np.ndarray):
    """Dispatches one chunk of <= batch_size images (async); returns (outputs, number of real images)."""
    count = images.shape[0]
    if count < self.batch_size:
      pad = np.zeros((self.batch_size - count,) + images.shape[1:], images.dtype)
      images = np.concatenate([images, pad])
    # An explicit device_put: under several processes jit refuses numpy inputs with a non-trivial sharding,
    # while this process's own (fully addressable) mesh accepts them placed.
    return self._fn(self._variables, jax.device_put(images, self._data_sharding)), count

  def _to_features(self, pending) -> Features:
    outputs, count = pending
    pool3 = np.asarray(outputs["pool3"])[:count]
    logits = np.asarray(outputs["logits"])[:count] if "logits" in outputs else None
    return Features(pool3, logits)

  def _chunks(self, images_iterable: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Re-chunks the items into arrays of at most batch_size images of one shape and dtype."""
    buffer: list[np.ndarray] = []
    buffered = 0
    for item in images_iterable:
      images = _check_host_images(np.asarray(item))
      if buffer and (images.shape[1:] != buffer[0].shape[1:] or images.dtype != buffer[0].dtype):
        yield from self._split(np.concatenate(buffer))
        buffer, buffered = [], 0
      buffer.append(images)
      buffered += images.shape[0]
      if buffered >= self.batch_size:
        merged = np.concatenate(buffer)
        full = buffered - buffered % self.batch_size
        yield from self._split(merged[:full])
        buffer = [merged[full:]] if full < buffered else []
        buffered -= full
    if buffer:
      yield from self._split(np.concatenate(buffer))

  def _split(self, images: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, images.shape[0], self.batch_size):
      yield images[start:start + self.batch_size]

  def iter_features(self, images_iterable: Iterable[np.ndarray]) -> Iterator[Features]:
    """Yields Features per processed chunk. Items: single images [H, W, 3] or batches [b, H, W, 3] (uint8 or
    float [0, 1]); consecutive items of equal shape and dtype are re-chunked into full batches. The next chunk
    is dispatched before the previous one is fetched, so host work overlaps device work."""
    pending = None
    for chunk in self._chunks(images_iterable):
      dispatched = self._run_padded(chunk)
      if pending is not None:
        yield self._to_features(pending)
      pending = dispatched
    if pending is not None:
      yield self._to_features(pending)

  def extract(self, images_iterable: Iterable[np.ndarray]) -> Features:
    """All features of the iterable, in order: Features(pool3 [N, 2048], logits [N, 1008] or None)."""
    parts = list(self.iter_features(images_iterable))
    if not parts:
      raise ValueError("No images were given.")
    pool3 = np.concatenate([p.pool3 for p in parts])
    logits = np.concatenate([p.logits for p in parts]) if self.with_logits else None
    return Features(pool3, logits)

  def __call__(self, images: np.ndarray) -> Features:
    """Features of one array of images [B, H, W, 3] (any B)."""
    return self.extract([images])


def extract_features(images_iterable: Iterable[np.ndarray], *, extractor: FeatureExtractor | None = None,
                     **extractor_kwargs) -> Features:
  """Features(pool3 [N, 2048], logits or None) of all images; builds a default `FeatureExtractor` if needed."""
  if extractor is None:
    extractor = FeatureExtractor(**extractor_kwargs)
  return extractor.extract(images_iterable)
