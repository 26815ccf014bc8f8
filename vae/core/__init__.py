"""The maths every other part rests on: KL divergences (closed forms, Monte Carlo), the KL split, Gaussian moments,
pixels; and the rules a config is judged by (``trust``), how parts record their arguments (``spec``) and how config
files are read (``config_file``). Nothing here imports Lightning or W&B."""
