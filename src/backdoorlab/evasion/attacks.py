"""Evasion attacks in pixel space: FGSM, PGD (l-inf and l2), adversarial patch, one-pixel attack.

An attack is an object that holds a model and its hyperparameters and is called on a batch,
``attack(images, labels) -> adversarial images``: float images (N, C, H, W) in [0, 1] (uint8 is accepted and
converted), int64 labels (N,). The result has the same shape, lies in [0, 1] and, for the norm-bounded attacks,
within ``eps`` of the input in the attack's norm. Large inputs are processed in chunks of ``batch_size``.

Targeted attacks: give ``target=K`` (every image is pushed towards class K) or call with ``targets=`` (one label
per image). Untargeted attacks push each image away from its true label.

Losses (``loss=``): ``"ce"`` (cross-entropy) or ``"margin"`` (Carlini-Wagner's logit margin, ``max_{j != y} z_j -
z_y`` untargeted, ``z_t - max_{j != t} z_j`` targeted; it works on logits, so a saturated softmax (defensive
distillation) does not hide its gradient).

The model is run in eval mode during an attack and restored to its previous mode afterwards.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackdoorlabError, valid_names
from ..tensors import to_float

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")


# --------------------------------------------------------------------------------------------------- helpers


def parse_eps(text) -> float:
    """Parse an epsilon given as a number or a fraction (``"8/255"``, ``"0.3"``); must be > 0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError):
            raise BackdoorlabError(f"epsilon must be a positive number or a fraction like 8/255, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise BackdoorlabError(f"epsilon must be > 0, got {text!r}")
    return value


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode inside the block; restore its mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Inside the block the model's parameters do not require gradients (an attack needs only the input's
    gradient, and autograd then keeps less for the backward pass); their flags are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample logit margin (N,) that the attacker maximises: untargeted ``max_{j != y} z_j - z_y``,
    targeted (``labels`` are the targets) ``z_t - max_{j != t} z_j``. Positive means the attack succeeded."""
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return own - other if targeted else other - own


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, targeted: bool) -> torch.Tensor:
    """Per-sample loss (N,) the attacker maximises (for targeted attacks ``labels`` are the targets)."""
    if kind == "ce":
        ce = F.cross_entropy(logits, labels, reduction="none")
        return -ce if targeted else ce
    return margin_loss(logits, labels, targeted)


def _check_choice(value, choices, what):
    if value not in choices:
        raise BackdoorlabError(f"unknown {what} {value!r}; valid: {valid_names(choices)}")


def _check_positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BackdoorlabError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def _images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4:
        raise BackdoorlabError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    return to_float(images).detach()


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norm, shape (N, 1, 1, 1)."""
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


