"""Datasets: ImageFolder (a folder per class) and the bundled UCI handwritten Digits."""
from .digits import Digits
from .folder import IMG_EXTENSIONS, DatasetFolder, ImageFolder, default_loader, pil_loader

__all__ = ["Digits", "ImageFolder", "DatasetFolder", "IMG_EXTENSIONS", "default_loader", "pil_loader"]
