"""torchvision-style image transforms: PIL geometry first, then ToTensor and Normalize."""
from . import functional
from .functional import InterpolationMode
from .transforms import (CenterCrop, Compose, Grayscale, Lambda, Normalize, PILToTensor, RandomHorizontalFlip,
                         RandomResizedCrop, RandomVerticalFlip, Resize, ToTensor)

__all__ = ["Compose", "ToTensor", "PILToTensor", "Normalize", "Resize", "CenterCrop", "RandomResizedCrop",
           "RandomHorizontalFlip", "RandomVerticalFlip", "Grayscale", "Lambda", "InterpolationMode", "functional"]
