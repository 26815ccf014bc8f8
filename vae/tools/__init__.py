"""The tools around the library, each behind a ``vae`` subcommand: ``compare`` (studies of KL weightings),
``playground`` (the KL playground, ``vae kl-demo``) and ``benchmark`` (training and evaluation speed)."""
