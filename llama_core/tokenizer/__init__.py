"""Tokenizers: one interface, a backend per file format."""

from .sentencepiece import StreamDecoder, Tokenizer

__all__ = ["StreamDecoder", "Tokenizer"]
