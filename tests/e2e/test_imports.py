"""The package's floors, as a new process sees them: the maths loads without Lightning or W&B, and ``vae.load``
(lazy) still reaches the training floor when asked."""

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_the_maths_and_the_models_load_without_lightning_or_wandb():
    for statement in ("import vae.core.kl", "import vae", "from vae.models import VAE", "import vae.objectives"):
        loaded = loaded_after(statement)
        heavy = {name for name in loaded if name.split(".")[0] in ("pytorch_lightning", "lightning", "wandb")}
        assert not heavy, f"{statement} loads {sorted(heavy)[:5]}"


def test_vae_load_is_there_when_asked():
    loaded = loaded_after("import vae\nassert callable(vae.load) and vae.VAE.__name__ == 'VAE'")
    assert "vae.training.checkpoint_io" in loaded and "pytorch_lightning" in loaded
