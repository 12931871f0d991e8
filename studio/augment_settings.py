"""The image augmentation settings as schema fields, readable without torch.

`studio.data.augment.Augment` (the transforms, which need torch) and TrainConfig's `augment_*`
settings (read by the CLI, which must not import torch) are both built from these fields, so the
two agree on defaults, bounds, help and every validation message.

    >>> AUGMENT_FIELDS[1].problem(100)
    'crop_padding=100 is out of range; expected crop_padding <= 64'
    >>> CONFIG_NAMES["rotation_degrees"]
    'augment_rotation'
"""

from __future__ import annotations

from studio.schema import Field

_G = {"group": "augmentation"}
AUGMENT_FIELDS: tuple[Field, ...] = (
    Field("crop", "bool", False, "Random crop of the image's size after zero padding.", **_G),
    Field("crop_padding", "int", 4, "Pixels of zero padding around the image before the crop.", min=0, max=64,
          advanced=True, **_G),
    Field("flip", "bool", False, "Random horizontal flip (leave off for digits and text).", **_G),
    Field("flip_prob", "float", 0.5, "Chance of a flip.", min=0.0, max=1.0, advanced=True, **_G),
    Field("affine", "bool", False, "Small random rotation, zoom and shift.", **_G),
    Field("rotation_degrees", "float", 10.0, "Rotation uniform in [-d, d] degrees.", min=0.0, max=180.0,
          advanced=True, **_G),
    Field("scale", "float", 0.1, "Zoom uniform in [1 - s, 1 + s].", min=0.0, max=1.0, max_exclusive=True,
          advanced=True, **_G),
    Field("translate", "float", 0.0, "Shift uniform in [-t, t] as a fraction of the image size.", min=0.0, max=0.5,
          advanced=True, **_G),
    Field("noise", "bool", False, "Add Gaussian noise to pixel values (images in [0, 1]).", **_G),
    Field("noise_std", "float", 0.05, "Standard deviation of the noise.", min=0.0, max=1.0, advanced=True, **_G),
)
# Each setting's name in a TrainConfig document (saved config.json files keep these keys).
CONFIG_NAMES = {"crop": "augment_crop", "crop_padding": "augment_crop_padding", "flip": "augment_flip",
                "flip_prob": "augment_flip_prob", "affine": "augment_affine", "rotation_degrees": "augment_rotation",
                "scale": "augment_scale", "translate": "augment_translate", "noise": "augment_noise",
                "noise_std": "augment_noise_std"}


def config_fields() -> tuple[Field, ...]:
    """The augmentation fields under their TrainConfig names (augment_flip, augment_rotation, ...)."""
    return tuple(f.renamed(CONFIG_NAMES[f.name]) for f in AUGMENT_FIELDS)
