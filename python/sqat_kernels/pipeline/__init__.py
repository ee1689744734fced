"""End-to-end jobs built from the layers below: a model directory and text in, a GGUF file out."""
