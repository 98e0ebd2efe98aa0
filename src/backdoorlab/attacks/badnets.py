"""BadNets (Gu, Dolan-Gavitt and Garg 2017): poison a fraction of the training set with a solid square patch,
by default 3x3 white at the bottom-right, relabelled to the target (or i -> i+1 mod K, all-to-all). The patch
may be a picture instead (``image``, ``--trigger-image``: an emoji pasted through its alpha channel)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import BackdoorlabError
from ..triggers import ImageTrigger, PatchTrigger, parse_position
from .build import TriggerConfig, register_trigger_attack

DEFAULT_SIZE = 3
DEFAULT_VALUE = 1.0


@dataclass
class BadNetsConfig(TriggerConfig):
    """The patch: see :class:`~backdoorlab.triggers.PatchTrigger` (``position``: a corner name or ROW,COL of its
    top-left pixel; ``size``: its side, 3 when None; ``value``: one pixel value or one per channel, 1.0 when
    None). With ``image``, the path of a picture, the trigger is that picture instead
    (:class:`~backdoorlab.triggers.ImageTrigger`: its alpha channel is the mask), at the same ``position`` and
    ``margin``, its longer side resized to ``size`` pixels when given; ``value`` does not apply to it."""

    size: int | None = option(None, flag="--trigger-size")
    position: str | tuple[int, int] = option("bottom-right", parse=parse_position, flag="--trigger-position")
    value: float | tuple[float, ...] | None = option(None, flag="--trigger-value")
    margin: int = 1
    image: str | None = option(None, flag="--trigger-image")

    def validate(self) -> None:
        if self.image is not None and self.value is not None:
            raise BackdoorlabError("value (--trigger-value) does not apply to a trigger image (--trigger-image): "
                                   "the image's pixels are the trigger's")

    def trigger(self):
        if self.image is not None:
            return ImageTrigger.from_file(self.image, self.size, self.position, self.margin)
        return PatchTrigger(DEFAULT_SIZE if self.size is None else self.size, self.position,
                            DEFAULT_VALUE if self.value is None else self.value, self.margin)


badnets = register_trigger_attack("badnets", BadNetsConfig,
                                  "BadNets (Gu et al. 2017): poisoned images carry a solid square patch, 3x3 white "
                                  "at the bottom-right by default, or a picture (--trigger-image).")
