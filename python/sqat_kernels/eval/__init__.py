"""Evaluation of exported GGUF files by llama.cpp (perplexity, KL divergence against a reference)."""

from .llamacpp import GGUFScore, score_ggufs, tokenize_with_gguf

__all__ = ["GGUFScore", "score_ggufs", "tokenize_with_gguf"]
