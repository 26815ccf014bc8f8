"""Training through Lightning: the module, its callbacks, checkpoints, run folders, W&B and the console."""
