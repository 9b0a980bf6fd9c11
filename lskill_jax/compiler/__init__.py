"""The skill compiler (hypernetwork): documents in, LoRA adapters out."""

from lskill_jax.compiler.geometry import Geometry, geometry
from lskill_jax.compiler.hypernet import CompilerSpec
from lskill_jax.compiler.skill_compiler import SkillCompiler, spec_from_config
