"""The disentangling penalties through a real Trainer: each trains and logs its terms beside their weights, and a
FactorVAE run resumes with its discriminator's optimizer state."""

import pytest
import pytorch_lightning as pl
import torch

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets import MLPNet
from vae.models import VAE
from vae.objectives import ELBO
from vae.objectives.penalties import DIPVAE, BetaTCVAE, FactorVAE
from vae.training.module import VAEModule


def module_with(penalty, hidden: int) -> VAEModule:
    model = VAE(image_shape=(1, 28, 28), latent_dim=4, network=MLPNet(hidden_dims=(hidden,)))
    return VAEModule(model=model, objective=ELBO(penalty=penalty))


PENALTIES = {
    "beta-tcvae": lambda: BetaTCVAE(beta=4.0),
    "factor-vae": lambda: FactorVAE(gamma=5.0, hidden=32, depth=2),
    "dip-vae": lambda: DIPVAE(),
}


@pytest.mark.parametrize("make", PENALTIES.values(), ids=list(PENALTIES))
def test_each_penalty_trains_through_a_real_trainer_and_logs_its_terms_beside_their_weights(make, trainer):
    penalty = make()
    module = module_with(penalty, hidden=32)
    run = trainer(max_epochs=1, limit_train_batches=6, limit_val_batches=1, log_every_n_steps=3)
    run.fit(module, datamodule=EmbeddedMNIST(batch_size=64))
    metrics = run.callback_metrics
    built = module.objective.penalty
    assert built is penalty
    for name in built.term_names:
        assert torch.isfinite(metrics[f"train/{name}"]) and torch.isfinite(metrics[f"val/{name}"])
    weights = {k for k in metrics if k.startswith("train/") and k.endswith("_weight") and k != "train/kl_weight"}
    assert weights, "a penalty logs its weights"
    assert {"val/kl_split/mi", "val/kl_split/tc", "val/kl_split/dwkl"} <= set(metrics)
    groups = run.optimizers[0].param_groups
    if isinstance(penalty, FactorVAE):  # the discriminator's own Adam settings
        assert len(groups) == 2 and groups[1]["betas"] == (0.5, 0.9) and groups[1]["lr"] == 1e-4
        assert {id(p) for p in groups[1]["params"]} == {id(p) for p in built.discriminator.parameters()}
    else:
        assert len(groups) == 1
    spec = module.hparams.objective["init_args"]["penalty"]
    assert spec["class_path"] == f"vae.objectives.penalties.{type(penalty).__name__}"


def test_a_factor_vae_run_resumes_with_its_discriminators_optimizer_state(trainer, tmp_path):
    """The checkpoint keeps both parameter groups' Adam moments; a resumed run starts from them."""

    def module() -> VAEModule:
        return module_with(FactorVAE(hidden=16, depth=2), hidden=16)

    first = trainer(max_steps=3, limit_val_batches=0)
    first.fit(module(), datamodule=EmbeddedMNIST(batch_size=32))
    first.save_checkpoint(tmp_path / "three.ckpt")
    saved = torch.load(tmp_path / "three.ckpt", weights_only=True)["optimizer_states"][0]
    assert [g["betas"] for g in saved["param_groups"]] == [(0.9, 0.999), (0.5, 0.9)]

    class Check(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 3:  # the first step after the resume, before its update
                state = trainer.optimizers[0].state_dict()
                for i, entry in saved["state"].items():
                    torch.testing.assert_close(state["state"][i]["exp_avg"], entry["exp_avg"], rtol=0, atol=0)
                self.checked = True

    check = Check()
    resumed = trainer(max_steps=5, limit_val_batches=0, callbacks=[check])
    resumed.fit(module(), datamodule=EmbeddedMNIST(batch_size=32), ckpt_path=tmp_path / "three.ckpt")
    assert check.checked and resumed.global_step == 5