class Attack:
    """Base class: holds the model, whether the attack is targeted, the batch size and the seed.

    Subclasses implement ``_attack(x, labels_or_targets, generator) -> x_adv`` on one chunk.
    """

    def __init__(self, model: nn.Module, target: int | None = None, batch_size: int = 500, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise BackdoorlabError(f"an attack needs a torch model, got {type(model).__name__}")
        self.model = model
        self.target = None if target is None else int(target)
        self.batch_size = _check_positive_int(batch_size, "batch size")
        self.seed = int(seed)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def targets_for(self, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor | None:
        """The per-image target labels (None for an untargeted attack)."""
        if targets is not None:
            targets = torch.as_tensor(targets, dtype=torch.long)
            if targets.shape != labels.shape:
                raise BackdoorlabError(f"targets have shape {tuple(targets.shape)}, labels {tuple(labels.shape)}")
            return targets
        if self.target is None:
            return None
        return torch.full_like(labels, self.target)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Adversarial versions of ``images`` (N, C, H, W) with true ``labels`` (N,); see the module docstring."""
        x = _images(images)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(labels) != len(x):
            raise BackdoorlabError(f"{len(x)} images but {len(labels)} labels")
        tgt = self.targets_for(labels, targets)
        g = torch.Generator().manual_seed(self.seed)
        out = []
        with eval_mode(self.model), frozen(self.model):
            for i in range(0, len(x), self.batch_size):
                sl = slice(i, i + self.batch_size)
                out.append(self._attack(x[sl], labels[sl], None if tgt is None else tgt[sl], g))
        return torch.cat(out) if out else x.clone()

    def _attack(self, x, labels, targets, generator):  # pragma: no cover - abstract
        raise NotImplementedError

    def success(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Per-sample success: the target is predicted (targeted) or the label is not (untargeted)."""
        pred = logits.argmax(1)
        return pred == targets if targets is not None else pred != labels

    def config(self) -> dict:
        """The hyperparameters, JSON-ready."""
        return {"attack": type(self).__name__.lower(), "target": self.target, "seed": self.seed}


# ------------------------------------------------------------------------------------------------- FGSM / PGD


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) in the l-inf or l2 ball of radius ``eps``.

    Args:
        model: maps images in [0, 1] to logits.
        eps: radius of the ball (pixel units, images in [0, 1]); e.g. 0.3 or 8/255 (l-inf), 2.0 (l2).
        steps: gradient steps per restart.
        step_size: step length (l-inf: per pixel; l2: of the whole step); default ``2.5 * eps / steps``.
        norm: ``"linf"`` (signed-gradient steps) or ``"l2"`` (normalised-gradient steps).
        random_start: start from a uniformly random point of the ball (else from the image itself).
        restarts: independent random starts; per image the first successful one is kept (else the one with the
            highest loss).
        loss: ``"ce"`` or ``"margin"`` (see the module docstring).
        target: a class to push every image towards (targeted), or None (untargeted).
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 40, step_size: float | None = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 target: int | None = None, batch_size: int = 500, seed: int = 0):
        super().__init__(model, target, batch_size, seed)
        self.eps = parse_eps(eps)
        self.steps = _check_positive_int(steps, "number of steps")
        self.restarts = _check_positive_int(restarts, "number of restarts")
        self.step_size = 2.5 * self.eps / self.steps if step_size is None else parse_eps(step_size)
        _check_choice(norm, NORMS, "norm")
        _check_choice(loss, LOSSES, "loss")
        self.norm, self.loss, self.random_start = norm, loss, bool(random_start)

    def config(self) -> dict:
        return {"attack": "pgd" if self.steps > 1 or self.random_start else "fgsm", "eps": self.eps,
                "steps": self.steps, "step_size": self.step_size, "norm": self.norm,
                "random_start": self.random_start, "restarts": self.restarts, "loss": self.loss,
                "target": self.target, "seed": self.seed}

    def _start(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            delta = (torch.rand(x.shape, generator=g) * 2 - 1) * self.eps
        else:  # uniform in the l2 ball: a random direction, radius eps * u^(1/d)
            d = x[0].numel()
            direction = torch.randn(x.shape, generator=g)
            direction = direction / _norm(direction)
            radius = self.eps * torch.rand(len(x), generator=g).pow(1.0 / d).view(-1, 1, 1, 1)
            delta = direction * radius
        return (x + delta).clamp(0, 1)

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / _norm(delta)).clamp(max=1.0)
        return (x + delta).clamp(0, 1)

    def _run(self, x, labels, targets, g, score: bool = True):
        """One restart: returns (x_adv, per-sample loss, per-sample success); without ``score`` only x_adv."""
        y = labels if targets is None else targets
        x_adv = self._start(x, g)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = attack_loss(self.model(x_adv), y, self.loss, targets is not None)
            grad, = torch.autograd.grad(loss.sum(), x_adv)
            with torch.no_grad():
                if self.norm == "linf":
                    x_adv = x_adv + self.step_size * grad.sign()
                else:
                    x_adv = x_adv + self.step_size * grad / _norm(grad)
                x_adv = self._project(x_adv, x)
        if not score:
            return x_adv.detach()
        with torch.no_grad():
            logits = self.model(x_adv)
            return (x_adv.detach(), attack_loss(logits, y, self.loss, targets is not None),
                    self.success(logits, labels, targets))

    def _attack(self, x, labels, targets, g):
        if self.restarts == 1:
            return self._run(x, labels, targets, g, score=False)
        best, best_loss, done = self._run(x, labels, targets, g)
        for _ in range(self.restarts - 1):
            todo = (~done).nonzero()[:, 0]
            if len(todo) == 0:
                break
            adv, loss, ok = self._run(x[todo], labels[todo], None if targets is None else targets[todo], g)
            better = ok | (loss > best_loss[todo])
            idx = todo[better]
            best[idx], best_loss[idx], done[idx] = adv[better], loss[better], ok[better]
        return best


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one signed-gradient step of size ``eps`` (l-inf).

    ``norm="l2"`` gives the fast gradient method (one step of length ``eps`` along the normalised gradient).
    """

    def __init__(self, model: nn.Module, eps: float, norm: str = "linf", loss: str = "ce",
                 target: int | None = None, batch_size: int = 500, seed: int = 0):
        super().__init__(model, eps, steps=1, step_size=eps, norm=norm, random_start=False, restarts=1, loss=loss,
                         target=target, batch_size=batch_size, seed=seed)

    def config(self) -> dict:
        return {"attack": "fgsm", "eps": self.eps, "norm": self.norm, "loss": self.loss, "target": self.target}


# ------------------------------------------------------------------------------------------ adversarial patch


def _patch_transforms(n: int, image_hw, patch_side: int, scale, max_rotation: float, g: torch.Generator):
    """Sample per-image affine matrices (N, 2, 3) for F.affine_grid that place a ``patch_side``-pixel patch
    (drawn centred on an image-sized canvas) at a random scale, rotation and position fully inside the image."""
    h, w = image_hw
    s = scale[0] + torch.rand(n, generator=g) * (scale[1] - scale[0])
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(max_rotation)
    side = patch_side * s  # on-image side in pixels, before rotation
    half = side * (torch.cos(angle).abs() + torch.sin(angle).abs()) / 2  # half extent of the rotated square
    # centre in pixels, uniform over positions that keep the rotated patch inside the image
    cy = half + torch.rand(n, generator=g) * (h - 2 * half).clamp_min(0)
    cx = half + torch.rand(n, generator=g) * (w - 2 * half).clamp_min(0)
    # normalised coordinates: output pixel p maps to canvas pixel R^-1 (p - c) / s (centred canvas)
    ty, tx = (cy / h) * 2 - 1, (cx / w) * 2 - 1
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    # theta maps output grid coordinates to input (canvas) coordinates: in = A (out - t)
    a11, a12, a21, a22 = cos, sin * h / w, -sin * w / h, cos
    b1 = -(a11 * tx + a12 * ty)
    b2 = -(a21 * tx + a22 * ty)
    return torch.stack([torch.stack([a11, a12, b1], 1), torch.stack([a21, a22, b2], 1)], 1)


class AdversarialPatch(Attack):
    """A universal, targeted adversarial patch (Brown et al. 2017), trained by expectation over transformation.

    A square patch of ``size`` pixels is pasted onto images at a random position, rotation (up to
    ``max_rotation`` degrees) and scale (``scale`` range), and optimised (Adam on the patch pixels, kept in
    [0, 1]) so that the patched images are classified as ``target``, averaged over those transformations and over
    the training images of other classes.

    ``fit(images, labels)`` trains the patch; ``apply(images)`` pastes it (random transformations, seeded);
    calling the attack fits the patch on the given images if it is not fitted yet, then applies it. ``patch`` is
    the (C, size, size) tensor; :meth:`save_png` writes it as an image.
    """

    def __init__(self, model: nn.Module, target: int, size: int = 8, steps: int = 500, lr: float = 0.05,
                 scale: tuple[float, float] = (0.8, 1.2), max_rotation: float = 20.0, batch_size: int = 128,
                 seed: int = 0, progress: bool = False):
        if target is None:
            raise BackdoorlabError("the adversarial patch is a targeted attack: give a target class")
        super().__init__(model, target, batch_size, seed)
        self.size = _check_positive_int(size, "patch size")
        self.steps = _check_positive_int(steps, "number of steps")
        if lr <= 0:
            raise BackdoorlabError(f"learning rate must be > 0, got {lr}")
        if not 0 < scale[0] <= scale[1]:
            raise BackdoorlabError(f"patch scale range must satisfy 0 < low <= high, got {scale}")
        self.lr, self.scale, self.max_rotation = float(lr), (float(scale[0]), float(scale[1])), float(max_rotation)
        self.progress = progress
        self.patch: torch.Tensor | None = None
        self.history: list[float] = []

    def config(self) -> dict:
        return {"attack": "patch", "target": self.target, "size": self.size, "steps": self.steps, "lr": self.lr,
                "scale": list(self.scale), "max_rotation": self.max_rotation, "seed": self.seed}

    def _check_fits(self, x: torch.Tensor):
        h, w = x.shape[-2:]
        theta = math.radians(min(abs(self.max_rotation), 45.0))
        extent = self.size * self.scale[1] * (math.cos(theta) + math.sin(theta))  # rotated square's bounding box
        if extent > min(h, w) + 1e-9:
            raise BackdoorlabError(f"a patch of {self.size} px at scale up to {self.scale[1]}, rotated up to "
                                   f"{self.max_rotation} degrees, does not fit {h}x{w} images")

    def paste(self, x: torch.Tensor, patch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Paste ``patch`` (C, s, s) on float images ``x`` (N, C, H, W) at random transformations (differentiable
        in ``patch``)."""
        n, c, h, w = x.shape
        top, left = (h - self.size) // 2, (w - self.size) // 2
        canvas = F.pad(patch, (left, w - self.size - left, top, h - self.size - top)).expand(n, c, h, w)
        mask = F.pad(torch.ones(1, self.size, self.size), (left, w - self.size - left, top, h - self.size - top))
        theta = _patch_transforms(n, (h, w), self.size, self.scale, self.max_rotation, g)
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        placed = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = F.grid_sample(mask.expand(n, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return x * (1 - m) + placed * m

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> "AdversarialPatch":
        """Train the patch on images of classes other than the target."""
        from tqdm.auto import tqdm

        x = _images(images)
        labels = torch.as_tensor(labels, dtype=torch.long)
        self._check_fits(x)
        keep = labels != self.target
        x = x[keep]
        if len(x) == 0:
            raise BackdoorlabError("the patch needs training images of classes other than the target")
        g = torch.Generator().manual_seed(self.seed)
        patch = torch.rand(x.shape[1], self.size, self.size, generator=g).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr)
        self.history = []
        with eval_mode(self.model):
            for step in tqdm(range(self.steps), desc="patch", disable=not self.progress, leave=False):
                idx = torch.randint(len(x), (min(self.batch_size, len(x)),), generator=g)
                logits = self.model(self.paste(x[idx], patch, g))
                loss = F.cross_entropy(logits, torch.full((len(idx),), self.target, dtype=torch.long))
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
                self.history.append(loss.item())
        self.patch = patch.detach()
        return self

    def apply(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Paste the fitted patch on ``images`` at seeded random transformations."""
        if self.patch is None:
            raise BackdoorlabError("the patch is not fitted yet: call fit(images, labels) first")
        x = _images(images)
        g = torch.Generator().manual_seed(self.seed + 1 if seed is None else seed)
        with torch.no_grad():
            return torch.cat([self.paste(x[i:i + self.batch_size], self.patch, g)
                              for i in range(0, len(x), self.batch_size)]) if len(x) else x.clone()

    def __call__(self, images, labels, targets=None):
        if targets is not None:
            raise BackdoorlabError("the adversarial patch has one target class, set when it is created")
        if self.patch is None:
            self.fit(images, labels)
        return self.apply(images)

    def save_png(self, path) -> None:
        """Write the patch as a PNG image (greyscale or RGB), upscaled so that it is visible."""
        from PIL import Image

        from ..io import atomic_path

        if self.patch is None:
            raise BackdoorlabError("the patch is not fitted yet")
        arr = (self.patch.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        factor = max(1, 128 // self.size)
        img = img.resize((self.size * factor, self.size * factor), Image.NEAREST)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")


# ------------------------------------------------------------------------------------------ one-pixel attack


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
        colours = torch.from_numpy(np.clip(per[..., 2:], 0, 1)).float()
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
                p = probs(z)[:, cls].numpy()
                return p if ti is None else -p

            def done(xk, convergence=None):
                p = probs(np.asarray(xk)[:, None])[0]
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


# ------------------------------------------------------------------------------------------------- factory

ATTACKS = ("fgsm", "pgd", "pgd-l2", "patch", "one-pixel")


def make_attack(name: str, model: nn.Module, eps=None, **kwargs) -> Attack:
    """Build an attack by name (``fgsm``, ``pgd``, ``pgd-l2``, ``patch``, ``one-pixel``)."""
    _check_choice(name, ATTACKS, "evasion attack")
    if name in ("fgsm", "pgd", "pgd-l2"):
        if eps is None:
            raise BackdoorlabError(f"the {name} attack needs an epsilon (--eps)")
        if name == "fgsm":
            keep = {k: v for k, v in kwargs.items() if k in ("loss", "target", "batch_size", "seed", "norm")}
            return FGSM(model, eps, **keep)
        if name == "pgd-l2":
            kwargs["norm"] = "l2"
        return PGD(model, eps, **kwargs)
    if eps is not None:
        raise BackdoorlabError(f"the {name} attack has no epsilon; --eps applies to fgsm, pgd and pgd-l2")
    if name == "patch":
        return AdversarialPatch(model, **kwargs)
    return OnePixel(model, **kwargs)


# --------------------------------------------------------------------------------------------- measurement


def robust_accuracy(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
                    progress: bool = False, target: int | None = None) -> dict:
    """Clean and robust accuracy, and mean cross-entropy losses, of ``model`` on images ``x`` with labels ``y``.

    ``attack`` is a callable ``attack(images, labels) -> images`` (any attack object, or a defended pipeline's
    attack). Robust accuracy: the fraction of images classified correctly both as they are and after the attack
    (an image misclassified when clean counts as non-robust). ``robust_loss``: the mean cross-entropy on the
    attacked images. Returns ``{"clean_accuracy", "robust_accuracy", "clean_loss", "robust_loss", "n"}``, and
    with a ``target`` class also ``attack_success_rate``: among images of other classes, the fraction classified as
    ``target`` once attacked.
    """
    from tqdm.auto import tqdm

    n = len(y)
    if n == 0:
        raise BackdoorlabError("no images to evaluate")
    correct = clean_loss = adv_correct = adv_loss = hits = eligible = 0.0
    with eval_mode(model):
        for i in tqdm(range(0, n, batch_size), desc="attack", disable=not progress, leave=False):
            xb, yb = to_float(x[i:i + batch_size]), y[i:i + batch_size]
            with torch.no_grad():
                logits = model(xb)
            ok = logits.argmax(1) == yb
            correct += ok.sum().item()
            clean_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            xa = attack(xb, yb)
            with torch.no_grad():
                la = model(xa)
            adv_correct += (ok & (la.argmax(1) == yb)).sum().item()
            adv_loss += F.cross_entropy(la, yb, reduction="sum").item()
            if target is not None:
                keep = yb != target
                eligible += keep.sum().item()
                hits += (la.argmax(1)[keep] == target).sum().item()
    out = {"clean_accuracy": correct / n, "robust_accuracy": adv_correct / n, "clean_loss": clean_loss / n,
           "robust_loss": adv_loss / n, "n": n}
    if target is not None:
        out["attack_success_rate"] = hits / eligible if eligible else float("nan")
    return out
