"""pythae's MNIST convolutional encoder and decoder, rebuilt as a ``Network``: what ``vae benchmark`` trains on
pythae's home ground, beside pythae itself (the benchmark's own file, not part of the library)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vae.layers.nets.common import Network


class PythaeEncoder(nn.Module):
    """pythae's Encoder_Conv_VAE_MNIST, layer for layer: four stride-2 convolutions (128 → 1024 channels)
    with batch norm and ReLU, then linear heads for the mean and log-variance."""

    def __init__(self) -> None:
        super().__init__()
        sizes = [1, 128, 256, 512, 1024]
        self.body = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(a, b, 4, 2, padding=1), nn.BatchNorm2d(b), nn.ReLU())
                for a, b in zip(sizes[:-1], sizes[1:])
            )
        )
        self.out_features = 1024  # the latent layer's head reads these: pythae's linear mean and log-variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.body(x), "b c h w -> b (c h w)")  # (b, 1024): 28 → 14 → 7 → 3 → 1


class PythaeDecoder(nn.Module):
    """pythae's Decoder_Conv_AE_MNIST, layer for layer, returning logits (pythae applies a sigmoid)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(latent_dim, 1024 * 4 * 4)
        self.body = nn.Sequential(
            nn.ConvTranspose2d(1024, 512, 3, 2, padding=1), nn.BatchNorm2d(512), nn.ReLU(),
            nn.ConvTranspose2d(512, 256, 3, 2, padding=1, output_padding=1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.ConvTranspose2d(256, 1, 3, 2, padding=1, output_padding=1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(rearrange(self.fc(z), "b (c h w) -> b c h w", c=1024, h=4, w=4))  # 4 → 7 → 14 → 28


class PythaeMNISTConv(Network):
    """pythae's MNIST conv VAE (17.2 M parameters), to compare on pythae's home ground."""

    def make_encoder(self, *, image_shape: tuple[int, int, int]) -> nn.Module:
        return PythaeEncoder()

    def make_decoder(self, *, image_shape: tuple[int, int, int], latent_dim: int) -> nn.Module:
        return PythaeDecoder(latent_dim)
