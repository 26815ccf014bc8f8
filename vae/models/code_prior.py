"""A learned prior over a trained VQ model's codes: the second stage, which makes a VQ model a generative model with a
likelihood (van den Oord et al. 2017 used a PixelCNN).

    p(c) = Π_i p(c_i | c_<i)      over the code sequence (``tokens_of``: position by position, codebook by codebook)
    ELBO = log p(x | z_q(c)) + log p(c),   c = the first stage's codes of x (a one-hot posterior: H(q) = 0)

so the KL term is the prior's cross-entropy on the codes, −log p(c): the rate in nats. It is a lower bound on
log p(x) (a deterministic encoder gets no bits back), and −ELBO / (D ln 2) is an upper bound on the bits per
dimension that compares with the VAEs' importance-weighted NLL when the likelihood is discrete.

The prior is a small causal transformer (pre-norm, a learned start token and position embeddings): its causal mask
makes p(c_i | c_<i) exact by construction, with no blind spot (a gated PixelCNN needs two stacks to avoid one), and on
a 7×7 or 8×8 grid of 49 or 64 codes attention costs little.

The first stage is read from its run (``first_stage``: a run folder or a checkpoint), frozen and kept in eval mode (its
EMA codebook never moves here). The prior's checkpoint carries the first stage's weights, its config and its
fingerprint (a hash of both, ``vae.core.checkpoints.fingerprint``): the prior's run is whole on its own, and a prior
rebuilt against a first-stage run whose weights or config have changed is refused in one line.

Axes: b batch, n codes per example, k codes of the codebook (the vocabulary), f features.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from vae.core.checkpoints import checkpoint_of, fingerprint, read_checkpoint
from vae.core.errors import ConfigError, UserError
from vae.core.pixels import as_unit
from vae.core.spec import to_spec
from vae.core.trust import build
from vae.models.base import Capabilities, Choose, Encoding, LatentVariableModel, ModelOutput, inferring
from vae.models.quantized import VQVAE


class CodeTransformer(nn.Module):
    """p(c_i | c_<i) over sequences of ``length`` codes from a vocabulary of ``vocabulary``: a decoder-only
    transformer of ``layers`` pre-norm blocks, ``width`` features and ``heads`` heads, reading a start token and the
    codes before each position."""

    def __init__(self, *, vocabulary: int, length: int, width: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.vocabulary, self.length = vocabulary, length
        self.embed = nn.Embedding(vocabulary + 1, width)  # the last row: the start token
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Codes (b, n) → the logits of each code given the ones before it (b, n, k); n ≤ ``length``."""
        n = tokens.shape[1]
        start = torch.full_like(tokens[:, :1], self.vocabulary)
        inputs = torch.cat([start, tokens[:, : n - 1]], dim=1)  # position i reads the codes before i
        h = self.embed(inputs) + self.position[:n]  # (b, n, f)
        h = self.body(h, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, top_k: int | None = None) -> Tensor:
        """n code sequences (n, length) drawn one code at a time, each from its logits divided by ``temperature``
        (0: the most likely code) and cut to the ``top_k`` most likely codes where given."""
        tokens = torch.zeros(n, self.length, dtype=torch.long, device=self.position.device)
        for i in range(self.length):
            logits = self.forward(tokens[:, : i + 1])[:, i].float()  # (n, k): reads the codes before i only
            if top_k is not None and top_k < self.vocabulary:
                cut = logits.topk(top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < cut, float("-inf"))
            if temperature == 0:
                code = logits.argmax(dim=1)
            else:
                code = torch.multinomial(torch.softmax(logits / temperature, dim=1), 1)[:, 0]
            tokens[:, i] = code
        return tokens


