"""A decoded photo to the model's input: open_clip's preprocess, done the fast way where it is the
plain CLIP one (resize the shorter side, centre crop, scale to 0..1, normalise).

The preprocess spends as long on a draft-decoded shop photo as the decoding itself (3.7 of 7.6 ms),
most of it converting and normalising each image in small float steps. Here each photo stays 8-bit
until its whole batch is converted and normalised in one go (on the GPU where there is one), with the
same float operations, so the batch equals the preprocess's to the bit (tested on the CPU).
"""

import functools
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

        steps = list(getattr(preprocess, "transforms", []))
        # prepare converts to RGB after resizing, as open_clip does: converted before, a palette or
        # transparent image would resize differently.
        if len(steps) == 5 and _is_rgb_conversion(steps[2]):
            del steps[2]
        if len(steps) != 4 or any(_is_rgb_conversion(step) for step in steps):
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
        return np.asarray(image.crop((left, top, left + self.size, top + self.size)))

    def stack(self, prepared: list[np.ndarray]):
        """A batch of prepared crops, still 8-bit (batch × size × size × 3): a quarter of the bytes
        of floats to copy to a GPU, which then normalises them itself."""
        import torch

        return torch.from_numpy(np.stack(prepared))

    def normalise(self, batch):
        """An 8-bit batch from `stack` as the model's float input (batch × 3 × size × size), computed
        on the batch's device."""
        import torch

        assert batch.dtype == torch.uint8, "an 8-bit batch from stack()"
        scale, mean, std = _constants(self.mean, self.std, str(batch.device))
        # Dividing by a tensor, not a number: CUDA would multiply by 1/255 instead, a bit off.
        batch = batch.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(scale)
        return batch.sub_(mean).div_(std)


@functools.cache
def _constants(mean: tuple[float, ...], std: tuple[float, ...], device: str):
    """255, mean and std on the device, made once: on a GPU each new one is a copy that waits."""
    import torch

    as_planes = functools.partial(torch.tensor, dtype=torch.float32, device=device)
    return as_planes(255.0), as_planes(mean).view(1, -1, 1, 1), as_planes(std).view(1, -1, 1, 1)


def _is_rgb_conversion(step) -> bool:
    """open_clip's MaybeConvertMode("RGB") (or the older _convert_to_rgb function): prepare converts."""
    return getattr(step, "mode", None) == "RGB" or getattr(step, "__name__", "") == "_convert_to_rgb"
