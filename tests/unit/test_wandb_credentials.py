"""W&B logs online only where the user has credentials (an API key, or ~/.netrc's entry for api.wandb.ai); a new
user without them logs offline (the commands that do so: tests/integration/test_cli.py)."""

from vae.training.tracking import wandb_logged_in


def test_wandb_goes_offline_only_without_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_logged_in()
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc.chmod(0o600)
    assert wandb_logged_in()
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert wandb_logged_in()
