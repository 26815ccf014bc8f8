"""What a trained model is measured by: the importance-weighted log-likelihood and latent statistics, sample quality,
disentanglement."""
