"""Every shipped config builds, validates against its own device count, and its variants parse."""
import pytest

from configs import coco, common, ln_coco, ln_openimages, shapes, test
from xmc_gan_jax import config_validation


@pytest.mark.parametrize("module,arg", [(test, None), (shapes, None), (shapes, "res=64"), (coco, None),
                                        (coco, "res=128"), (ln_coco, None), (ln_openimages, "res=128")])
def test_configs_validate(module, arg):
  config = module.get_config(arg)
  config_validation.validate(config, batch_shards=1)


@pytest.mark.parametrize("pod,chips", [("v4-8", 4), ("v4-32", 16), ("v5litepod-16", 16), ("v4-128", 64)])
def test_pod_variants_split_over_every_chip_with_groups_of_8(pod, chips):
  config = coco.get_config(f"res=256,pod={pod}")
  assert config.batch_size == 2 * 8 * chips
  sub = config.batch_size // config.optim.d_steps_per_g_step
  assert sub // chips == 8 and config.model.batch_norm_group_size == 8 and config.loss.contrastive_group_size == 8
  config_validation.validate(config, batch_shards=chips)
  assert ln_coco.get_config(f"pod={pod}").batch_size == config.batch_size


def test_bad_variants_are_refused():
  with pytest.raises(ValueError, match="unknown pod='v9-8'"):
    coco.get_config("pod=v9-8")
  with pytest.raises(ValueError, match="Unknown config variant 'size=3'"):
    coco.get_config("size=3")
  assert common.parse_variant("res=64, pod=v4-8", {"res": 32, "pod": ""}) == {"res": 64, "pod": "v4-8"}
