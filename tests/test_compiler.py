"""The skill compiler: geometry, gradients, determinism, batch independence, sharding, inputs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lskill_jax as lsj
from configs import qwen3_8b, smollm2_135m, tiny
from lskill_jax.backbone import model
from lskill_jax.backbone.config import from_hf_config
from lskill_jax.compiler import hypernet
from lskill_jax.compiler.cache import AdapterCache
from lskill_jax.compiler.geometry import geometry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["Always open the fridge before looking for food inside it.",
        "---\nname: search\ndescription: how to search\n---\n# Search\nUse short keyword queries; "
        "verify the answer in a second passage before answering. Never guess.",
        "Heat the mug with the microwave, then put it in the coffee machine."]


@pytest.fixture(scope="module")
def comp():
  c = tiny.get_config()
  return lsj.SkillCompiler.create(lsj.backbone_from_config(c), c, seed=0)


def _trained_like(comp, seed=1):
  """The same compiler with every parameter perturbed (fresh ones have zero-init pieces)."""
  leaves, treedef = jax.tree.flatten(comp.params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
  return lsj.SkillCompiler(comp.backbone, comp.spec, jax.tree.unflatten(treedef, noisy))


def test_describe_qwen3_8b_matches_the_paper_without_allocating():
  out = subprocess.run([sys.executable, "-m", "launch.compile", "--describe",
                        "--config=configs/qwen3_8b.py"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "M = ceil(P / H) = 148" in out.stdout
  assert "P = 606,208" in out.stdout and "21,823,488" in out.stdout
  # The authors' trainable counts: generator 4 x 134,262,784, MetaLoRA 128 x 75,776 x 36.
  assert "537,051,136" in out.stdout and "349,175,808" in out.stdout


def test_geometry_rounds_up_for_smollm2():
  g = geometry(from_hf_config(dict(
      model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
      num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, rope_theta=1e5)), 8)
  assert g.per_layer == 81408 and g.memory_tokens == 142 and g.dropped_per_layer == 142 * 576 - 81408
  # Slices tile [0, P) in order q, k, v, o, gate, up, down with A before B.
  assert [(s.target, s.factor) for s in g.slices][:3] == [("q", "a"), ("q", "b"), ("k", "a")]
  assert all(s2.start == s1.start + s1.size for s1, s2 in zip(g.slices, g.slices[1:]))


def test_gradients_reach_every_trainable_leaf_and_no_backbone_leaf(comp):
  comp = _trained_like(comp)
  spec, bb = comp.spec, comp.backbone
  tok = bb.tokenizer
  doc = np.array([tok(DOCS[0])["input_ids"]], np.int32)
  target = np.array([tok("Open the fridge.")["input_ids"]], np.int32)

  def loss(hparams, backbone_params):
    a, b = hypernet.compile_lora(hparams, backbone_params, doc, np.ones_like(doc), spec=spec)
    lora = {t: {"a": a[t], "b": b[t]} for t in a}
    logits = model.forward(backbone_params, bb.config, target, lora=lora, lora_coef=spec.scale)
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.take_along_axis(logp, target[:, 1:, None], -1).mean()

  grads = jax.jit(jax.grad(loss))(comp.params, bb.params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, f"no gradient reaches {dead}"
  # The backbone is an input the loss is differentiated only through as a constant: its
  # params are left untouched by construction of the trainable set.
  assert set(comp.params) == {"memory", "metalora", "generator"}


def test_compile_is_deterministic_and_independent_of_batch_and_padding(comp):
  comp = _trained_like(comp)
  alone = [comp.compile([d])[0] for d in DOCS]
  again = comp.compile([DOCS[0]])[0]
  for t in alone[0].targets:
    np.testing.assert_array_equal(np.asarray(again.a[t]), np.asarray(alone[0].a[t]))
  batched = comp.compile(DOCS[::-1] + ["A much longer filler document. " * 8])
  for ad, ref in zip(batched[:3][::-1], alone):
    assert ad.metadata["source_hash"] == ref.metadata["source_hash"]
    for t in ref.targets:
      np.testing.assert_allclose(np.asarray(ad.a[t]), np.asarray(ref.a[t]), atol=1e-4, rtol=1e-4)
      np.testing.assert_allclose(np.asarray(ad.b[t]), np.asarray(ref.b[t]), atol=1e-4, rtol=1e-4)
  # Different documents give different adapters.
  assert np.abs(np.asarray(alone[0].a["q"]) - np.asarray(alone[1].a["q"])).max() > 1e-3


def test_sharded_compile_equals_single_device(comp):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  comp = _trained_like(comp)
  mesh = lsj.make_mesh(data=2, fsdp=2, tensor=2)
  bb = lsj.with_mesh(comp.backbone, mesh)
  params = jax.device_put(comp.params, lsj.compiler.skill_compiler.param_shardings(
      comp.spec, comp.params, mesh))
  sharded = lsj.SkillCompiler(bb, comp.spec, params)
  assert sharded.params["metalora"]["a"]["q"].sharding.mesh == mesh
  for ad, ref in zip(sharded.compile(DOCS), comp.compile(DOCS)):
    for t in ref.targets:
      np.testing.assert_allclose(np.asarray(ad.a[t]), np.asarray(ref.a[t]), atol=1e-5, rtol=1e-5)
      np.testing.assert_allclose(np.asarray(ad.b[t]), np.asarray(ref.b[t]), atol=1e-5, rtol=1e-5)


def test_bad_documents(comp, tmp_path):
  for bad, match in (("", "empty"), ("   \n\t ", "whitespace"), (b"\xff\xfe\x00\x01", "binary"),
                     (b"caf\xe9 au lait", "not UTF-8"), ("---\nname: x\n---\n", "only front matter"),
                     ("---\nname: [unclosed\n---\nbody", "YAML")):
    with pytest.raises(lsj.DocumentError, match=match):
      comp.compile([bad])
  long_doc = "word " * 400  # over the tiny context of 128 tokens
  n_chunks = -(-len(comp.tokenize(long_doc)) // comp.spec.context_len)
  assert n_chunks > 1
  with pytest.raises(lsj.DocumentError, match="over the compiler's context"):
    comp.compile([long_doc])
  out = comp.compile_documents(["", DOCS[0], long_doc])
  assert isinstance(out.results[0], lsj.DocumentError) and isinstance(out.results[2], lsj.DocumentError)
  assert isinstance(out.results[1], lsj.Adapter)
  trunc, = comp.compile([long_doc], overlong="truncate")
  assert "truncated to the first 128" in trunc.metadata["treatment"]
  chunked, = comp.compile([long_doc], overlong="chunk")
  assert chunked.rank == comp.spec.rank * n_chunks
  assert f"{n_chunks} chunks" in chunked.metadata["treatment"]


def test_compile_cli_skips_bad_files_and_writes_the_rest(tmp_path):
  skills = tmp_path / "skills"
  (skills / "cook").mkdir(parents=True)
  (skills / "cook" / "SKILL.md").write_text("---\nname: cook\n---\nHeat things in the microwave.")
  (skills / "empty.md").write_text("  \n")
  (skills / "plain.txt").write_text("Look under the lamp.")
  os.symlink(skills / "missing.md", skills / "dangling.md")  # unreadable entries are skipped too
  os.symlink(skills / "loop.md", skills / "loop.md")
  (skills / "task.md").write_text("Heat the mug in the microwave.")  # both would go to out/task
  (skills / "task.txt").write_text("Cool the apple in the fridge.")
  out = subprocess.run([sys.executable, "-m", "launch.compile", "--compiler=configs/tiny.py",
                        "--config=configs/tiny.py", f"--skill={skills}", f"--out={tmp_path / 'out'}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  assert "compiled 4 of 7" in out.stdout and "empty.md" in out.stderr
  assert "dangling.md: cannot be read" in out.stderr and "loop.md: cannot be read" in out.stderr
  assert "Traceback" not in out.stderr
  assert sorted(os.listdir(tmp_path / "out")) == ["cook", "plain", "task.md", "task.txt"]
  assert os.path.isfile(tmp_path / "out" / "cook" / "SKILL" / "adapter.json")
  sources = {lsj.Adapter.load(str(tmp_path / "out" / n)).metadata["source"] for n in ("task.md", "task.txt")}
  assert sources == {str(skills / "task.md"), str(skills / "task.txt")}


def test_checkpoint_roundtrip_and_cache(comp, tmp_path):
  comp = _trained_like(comp)
  comp.save(str(tmp_path / "ckpt"))
  back = lsj.SkillCompiler.load(str(tmp_path / "ckpt"), backbone=comp.backbone)
  assert back.checkpoint_id == comp.checkpoint_id
  ref = comp.compile([DOCS[1]])[0]
  cache = AdapterCache(str(tmp_path / "cache"), back)
  first = cache.get([DOCS[1], DOCS[0], DOCS[1]])
  assert DOCS[0] in cache and DOCS[1] in cache and DOCS[2] not in cache
  np.testing.assert_allclose(np.asarray(first[0].a["up"]), np.asarray(ref.a["up"]), atol=1e-5)
  calls = []
  back.compile_documents = lambda *a, **k: calls.append(a)  # a hit must not compile
  again = cache.get([DOCS[0]])
  assert not calls
  np.testing.assert_array_equal(np.asarray(again[0].b["q"]), np.asarray(first[1].b["q"]))


def test_checkpoint_for_another_backbone_is_refused(comp, tmp_path):
  comp.save(str(tmp_path / "ckpt"))
  c = tiny.get_config()
  c.backbone_shape["num_hidden_layers"] = 3
  other = lsj.backbone_from_config(c)
  with pytest.raises(ValueError, match="trained for base model"):
    lsj.SkillCompiler.load(str(tmp_path / "ckpt"), backbone=other)
