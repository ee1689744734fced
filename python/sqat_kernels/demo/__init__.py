"""`sqat demo`: PTQ versus scheduled QAT on a real SmolLM2, judged by llama.cpp."""

from .run import DemoConfig, DemoResult, Recipe, run_demo

__all__ = ["DemoConfig", "DemoResult", "Recipe", "run_demo"]
