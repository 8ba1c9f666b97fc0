"""Small generators of different architectures trained on the same images, for memorization fingerprints.

Families (each instance is one seed; images ``(N, C, H, W)`` in [-1, 1], as :mod:`trustlab.attribution.ddpm`):

- ``noisy-copy``: a random training image plus Gaussian noise (sd 0.05), clipped: a copier, the positive
  control of memorization;
- ``kde-narrow`` / ``kde-wide``: scikit-learn ``KernelDensity`` (Gaussian kernel, bandwidth 0.2 / 1.0 in
  pixel units), sampled and clipped: a near copier and a smoothed one;
- ``gmm``: ``GaussianMixture`` (20 full-covariance components) on the pixels;
- ``pca-gauss``: a Gaussian in the first 20 principal components;
- ``vae``: an MLP VAE (latent 8); ``gan``: an MLP GAN (latent 16, non-saturating loss);
- ``ddpm``: the project's UNet DDPM (:func:`trustlab.attribution.ddpm.train_ddpm`), ancestral sampling.

Example:
    >>> x = load_images("digits").x
    >>> imgs = generate("vae", x, 500, seed=1)            # (500, 1, 8, 8) in [-1, 1]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trustlab.errors import EmptyInputError, TrustlabError

FAMILIES = ("noisy-copy", "kde-narrow", "kde-wide", "gmm", "pca-gauss", "vae", "gan", "ddpm")
COPIERS = ("noisy-copy", "kde-narrow")
GAUSSIAN_LIKE = ("kde-wide", "gmm", "pca-gauss")


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).double().numpy()


def _shape(flat: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.clip(flat, -1, 1)).float().reshape(len(flat), *like.shape[1:])


def _train_vae(x: torch.Tensor, n: int, seed: int, epochs: int) -> torch.Tensor:
    d, latent = x[0].numel(), 8
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 2 * latent))
    dec = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, d), nn.Tanh())
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=2e-3)
    flat = x.reshape(len(x), -1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            mu, logvar = enc(flat[idx]).chunk(2, 1)
            z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen)
            recon = ((dec(z) - flat[idx]) ** 2).sum(1)
            kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
            loss = (recon / 0.1 + kl).mean()  # Gaussian decoder, sd ~ 0.22 in [-1, 1] pixels
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return dec(torch.randn((n, latent), generator=gen)).reshape(n, *x.shape[1:])


def _train_gan(x: torch.Tensor, n: int, seed: int, steps: int) -> torch.Tensor:
    d, latent = x[0].numel(), 16
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, d), nn.Tanh())
    disc = nn.Sequential(nn.Linear(d, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    flat = x.reshape(len(x), -1)
    gen = torch.Generator().manual_seed(seed)
    bce = nn.functional.binary_cross_entropy_with_logits
    for _ in range(steps):
        real = flat[torch.randint(0, len(x), (64,), generator=gen)]
        fake = g(torch.randn((64, latent), generator=gen))
        d_loss = bce(disc(real), torch.ones(64, 1)) + bce(disc(fake.detach()), torch.zeros(64, 1))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = bce(disc(fake), torch.ones(64, 1))  # non-saturating generator loss
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    with torch.no_grad():
        return g(torch.randn((n, latent), generator=gen)).reshape(n, *x.shape[1:])


def _ddpm(x: torch.Tensor, n: int, seed: int, epochs: int, steps: int, work: Path | None) -> torch.Tensor:
    from trustlab.attribution.ddpm import DDPMConfig, load_run, sample_images, train_ddpm

    if work is None:
        raise TrustlabError("the ddpm family trains into a run folder: pass work=PATH")
    cfg = DDPMConfig(epochs=epochs, checkpoints=1, batch_size=128, lr=2e-3, num_timesteps=1000, seed=seed)
    train_ddpm(x, work, cfg, device="cpu")
    task, _ = load_run(work, device="cpu")
    return sample_images(task, n, steps=steps, seed=seed)


def generate(family: str, x: torch.Tensor, n: int, *, seed: int = 0, work: str | os.PathLike | None = None,
             budget: float = 1.0) -> torch.Tensor:
    """Train one instance of ``family`` on ``x`` ``(N, C, H, W)`` in [-1, 1] and draw ``n`` images from it.

    Args:
        family: one of :data:`FAMILIES`.
        x: the training images. n: images to draw. seed: the instance (init, data order, sampling).
        work: run folder for the DDPM (resumable; other families train in memory in seconds).
        budget: scales the training length of the neural families (1.0: VAE 150 epochs, GAN 3,000 steps,
            DDPM 40 epochs and 100 sampling steps, at least 10; the quick reproduction uses less).

    Raises:
        TrustlabError: an unknown family. EmptyInputError: no training images.

    Example:
        >>> generate("noisy-copy", x, 10, seed=0).shape
        torch.Size([10, 1, 8, 8])
    """
    if family not in FAMILIES:
        raise TrustlabError(f"unknown generator family {family!r}; choose one of {', '.join(FAMILIES)}")
    if len(x) == 0:
        raise EmptyInputError("no training images for the generator")
    rng = np.random.default_rng(seed)
    flat = _flat(x)
    if family == "noisy-copy":
        return _shape(flat[rng.integers(0, len(flat), n)] + 0.05 * rng.normal(size=(n, flat.shape[1])), x)
    if family in ("kde-narrow", "kde-wide"):
        from sklearn.neighbors import KernelDensity

        kde = KernelDensity(bandwidth=0.2 if family == "kde-narrow" else 1.0).fit(flat)
        return _shape(kde.sample(n, random_state=seed), x)
    if family == "gmm":
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(n_components=min(20, len(flat)), covariance_type="full", reg_covar=1e-3,
                              random_state=seed).fit(flat)
        return _shape(gmm.sample(n)[0][rng.permutation(n)], x)  # sample() groups by component: shuffle
    if family == "pca-gauss":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(20, *flat.shape), random_state=seed).fit(flat)
        z = rng.normal(size=(n, pca.n_components_)) * np.sqrt(pca.explained_variance_)
        return _shape(pca.inverse_transform(z), x)
    if family == "vae":
        return _train_vae(x.float(), n, seed, max(1, round(150 * budget)))
    if family == "gan":
        return _train_gan(x.float(), n, seed, max(1, round(3000 * budget)))
    return _ddpm(x.float(), n, seed, max(1, round(40 * budget)), max(10, round(100 * min(budget, 1.0))),
                 Path(work) if work is not None else None)


def generator_info() -> dict[str, Any]:
    """One line per family (for reports and ``setup``)."""
    return {"noisy-copy": "training image + N(0, 0.05^2) pixel noise (copier, positive control)",
            "kde-narrow": "KernelDensity, Gaussian, bandwidth 0.2 (near copier)",
            "kde-wide": "KernelDensity, Gaussian, bandwidth 1.0",
            "gmm": "GaussianMixture, 20 full-covariance components",
            "pca-gauss": "Gaussian in the top-20 principal components",
            "vae": "MLP VAE 64-128-8, 150 epochs, Adam 2e-3",
            "gan": "MLP GAN (latent 16, 128-128), 3,000 steps of batch 64, Adam 2e-4",
            "ddpm": "trustlab UNet2DModel DDPM (widths 16, 32), 40 epochs, Adam 2e-3, 100 ancestral steps"}
