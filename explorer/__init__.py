"""Latent-space explorer app: run loading, latent operations, figures and the Gradio UI."""
