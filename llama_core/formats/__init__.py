"""Checkpoint formats, one module each: Hugging Face, Meta, llama2.c, the Hub, tensor files and GGUF export."""
