"""Sharded (2x2x2 mesh over 8 fake CPU devices) forward and generation equal unsharded."""

import jax
import numpy as np
import pytest

import lskill_jax as lsj
from conftest import save_tiny_model
from lskill_jax import sharding


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  path = tmp_path_factory.mktemp("shard")
  save_tiny_model(path, "qwen3", num_attention_heads=4, num_key_value_heads=2)
  mesh = lsj.make_mesh(data=2, fsdp=2, tensor=2)
  return lsj.load_backbone(str(path)), lsj.load_backbone(str(path), mesh=mesh), mesh


def test_params_are_placed_sharded(backbones):
  _, sharded, mesh = backbones
  q = sharded.params["layers"]["q"]
  assert q.sharding.mesh == mesh
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert len({s.device for s in q.addressable_shards}) == 8


def test_sharded_forward_equals_unsharded(backbones):
  single, sharded, _ = backbones
  tokens = np.random.RandomState(0).randint(0, single.config.vocab_size, (4, 24))
  mask = np.ones_like(tokens)
  mask[1, :7] = 0
  a = np.asarray(lsj.forward(single, tokens, attention_mask=mask))
  out = lsj.forward(sharded, tokens, attention_mask=mask)
  assert out.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_allclose(np.asarray(out), a, atol=1e-5, rtol=0)


def test_sharded_generation_equals_unsharded(backbones):
  single, sharded, _ = backbones
  prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12]]
  assert (lsj.generate_ids(sharded, prompts, max_new_tokens=10, stop_ids=()) ==
          lsj.generate_ids(single, prompts, max_new_tokens=10, stop_ids=()))


def test_spec_drops_axes_that_do_not_divide():
  mesh_shape = {"data": 2, "fsdp": 2, "tensor": 2}
  assert sharding.spec_for(("batch", None), (6, 3), mesh_shape) == jax.sharding.PartitionSpec("data", None)
  assert sharding.spec_for(("vocab", "embed"), (307, 64), mesh_shape) == jax.sharding.PartitionSpec(None, "fsdp")
  # A mesh axis is used once per array: per-row LoRA [B, d_in, r] with batch over fsdp.
  assert sharding.spec_for(("batch", "embed", "lora_rank"), (4, 64, 8), mesh_shape) == \
      jax.sharding.PartitionSpec(("data", "fsdp"), None, None)
