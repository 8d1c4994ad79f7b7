"""ImageFolder / DatasetFolder: one sub-folder per class, images read with Pillow (torchvision's layout)."""
import os

from PIL import Image, UnidentifiedImageError

from ...data.dataset import Dataset
from ...errors import ExciteError, InvalidArgumentError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def has_file_allowed_extension(filename, extensions):
    return filename.lower().endswith(extensions if isinstance(extensions, str) else tuple(extensions))


def is_image_file(filename):
    return has_file_allowed_extension(filename, IMG_EXTENSIONS)


def pil_loader(path):
    """Open ``path`` as an RGB PIL image; an unreadable file raises ExciteError naming it."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ExciteError(f"cannot read image {path}: {e}") from e


default_loader = pil_loader


def find_classes(directory):
    """Class names (sorted sub-folder names) and their indices."""
    if not os.path.isdir(directory):
        raise InvalidArgumentError(f"dataset root {directory} is not a directory")
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise InvalidArgumentError(
            f"couldn't find any class folder in {directory}: expected one sub-folder per class holding its images")
    return classes, {name: i for i, name in enumerate(classes)}


def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
    """(path, class_index) for every valid file, classes in sorted order, files sorted within each."""
    if not class_to_idx:
        raise InvalidArgumentError("'class_to_idx' must have at least one entry to collect any samples")
    if (extensions is None) == (is_valid_file is None):
        raise InvalidArgumentError("exactly one of extensions and is_valid_file must be given")
    if extensions is not None:
        def is_valid_file(path):
            return has_file_allowed_extension(path, extensions)
    samples, found = [], set()
    for class_name in sorted(class_to_idx):
        class_dir = os.path.join(directory, class_name)
        if not os.path.isdir(class_dir):
            continue
        for root, _, fnames in sorted(os.walk(class_dir, followlinks=True)):
            for fname in sorted(fnames):
                path = os.path.join(root, fname)
                if is_valid_file(path):
                    samples.append((path, class_to_idx[class_name]))
                    found.add(class_name)
    empty = set(class_to_idx) - found
    if empty and not allow_empty:
        message = f"found no valid file for the classes {', '.join(sorted(empty))} in {directory}"
        if extensions is not None:
            exts = extensions if isinstance(extensions, str) else ", ".join(extensions)
            message += f"; supported extensions are: {exts}"
        raise InvalidArgumentError(message)
    return samples


class DatasetFolder(Dataset):
    """Samples from ``root/<class>/**/<file>``, loaded with ``loader``, as torchvision's DatasetFolder.

    Attributes: ``classes`` (sorted folder names), ``class_to_idx``, ``samples`` (path, index)
    pairs, ``targets``.
    """

    def __init__(self, root, loader, extensions=None, transform=None, target_transform=None, is_valid_file=None,
                 allow_empty=False):
        self.root = os.path.expanduser(os.fspath(root))
        self.transform = transform
        self.target_transform = target_transform
        classes, class_to_idx = self.find_classes(self.root)
        samples = self.make_dataset(self.root, class_to_idx, extensions, is_valid_file, allow_empty)
        self.loader = loader
        self.extensions = extensions
        self.classes = classes
        self.class_to_idx = class_to_idx
        self.samples = samples
        self.targets = [s[1] for s in samples]

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return make_dataset(directory, class_to_idx, extensions=extensions, is_valid_file=is_valid_file,
                            allow_empty=allow_empty)

    def find_classes(self, directory):
        return find_classes(directory)

    def __getitem__(self, index):
        path, target = self.samples[index]
        sample = self.loader(path)
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __len__(self):
        return len(self.samples)

    def __repr__(self):
        lines = [f"Dataset {self.__class__.__name__}", f"    Number of datapoints: {len(self)}",
                 f"    Root location: {self.root}"]
        if self.transform is not None:
            lines += ["    " + line for line in repr(self.transform).splitlines()]
        return "\n".join(lines)


class ImageFolder(DatasetFolder):
    """Images in ``root/<class>/...`` (jpg, png, bmp, ... via Pillow, as RGB), labelled by sorted folder order."""

    def __init__(self, root, transform=None, target_transform=None, loader=default_loader, is_valid_file=None,
                 allow_empty=False):
        super().__init__(root, loader, IMG_EXTENSIONS if is_valid_file is None else None, transform=transform,
                         target_transform=target_transform, is_valid_file=is_valid_file, allow_empty=allow_empty)
        self.imgs = self.samples
