"""The one-pixel attack (Su et al. 2019): differential evolution over the position and colour of a few pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import to_host
from ..config import Config, option
from .base import Attack, _check_positive_int
from .build import EVASION_ATTACKS


class OnePixel(Attack):
    """The one-pixel attack (Su et al. 2019): differential evolution over (row, col, colour) of ``pixels`` pixels.

    Per image, scipy's ``differential_evolution`` minimises the probability of the true class (untargeted) or
    maximises that of the target (targeted); a whole population is scored in one batched forward pass. The
    search stops as soon as a candidate succeeds. Slow by nature (``popsize * 5 * pixels`` model evaluations
    per generation and image): meant for a few hundred images.
    """

    def __init__(self, model: nn.Module, pixels: int = 1, max_iter: int = 75, popsize: int = 80,
                 target: int | None = None, seed: int = 0, batch_size: int = 500):
        super().__init__(model, target, batch_size, seed)
        self.pixels = _check_positive_int(pixels, "number of pixels")
        self.max_iter = _check_positive_int(max_iter, "number of iterations")
        self.popsize = _check_positive_int(popsize, "population size")

    def config(self) -> dict:
        return {"attack": "one-pixel", "pixels": self.pixels, "max_iter": self.max_iter, "popsize": self.popsize,
                "target": self.target, "seed": self.seed}

    @staticmethod
    def perturb(x: torch.Tensor, z: np.ndarray) -> torch.Tensor:
        """Images (S, C, H, W): ``x`` (C, H, W) with the pixels of each candidate row of ``z`` (S, k*(2+C))
        (row, col, colour...) set."""
        c, h, w = x.shape
        z = np.atleast_2d(z)
        out = x.expand(len(z), c, h, w).clone()
        per = z.reshape(len(z), -1, 2 + c)
        rows = np.clip(per[..., 0].astype(int), 0, h - 1)
        cols = np.clip(per[..., 1].astype(int), 0, w - 1)
        colours = torch.from_numpy(np.clip(per[..., 2:], 0, 1)).float().to(x.device)
        s_idx = np.repeat(np.arange(len(z))[:, None], per.shape[1], 1)
        for ch in range(c):
            out[s_idx, ch, rows, cols] = colours[..., ch]
        return out

    def _attack(self, x, labels, targets, g):
        from scipy.optimize import differential_evolution

        out = x.clone()
        c, h, w = x.shape[1:]
        bounds = [(0, h - 1e-6), (0, w - 1e-6)] + [(0, 1)] * c
        bounds = bounds * self.pixels
        for i in range(len(x)):
            xi, yi = x[i], int(labels[i])
            ti = None if targets is None else int(targets[i])
            cls = yi if ti is None else ti

            @torch.no_grad()
            def probs(z):  # z: (D, S) with vectorized=True
                zz = np.asarray(z, dtype=np.float64).T
                p = torch.cat([F.softmax(self.model(self.perturb(xi, zz[j:j + self.batch_size])), 1)
                               for j in range(0, len(zz), self.batch_size)])
                return p

            def objective(z):
                p = to_host(probs(z)[:, cls]).numpy()
                return p if ti is None else -p

            def done(xk, convergence=None):
                p = to_host(probs(np.asarray(xk)[:, None])[0])
                return (int(p.argmax()) != yi) if ti is None else (int(p.argmax()) == ti)

            de_seed = int(torch.randint(2 ** 31 - 1, (1,), generator=g))
            kw = dict(maxiter=self.max_iter, popsize=self.popsize, recombination=1.0, mutation=(0.5, 1.0),
                      init="random", polish=False, tol=-1, atol=0, callback=done, vectorized=True,
                      updating="deferred")
            try:
                res = differential_evolution(objective, bounds, rng=np.random.default_rng(de_seed), **kw)
            except TypeError:  # scipy < 1.15 calls it seed
                res = differential_evolution(objective, bounds, seed=de_seed, **kw)
            out[i] = self.perturb(xi, res.x[None])[0]
        return out


@dataclass
class OnePixelConfig(Config):
    """The settings of :class:`OnePixel` (see its docstring); ``flag``: the ``backdoorlab robustness`` option that
    sets a field."""

    pixels: int = option(1, flag="--pixels")
    max_iter: int = option(75, flag="--max-iter")
    popsize: int = option(80, flag="--popsize")
    target: int | None = option(None, flag="--target")
    seed: int = option(0, flag="--seed")
    batch_size: int = 500


@EVASION_ATTACKS.register("one-pixel", OnePixelConfig, "One-pixel attack: differential evolution over a few "
                          "pixels' positions and colours (Su et al. 2019); slow.", default_images=100)
def build_one_pixel(model: nn.Module, **kwargs) -> OnePixel:
    return OnePixel(model, **kwargs)
