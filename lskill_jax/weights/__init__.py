"""Reading and writing weights: safetensors, HF directories, GGUF."""
