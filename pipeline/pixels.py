"""A decoded photo to the model's input: open_clip's preprocess, done the fast way where it is the
plain CLIP one (resize the shorter side, centre crop, scale to 0..1, normalise).

The preprocess spends as long on a draft-decoded shop photo as the decoding itself (3.7 of 7.6 ms),
most of it converting and normalising each image in small float steps. Here each photo stays 8-bit
until its whole batch is converted and normalised in one go (on the GPU where there is one), with the
same float operations, so the batch equals the preprocess's to the bit (tested).
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Recipe:
    size: int
    resample: Image.Resampling
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, preprocess) -> "Recipe | None":
        """The recipe of a torchvision Compose that does exactly this, else None."""
        from torchvision import transforms as T

        steps = [step for step in getattr(preprocess, "transforms", []) if not _is_rgb_conversion(step)]
        if len(steps) != 4:
            return None
        resize, crop, to_tensor, normalize = steps
        if not (
            type(resize) is T.Resize
            and type(crop) is T.CenterCrop
            and isinstance(to_tensor, T.ToTensor)
            and type(normalize) is T.Normalize
        ):
            return None
        size = resize.size if isinstance(resize.size, int) else list(resize.size)
        size = size[0] if isinstance(size, list) and len(size) == 1 else size
        if (
            not isinstance(size, int)
            or resize.max_size is not None
            or resize.antialias is False
            or resize.interpolation.value not in RESAMPLING
            or list(crop.size) != [size, size]
            or normalize.inplace
        ):
            return None
        return cls(size, RESAMPLING[resize.interpolation.value], tuple(normalize.mean), tuple(normalize.std))

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The centre crop at the model's size, as 8-bit RGB (height × width × 3)."""
        width, height = image.size
        # torchvision's arithmetic, so the crop lands on the very same pixels.
        if width <= height:
            resized = (self.size, int(self.size * height / width))
        else:
            resized = (int(self.size * width / height), self.size)
        left = round((resized[0] - self.size) / 2.0)
        top = round((resized[1] - self.size) / 2.0)
        if resized != image.size:
            image = image.resize(resized, self.resample)
        if image.mode != "RGB":  # after resizing, as the preprocess does (a palette image resizes unfiltered)
            image = image.convert("RGB")
        # Resampling only the crop (resize's box) would be faster but rounds differently.
        return np.asarray(image)[top : top + self.size, left : left + self.size]

    def stack(self, prepared: list[np.ndarray]):
        """A batch of prepared crops, still 8-bit (batch × size × size × 3): a quarter of the bytes
        of floats to copy to a GPU, which then normalises them itself."""
        import torch

        return torch.from_numpy(np.stack(prepared))

    def normalise(self, batch):
        """An 8-bit batch from `stack` as the model's float input (batch × 3 × size × size), computed
        on the batch's device."""
        import torch

        batch = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255)
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        return batch.sub_(mean).div_(std)


def _is_rgb_conversion(step) -> bool:
    """open_clip's MaybeConvertMode("RGB") (or the older _convert_to_rgb function): prepare converts."""
    return getattr(step, "mode", None) == "RGB" or getattr(step, "__name__", "") == "_convert_to_rgb"
