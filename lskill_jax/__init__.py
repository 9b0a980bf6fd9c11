"""lskill_jax: compile textual agent skills into LoRA adapters (LatentSkill) in JAX."""
