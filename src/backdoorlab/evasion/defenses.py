"""Defenses against evasion attacks, and the attacks that evaluate them honestly.

- **PGD adversarial training** (Madry et al. 2018): the core training loop (``train.train_model`` -> ``train.fit``)
  with a batch hook that replaces each training batch by PGD adversarial examples against the current model.
- **JPEG compression** of the input (:class:`JpegDefense`), implemented in torch (8x8 block DCT, quantisation
  with the standard tables scaled by ``quality``, rounding). Rounding has a zero derivative almost everywhere,
  so a plain gradient attack through it sees no gradient at all: the defense *looks* robust. BPDA (Athalye et
  al. 2018) keeps the exact JPEG on the forward pass and uses the identity on the backward pass
  (``bpda=True``), which gives the attacker a useful gradient again.
- **Defensive distillation** (Papernot et al. 2016): a teacher trained with its logits divided by a temperature
  T, a student trained on the teacher's soft labels at T, deployed at temperature 1. Its logits are huge, the
  softmax saturates, and cross-entropy gradients underflow to zero; an attack on the logit margin is not fooled.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackdoorlabError, valid_names
from ..train import TrainConfig, fit, seed_everything, train_model
from .base import NORMS, parse_eps
from .pgd import PGD

# ------------------------------------------------------------------------------------ adversarial training


@dataclass
class AdvTrainConfig:
    """PGD adversarial training: each batch is replaced by PGD examples (radius ``eps``, ``steps`` steps of
    ``step_size``, random start). ``warmup`` is the fraction of training steps over which eps grows linearly from
    0 to ``eps`` (0: full eps from the start). ``clean_fraction`` of each batch stays clean (0: Madry et al.)."""

    eps: float = 0.3
    steps: int = 10
    step_size: float | None = None  # default 2.5 * eps / steps
    norm: str = "linf"
    warmup: float = 0.0
    clean_fraction: float = 0.0
    loss: str = "ce"

    def __post_init__(self):
        self.eps = parse_eps(self.eps)
        if self.norm not in NORMS:
            raise BackdoorlabError(f"unknown norm {self.norm!r}; valid: {valid_names(NORMS)}")
        if not 0 <= self.warmup < 1:
            raise BackdoorlabError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if not 0 <= self.clean_fraction < 1:
            raise BackdoorlabError(f"clean fraction must lie in [0, 1), got {self.clean_fraction}")
        if self.steps < 1:
            raise BackdoorlabError(f"PGD steps must be >= 1, got {self.steps}")
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / self.steps
        self.step_size = parse_eps(self.step_size)

    def to_dict(self) -> dict:
        return asdict(self)


class AdversarialBatches:
    """Batch hook for ``train.fit``: ``hook(images, labels, indices) -> (adversarial images, labels)``.

    The attack runs with the model in eval mode (batch-norm running statistics, no dropout), then the model is
    put back in training mode for the update. The random starts are seeded per step."""

    def __init__(self, model: nn.Module, cfg: AdvTrainConfig, total_steps: int, seed: int = 0):
        self.model, self.cfg, self.total, self.seed = model, cfg, max(1, total_steps), seed
        self.step = 0

    def eps_now(self) -> float:
        if self.cfg.warmup <= 0:
            return self.cfg.eps
        return self.cfg.eps * min(1.0, (self.step + 1) / (self.cfg.warmup * self.total))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, indices=None):
        eps = self.eps_now()
        scale = eps / self.cfg.eps
        attack = PGD(self.model, eps, steps=self.cfg.steps, step_size=self.cfg.step_size * scale, norm=self.cfg.norm,
                     random_start=True, loss=self.cfg.loss, batch_size=len(labels) + 1, seed=self.seed + self.step)
        n_adv = len(labels) - int(round(self.cfg.clean_fraction * len(labels)))
        out = images.clone()
        if n_adv > 0:
            out[:n_adv] = attack(images[:n_adv], labels[:n_adv])  # restores training mode afterwards
        self.step += 1
        return out, labels


def total_steps(n: int, cfg: TrainConfig) -> int:
    """The number of optimizer steps ``train.fit`` takes on ``n`` images with ``cfg``."""
    steps_per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
    return cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch


def adversarial_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                         adv: AdvTrainConfig, *, progress: bool = True, desc: str = "adv-train") -> dict:
    """Train ``model`` in place on PGD adversarial examples of uint8 images ``x`` (N, C, H, W), labels ``y``.

    Returns the training history of ``train.fit`` (loss and accuracy on the adversarial batches)."""
    hook = AdversarialBatches(model, adv, total_steps(len(y), cfg), seed=cfg.seed)
    return train_model(model, x, y, cfg, progress=progress, desc=desc, batch_hook=hook)


# ------------------------------------------------------------------------------------------------------ JPEG

# The standard JPEG quantisation tables (ITU-T T.81, Annex K), luminance and chrominance.
_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
_CHROMA = torch.full((8, 8), 99.0)
_CHROMA[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]],
                               dtype=torch.float32)


def quant_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The (8, 8) quantisation table at ``quality`` (1..100), scaled as libjpeg does."""
    q = int(quality)
    scale = 5000 / q if q < 50 else 200 - 2 * q
    base = _CHROMA if chroma else _LUMA
    return ((base * scale + 50) // 100).clamp(1, 255)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m  # orthonormal DCT-II: coefficients = M @ block @ M.T


_DCT = _dct_matrix()


def jpeg_compress(images: torch.Tensor, quality: int = 75, bpda: bool = False) -> torch.Tensor:
    """JPEG-compress and decompress float images (N, C, H, W) in [0, 1], in torch.

    Pixels are quantised to 8 bits, converted to YCbCr (colour images; no chroma subsampling), shifted by -128,
    transformed by an 8x8 block DCT (images padded to a multiple of 8 by edge replication), divided by the
    quality-scaled standard tables, rounded, and decoded back. With ``bpda=False`` autograd differentiates the
    transform exactly: the roundings have a zero derivative almost everywhere, so the gradient is zero. With
    ``bpda=True`` the forward pass is the same but the backward pass is the identity (BPDA with g(x) = x):
    ``x + (jpeg(x) - x).detach()``."""
    if not 1 <= int(quality) <= 100:
        raise BackdoorlabError(f"JPEG quality must lie in 1..100, got {quality}")
    if bpda:
        return images + (_jpeg(images.detach(), int(quality)) - images).detach()
    return _jpeg(images, int(quality))


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    n, c, h, w = images.shape
    x = torch.round(images.clamp(0, 1) * 255)
    if c == 3:
        r, g, b = x[:, 0], x[:, 1], x[:, 2]
        x = torch.stack([0.299 * r + 0.587 * g + 0.114 * b,
                         -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                         0.5 * r - 0.418688 * g - 0.081312 * b + 128], 1)
    elif c != 1:
        raise BackdoorlabError(f"JPEG needs 1 or 3 channels, got {c}")
    ph, pw = (-h) % 8, (-w) % 8
    x = F.pad(x - 128, (0, pw, 0, ph), mode="replicate")
    hh, ww = x.shape[-2:]
    blocks = x.reshape(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (N, C, bh, bw, 8, 8)
    dct = _DCT.to(x)  # the constant tables meet the images on their device
    coef = dct @ blocks @ dct.T
    tables = torch.stack([quant_table(quality, chroma=(i > 0)) for i in range(c)]).view(1, c, 1, 1, 8, 8).to(x)
    coef = torch.round(coef / tables) * tables
    blocks = dct.T @ coef @ dct
    x = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)[..., :h, :w] + 128
    if c == 3:
        yy, cb, cr = x[:, 0], x[:, 1] - 128, x[:, 2] - 128
        x = torch.stack([yy + 1.402 * cr, yy - 0.344136 * cb - 0.714136 * cr, yy + 1.772 * cb], 1)
    return torch.round(x.clamp(0, 255)) / 255


def jpeg_pillow(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG round trip with Pillow's codec (libjpeg, 4:2:0 chroma subsampling for colour); no gradient."""
    import io

    import numpy as np
    from PIL import Image

    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out.append(np.asarray(Image.open(buf)).reshape(img.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).to(images.device)


class JpegDefense(nn.Module):
    """``model(jpeg(x))``: a classifier behind JPEG compression at ``quality``.

    The forward pass is the same in both modes. ``bpda=False``: gradients flow through the exact transform
    (what a naive attacker differentiates); ``bpda=True``: the transform's backward pass is the identity, the
    adaptive attack of Athalye et al. Toggle with :meth:`attackable`."""

    def __init__(self, model: nn.Module, quality: int = 75, bpda: bool = False):
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise BackdoorlabError(f"JPEG quality must lie in 1..100, got {quality}")
        self.model, self.quality, self.bpda = model, int(quality), bool(bpda)

    def attackable(self, bpda: bool) -> "JpegDefense":
        """The same defended model (shared weights) with the given backward pass."""
        return JpegDefense(self.model, self.quality, bpda)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(jpeg_compress(x, self.quality, self.bpda))


# ------------------------------------------------------------------------------------- defensive distillation


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft labels ``soft`` (N, K), mean over the batch."""
    return -(soft * F.log_softmax(logits, 1)).sum(1).mean()


def defensive_distillation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                           temperature: float = 100.0, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Papernot et al. 2016: train ``model`` as a teacher with softmax at ``temperature`` T, then a fresh copy of
    it (same initialisation) as a student on the teacher's soft labels at T; return (student, its history).

    Both losses are multiplied by T, so that their gradient with respect to the raw logits has the scale of
    ordinary cross-entropy (without it, training at T = 100 barely moves with the usual learning rates). The
    student is deployed at temperature 1 (plain logits), i.e. with logits about T times larger than a normally
    trained model's."""
    if temperature <= 0:
        raise BackdoorlabError(f"distillation temperature must be > 0, got {temperature}")
    student = copy.deepcopy(model)
    teacher = model
    g = seed_everything(cfg.seed)
    teacher.train()

    def teacher_loss(xb, yb):
        logits = teacher(xb) / temperature
        return F.cross_entropy(logits, yb) * temperature, logits

    fit(teacher.parameters(), teacher_loss, x, y, cfg, progress=progress, desc="teacher (T)", generator=g)
    teacher.eval()
    g = seed_everything(cfg.seed + 1)
    student.train()

    def student_loss(xb, yb):
        with torch.no_grad():
            soft = F.softmax(teacher(xb) / temperature, 1)
        logits = student(xb) / temperature
        return soft_cross_entropy(logits, soft) * temperature, logits

    history = fit(student.parameters(), student_loss, x, y, cfg, progress=progress, desc="student (T)", generator=g)
    return student.eval(), history
