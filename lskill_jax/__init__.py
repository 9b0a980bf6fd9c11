"""lskill_jax: compile textual agent skills into LoRA adapters (LatentSkill) in JAX.

    import lskill_jax as lsj
    bb = lsj.load_backbone("smollm2-135m")
    print(lsj.generate(bb, ["What is the capital of France?"], max_new_tokens=32))
"""

from lskill_jax import adapter, compiler, sharding
from lskill_jax.adapter import (Adapter, AdapterFileError, AdapterMismatchError, export_hf,
                                merge, weighted_sum)
from lskill_jax.backbone import (Backbone, BackboneConfig, UnsupportedConfigError,
                                 WeightMismatchError, load_backbone, random_backbone, with_mesh)
from lskill_jax.compiler import SkillCompiler
from lskill_jax.data.documents import DocumentError
from lskill_jax.experiment import backbone_from_config
from lskill_jax.inference import TokenRangeError, forward, generate, generate_ids
from lskill_jax.sharding import make_mesh

__all__ = [
    "Adapter", "AdapterFileError", "AdapterMismatchError", "Backbone", "BackboneConfig",
    "DocumentError", "SkillCompiler", "TokenRangeError", "UnsupportedConfigError",
    "WeightMismatchError", "backbone_from_config", "export_hf", "forward", "generate",
    "generate_ids", "load_backbone", "make_mesh", "merge", "random_backbone", "weighted_sum",
    "with_mesh",
]