def read_first_stage(path: str | Path) -> VQVAE:
    """The trained VQ model of a run folder or checkpoint, with its weights; a one-line error for anything else."""
    checkpoint = checkpoint_of(path)
    contents = read_checkpoint(checkpoint)
    spec = (contents.get("hyper_parameters") or {}).get("model")
    named = spec.get("class_path", "?") if isinstance(spec, dict) else "not a vae fit run"
    if not isinstance(spec, dict) or not named.endswith(".VQVAE"):
        raise ConfigError(
            f"first_stage {path} is not a VQ model ({named.rsplit('.', 1)[-1]}): a code prior is trained on the codes "
            "of a vae.models.VQVAE run"
        )
    model = build(spec, VQVAE, "first_stage")
    state = {k.removeprefix("model."): v for k, v in contents["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model


def fingerprint_of(model: VQVAE) -> str:
    return fingerprint(to_spec(model), model.state_dict())


def on_disk_fingerprint(path: str | Path) -> str | None:
    """The fingerprint of the first stage at ``path``, or None where it can no longer be read (moved, pruned): a
    prior's checkpoint holds the first stage's weights, so it loads without it."""
    try:
        return fingerprint_of(read_first_stage(path))
    except UserError:
        return None


def changed(first_stage: str | Path, found: str, recorded: str) -> ConfigError:
    return ConfigError(
        f"the first stage at {first_stage} has changed since this prior was trained on it (fingerprint {found}, the "
        f"prior's {recorded}): train a new prior on it, or point first_stage at the run it was trained on"
    )


def check_loaded_first_stage(prior: nn.Module, incompatible: object) -> None:
    """After a state dict loads into a ``CodePrior``: the first stage's weights must be the ones its fingerprint
    names (a run resumed after its first stage's file changed would otherwise train on weights it does not name)."""
    loaded, recorded = fingerprint_of(prior.first_stage), prior.init_args["fingerprint"]
    if recorded is not None and loaded != recorded:
        raise ConfigError(
            f"the first-stage weights loaded (fingerprint {loaded}) are not the ones this prior was built on "
            f"({recorded}, from {prior.init_args['first_stage']}): load a checkpoint of this prior's own run"
        )


class CodePrior(LatentVariableModel):
    """A VQ model (the first stage, frozen) with a causal transformer prior over its codes, trained by maximum
    likelihood on the codes of the data: ``vae fit`` trains it, ``vae sample`` draws from it, ``vae evaluate`` gives
    bits/dim.

    first_stage: the VQ model's run folder (its best checkpoint) or checkpoint; the checkpoint file is recorded.
    width, layers, heads, dropout: the transformer's (``CodeTransformer``).
    top_k: sample each code from the ``top_k`` most likely only (None: from all); ``vae sample``'s temperature
        applies on top.
    fingerprint / first_stage_model: recorded when the prior is built (the first stage's fingerprint and model); a
        config gives neither, unless to pin the first stage to a known fingerprint.
    image_shape, context_size: from the data; the images must be the first stage's.
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        first_stage: str,
        width: int = 128,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.1,
        top_k: int | None = None,
        fingerprint: str | None = None,
        first_stage_model: VQVAE | None = None,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        if width < 1 or layers < 1 or heads < 1 or width % heads or not 0 <= dropout < 1:
            raise ConfigError(
                f"the prior needs width divisible by heads, at least one layer and dropout in [0, 1), got width "
                f"{width}, heads {heads}, layers {layers}, dropout {dropout}"
            )
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be a positive integer or None, got {top_k}")
        if first_stage_model is None:  # a new prior: the first stage comes from its run
            checkpoint = checkpoint_of(first_stage)
            first_stage_model = read_first_stage(checkpoint)
            found = fingerprint_of(first_stage_model)
            if fingerprint is not None and fingerprint != found:
                raise ConfigError(
                    f"the first stage at {first_stage} has fingerprint {found}, not the {fingerprint} the config "
                    "pins: point first_stage at the run it names, or leave fingerprint out"
                )
            first_stage, fingerprint = str(checkpoint), found
        elif not isinstance(first_stage_model, VQVAE):
            raise ConfigError(f"first_stage_model must be a VQVAE, got {type(first_stage_model).__name__}")
        else:  # rebuilt from its own checkpoint, which holds the weights: judge the file it was trained on, if readable
            found = on_disk_fingerprint(first_stage)
            if fingerprint is not None and found is not None and found != fingerprint:
                raise changed(first_stage, found, fingerprint)
        if tuple(first_stage_model.image_shape) != self.image_shape:
            raise ConfigError(
                f"the data's images are {self.image_shape} and the first stage's {first_stage_model.image_shape}: "
                "train the prior on the first stage's data"
            )
        self.record(first_stage=first_stage, fingerprint=fingerprint, first_stage_model=first_stage_model)
        self.first_stage = first_stage_model.eval().requires_grad_(False)
        self.likelihood = self.first_stage.likelihood
        self.top_k = top_k
        latent = self.first_stage.latent
        self.code_vocabulary = latent.quantizer.codebook_size
        self.network = CodeTransformer(
            vocabulary=self.code_vocabulary,
            length=latent.length,
            width=width,
            layers=layers,
            heads=heads,
            dropout=dropout,
        )
        self.register_load_state_dict_post_hook(check_loaded_first_stage)

    def train(self, mode: bool = True) -> CodePrior:
        """Training mode for the prior only: the first stage stays in eval mode (its codebook never moves)."""
        super().train(mode)
        self.first_stage.eval()
        return self

    @property
    def layers(self):
        return self.first_stage.layers

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(iwae_training=False, deterministic_encoder=True)

    def networks(self) -> list[nn.Module]:
        return [self.network]

    def split_metrics(self) -> Metric:
        return self.first_stage.split_metrics()

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        if samples != 1:
            raise ConfigError("a VQ model's encoder is deterministic: it draws one sample per image")
        out, _ = self.first_stage.run(as_unit(x), prior=self.network)
        return ModelOutput(log_px=out.log_px, latents=out.latents, params=out.params)

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        return self.first_stage.decode(self.network.sample(n, temperature=temperature, top_k=self.top_k))

    def coding_refusal(self) -> str | None:
        return None

    def walk(self, n: int, *, x: Tensor | None, choose: Choose) -> Tensor:
        """The first stage's codes, one position at a time under the learned prior."""
        return self.first_stage.walk(n, x=x, choose=choose, prior=self.network)

    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        return self.first_stage.encode(x)

    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        return self.first_stage.decode(z)

    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        return self.first_stage.reconstruct(x)
