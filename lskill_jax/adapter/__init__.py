"""Adapters: the LoRA pytree, arithmetic, our file format, PEFT and merged export."""

from lskill_jax.adapter.adapter import (TARGETS, Adapter, AdapterMismatchError,
                                        base_fingerprint, text_hash, weighted_sum)
from lskill_jax.adapter.files import AdapterFileError
from lskill_jax.adapter.merging import export_hf, merge
