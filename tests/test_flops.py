"""FLOPs counted from jaxprs, against torch's FLOP counter on the same transformers model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import lskill_jax as lsj
from conftest import save_tiny_model
from lskill_jax import flops
from lskill_jax.backbone import model


def test_products_loops_and_branches_are_counted():
  x, w = jnp.zeros((3, 5, 7)), jnp.zeros((7, 11))
  einsum = lambda x, w: jnp.einsum("bij,jk->bik", x, w)
  assert flops.function_flops(einsum, x, w) == 2 * 3 * 5 * 7 * 11

  def scanned(x, w):
    return jax.lax.scan(lambda c, _: (c @ w[:, :7], None), x, None, length=4)[0]
  assert flops.function_flops(scanned, x, w) == 4 * 2 * 3 * 5 * 7 * 7

  def branch(p, x, w):  # the dearer branch counts
    return jax.lax.cond(p, lambda: (x @ w).sum(), lambda: x.sum())
  assert flops.function_flops(branch, True, x, w) == 2 * 3 * 5 * 7 * 11
  # Under jit and grad: the backward's products (d/dx and d/dw) are counted too.
  loss = jax.jit(lambda x, w: jnp.sum(x @ w))
  assert flops.function_flops(jax.grad(loss, argnums=(0, 1)), x, w) == 3 * 2 * 3 * 5 * 7 * 11


def test_a_while_loop_is_refused():
  body = lambda c: c @ jnp.eye(2)
  with pytest.raises(ValueError, match="while loop"):
    flops.function_flops(lambda x: jax.lax.while_loop(lambda c: c.sum() < 1, body, x),
                         jnp.zeros((2, 2)))


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "forward_backward"])
def test_backbone_flops_equal_transformers_counted_by_torch(tmp_path, grad):
  ref = save_tiny_model(tmp_path, "qwen3")
  ref.config._attn_implementation = "eager"  # products the counter sees, full score matrix
  bb = lsj.load_backbone(str(tmp_path))
  cfg = bb.config
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 24))

  def logits(params):
    seg = jnp.ones(tokens.shape, jnp.int32)
    return model.forward(params, cfg, jnp.asarray(tokens), segment_ids=seg,
                         positions=model.segment_positions(seg))

  fn = jax.grad(lambda p: logits(p).sum()) if grad else logits
  ours = flops.function_flops(fn, bb.params)

  ref.requires_grad_(grad)
  with FlopCounterMode(display=False) as counter:
    out = ref(torch.tensor(tokens)).logits
    if grad:
      out.sum().backward()
  assert ours == counter.get_total_flops()
