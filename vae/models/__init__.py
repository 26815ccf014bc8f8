"""Models: one file per model, each a ``LatentVariableModel`` (``vae.models.base``)."""
