"""Image generators for deep generative replay: study R1's GAN and a small VAE.

Both work on flat images of ``n_pixels`` values in [0, 1] (any image size: 784 for MNIST,
64 for 8x8 digits) and offer the same three methods:

* ``sample(n, generator)``: n images in [0, 1], shape (n, n_pixels);
* ``fit_batch(images)``: one optimisation step on a batch of images in [0, 1], returning
  its losses by name;
* ``state_dict()`` / ``load_state_dict()``: the networks' weights (optimisers are rebuilt:
  a generator is trained within one task boundary and only its weights are kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _leaky_mlp(sizes: list[int], leak: float, dropout: float) -> list[nn.Module]:
    """Linear layers with LeakyReLU and dropout between them (none after the last)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers += [nn.LeakyReLU(leak), nn.Dropout(dropout)]
    return layers


class GANGenerator(nn.Module):
    """z (latent, standard normal) -> hidden... -> n_pixels, tanh output in [-1, 1]."""

    def __init__(self, n_pixels: int, latent: int = 100, hidden=(32, 64, 128), leak: float = 0.2, dropout: float = 0.3):
        super().__init__()
        self.latent = latent
        self.net = nn.Sequential(*_leaky_mlp([latent, *hidden, n_pixels], leak, dropout), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class GANDiscriminator(nn.Module):
    """n_pixels -> reversed hidden... -> 1, sigmoid output: the probability of "real"."""

    def __init__(self, n_pixels: int, hidden=(128, 64, 32), leak: float = 0.2, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(*_leaky_mlp([n_pixels, *hidden, 1], leak, dropout), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class GAN(nn.Module):
    """Study R1's GAN (Goodfellow et al. 2014) on images in [0, 1].

    Sizes (R1, for 784 pixels): generator 100 -> 32 -> 64 -> 128 -> 784, discriminator
    784 -> 128 -> 64 -> 32 -> 1, LeakyReLU(0.2) and dropout 0.3 between layers. The
    discriminator sees images mapped to [-1, 1], the generator's tanh range. The
    generator loss is ``non-saturating`` (maximise log D(G(z)), what Goodfellow et al.
    recommend in practice and what "the standard GAN loss" means in most code) or the
    literal ``minimax`` (minimise log(1 - D(G(z)))).
    """

    def __init__(
        self, n_pixels: int, latent: int = 100, hidden=(32, 64, 128), leak: float = 0.2, dropout: float = 0.3,
        lr: float = 2e-4, betas=(0.5, 0.999), generator_loss: str = "non-saturating",
    ):
        super().__init__()
        self.generator = GANGenerator(n_pixels, latent, hidden, leak, dropout)
        self.discriminator = GANDiscriminator(n_pixels, tuple(reversed(hidden)), leak, dropout)
        self.generator_loss = generator_loss
        self.lr, self.betas = lr, tuple(betas)
        self._opt_g = self._opt_d = None

    @property
    def latent(self) -> int:
        return self.generator.latent

    def _optimisers(self):
        if self._opt_g is None:
            self._opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)
            self._opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)
        return self._opt_g, self._opt_d

    def _noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        dev = next(self.parameters()).device
        return torch.randn(n, self.latent, generator=generator).to(dev)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return (self.generator(self._noise(n, generator)) + 1.0) / 2.0
        finally:
            self.train(was)

    def fit_batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        opt_g, opt_d = self._optimisers()
        self.train()
        real = images * 2.0 - 1.0
        n = real.shape[0]
        fake = self.generator(self._noise(n, generator))
        # Discriminator: real -> 1, generated -> 0.
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        loss_d = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        # Generator: fool the (updated) discriminator.
        d_fake = self.discriminator(fake)
        if self.generator_loss == "minimax":
            loss_g = -F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
        else:
            loss_g = F.binary_cross_entropy(d_fake, torch.ones_like(d_fake))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        return {"gen_loss_d": loss_d.item(), "gen_loss_g": loss_g.item()}


class VAE(nn.Module):
    """A small variational autoencoder (Kingma & Welling 2014): MLP encoder and decoder.

    Bernoulli (binary cross-entropy) reconstruction of images in [0, 1] plus the KL
    divergence to a standard normal prior, both summed over pixels and latents and averaged
    over the batch.
    """

    def __init__(self, n_pixels: int, latent: int = 16, hidden=(256,), lr: float = 1e-3):
        super().__init__()
        self.latent = latent
        enc, dec = [], []
        width = n_pixels
        for h in hidden:
            enc += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.encoder = nn.Sequential(*enc)
        self.to_mu = nn.Linear(width, latent)
        self.to_logvar = nn.Linear(width, latent)
        width = latent
        for h in reversed(hidden):
            dec += [nn.Linear(width, h), nn.ReLU()]
            width = h
        dec.append(nn.Linear(width, n_pixels))
        self.decoder = nn.Sequential(*dec)
        self.lr = lr
        self._opt = None

    def _optimiser(self):
        if self._opt is None:
            self._opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        return self._opt

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            z = torch.randn(n, self.latent, generator=generator).to(self.to_mu.weight.device)
            return torch.sigmoid(self.decoder(z))
        finally:
            self.train(was)

    def fit_batch(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        opt = self._optimiser()
        self.train()
        h = self.encoder(images)
        mu, logvar = self.to_mu(h), self.to_logvar(h)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        n = images.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        loss = recon + kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"gen_loss": loss.item(), "gen_loss_recon": recon.item(), "gen_loss_kl": kl.item()}


def build_generator(kind: str, n_pixels: int, **options) -> GAN | VAE:
    """A fresh generator: ``gan`` (study R1) or ``vae``."""
    if kind == "gan":
        return GAN(n_pixels, **options)
    if kind == "vae":
        return VAE(n_pixels, **options)
    raise ValueError(f"unknown generator '{kind}' (use gan or vae)")
