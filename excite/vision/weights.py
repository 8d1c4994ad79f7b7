"""The registry of torchvision's pretrained weights for excite's models: URLs, hashes, classes and preprocessing."""
from ..errors import InvalidArgumentError
from ._imagenet_categories import IMAGENET_CATEGORIES

# ImageNet's per-channel statistics, which torchvision's presets (and every excite model) normalise with
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_RECIPE_V1 = "https://github.com/pytorch/vision/tree/main/references/classification#efficientnet-v1"
_RECIPE_V2 = "https://github.com/pytorch/vision/tree/main/references/classification#efficientnet-v2"
_RECIPE_MOBILENET = "https://github.com/pytorch/vision/tree/main/references/classification#mobilenetv3-large--small"
_PORTED = "These weights are ported from the original paper."
_NEW_RECIPE = ("These weights improve upon the results of the original paper by using a modified version of "
               "TorchVision's new training recipe.")


class ImageClassification:
    """torchvision's ImageClassification preset: resize, center crop, scale to [0, 1], normalize.

    Works on PIL images (excite's resize is Pillow's, as torchvision's PIL path).
    """

    def __init__(self, *, crop_size, resize_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation="bilinear", antialias=True):
        self.crop_size = [crop_size]
        self.resize_size = [resize_size]
        self.mean = list(mean)
        self.std = list(std)
        self.interpolation = interpolation
        self.antialias = antialias

    def __call__(self, img):
        from .transforms import functional as F

        img = F.resize(img, self.resize_size, interpolation=self.interpolation, antialias=self.antialias)
        img = F.center_crop(img, self.crop_size)
        return F.normalize(F.to_tensor(img), mean=self.mean, std=self.std)

    def __repr__(self):
        return (f"ImageClassification(\n    crop_size={self.crop_size}\n    resize_size={self.resize_size}\n"
                f"    mean={self.mean}\n    std={self.std}\n    interpolation=InterpolationMode."
                f"{self.interpolation.upper()}\n)")


class WeightsEntry:
    """One set of pretrained weights (torchvision's ``Weights``): where to get it and how to use it."""

    def __init__(self, family, name, url, preprocessing, meta):
        self.family = family
        self.name = name
        self.url = url
        self.preprocessing = preprocessing  # ImageClassification keyword arguments
        self.meta = meta

    @property
    def model_name(self):
        return self.family.model_name

    @property
    def file_name(self):
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self):
        from ..io.hub import expected_hash_prefix

        return expected_hash_prefix(self.file_name)

    @property
    def num_classes(self):
        return len(self.meta["categories"])

    def transforms(self):
        """The inference preprocessing these weights expect (call it on a PIL image)."""
        return ImageClassification(**self.preprocessing)

    def get_state_dict(self, progress=True, check_hash=True):
        """Download (once, into the cache), verify and load the state_dict."""
        from ..io.hub import load_state_dict_from_url

        return load_state_dict_from_url(self.url, progress=progress, check_hash=check_hash)

    def __repr__(self):
        return f"{self.family.name}.{self.name}"


class WeightsFamily:
    """All weights of one model, like torchvision's ``<Model>_Weights`` enum (``.DEFAULT``, ``["IMAGENET1K_V1"]``)."""

    def __init__(self, name, model_name, default):
        self.name = name
        self.model_name = model_name
        self.default_name = default
        self.entries = {}

    def add(self, entry_name, url, preprocessing, meta):
        entry = WeightsEntry(self, entry_name, url, preprocessing, meta)
        self.entries[entry_name] = entry
        return entry

    @property
    def DEFAULT(self):  # noqa: N802 (torchvision's name)
        return self.entries[self.default_name]

    def names(self):
        return ["DEFAULT"] + list(self.entries)

    def __getattr__(self, name):
        entries = self.__dict__.get("entries", {})
        if name in entries:
            return entries[name]
        raise AttributeError(f"{self.__dict__.get('name', 'WeightsFamily')} has no weights {name!r}")

    def __getitem__(self, name):
        if name == "DEFAULT":
            return self.DEFAULT
        if name not in self.entries:
            raise KeyError(name)
        return self.entries[name]

    def __iter__(self):
        return iter(self.entries.values())

    def __repr__(self):
        return f"<weights {self.name}: {', '.join(self.names())}>"


# model, family, entry, url file, crop, resize, interpolation, params, min size, acc@1, acc@5, GFLOPs, MB, recipe, docs
_TABLE = [
    ("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "IMAGENET1K_V1", "mobilenet_v3_small-047dcff4.pth",
     224, 256, "bilinear", 2542856, (1, 1), 67.668, 87.402, 0.057, 9.829, _RECIPE_MOBILENET,
     "These weights improve upon the results of the original paper by using a simple training recipe."),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth",
     224, 256, "bilinear", 5483032, (1, 1), 74.042, 91.34, 0.217, 21.114, _RECIPE_MOBILENET,
     "These weights were trained from scratch by using a simple training recipe."),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth",
     224, 232, "bilinear", 5483032, (1, 1), 75.274, 92.566, 0.217, 21.107,
     "https://github.com/pytorch/vision/issues/3995#new-recipe-with-reg-tuning", _NEW_RECIPE),
    ("efficientnet_b0", "EfficientNet_B0_Weights", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth",
     224, 256, "bicubic", 5288548, (1, 1), 77.692, 93.532, 0.386, 20.451, _RECIPE_V1, _PORTED),
    ("efficientnet_b1", "EfficientNet_B1_Weights", "IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth",
     240, 256, "bicubic", 7794184, (1, 1), 78.642, 94.186, 0.687, 30.134, _RECIPE_V1, _PORTED),
    ("efficientnet_b1", "EfficientNet_B1_Weights", "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth",
     240, 255, "bilinear", 7794184, (1, 1), 79.838, 94.934, 0.687, 30.136,
     "https://github.com/pytorch/vision/issues/3995#new-recipe-with-lr-wd-crop-tuning", _NEW_RECIPE),
    ("efficientnet_b2", "EfficientNet_B2_Weights", "IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth",
     288, 288, "bicubic", 9109994, (1, 1), 80.608, 95.31, 1.088, 35.174, _RECIPE_V1, _PORTED),
    ("efficientnet_b3", "EfficientNet_B3_Weights", "IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth",
     300, 320, "bicubic", 12233232, (1, 1), 82.008, 96.054, 1.827, 47.184, _RECIPE_V1, _PORTED),
    ("efficientnet_b4", "EfficientNet_B4_Weights", "IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth",
     380, 384, "bicubic", 19341616, (1, 1), 83.384, 96.594, 4.394, 74.489, _RECIPE_V1, _PORTED),
    ("efficientnet_b5", "EfficientNet_B5_Weights", "IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth",
     456, 456, "bicubic", 30389784, (1, 1), 83.444, 96.628, 10.266, 116.864, _RECIPE_V1, _PORTED),
    ("efficientnet_b6", "EfficientNet_B6_Weights", "IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth",
     528, 528, "bicubic", 43040704, (1, 1), 84.008, 96.916, 19.068, 165.362, _RECIPE_V1, _PORTED),
    ("efficientnet_b7", "EfficientNet_B7_Weights", "IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth",
     600, 600, "bicubic", 66347960, (1, 1), 84.122, 96.908, 37.746, 254.675, _RECIPE_V1, _PORTED),
    ("efficientnet_v2_s", "EfficientNet_V2_S_Weights", "IMAGENET1K_V1", "efficientnet_v2_s-dd5fe13b.pth",
     384, 384, "bilinear", 21458488, (33, 33), 84.228, 96.878, 8.366, 82.704, _RECIPE_V2, _NEW_RECIPE),
    ("efficientnet_v2_m", "EfficientNet_V2_M_Weights", "IMAGENET1K_V1", "efficientnet_v2_m-dc08266a.pth",
     480, 480, "bilinear", 54139356, (33, 33), 85.112, 97.156, 24.582, 208.01, _RECIPE_V2, _NEW_RECIPE),
    ("efficientnet_v2_l", "EfficientNet_V2_L_Weights", "IMAGENET1K_V1", "efficientnet_v2_l-59c71312.pth",
     480, 480, "bicubic", 118515272, (33, 33), 85.808, 97.788, 56.08, 454.573, _RECIPE_V2, _PORTED),
]
_DEFAULTS = {"mobilenet_v3_large": "IMAGENET1K_V2", "efficientnet_b1": "IMAGENET1K_V2"}
_URL_ROOT = "https://download.pytorch.org/models/"
_SPECIAL_NORMALIZATION = {"efficientnet_v2_l": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}



def _build_registry():
    registry = {}
    for (model, family_name, entry_name, file_name, crop, resize, interpolation, params, min_size, acc1, acc5,
         gflops, megabytes, recipe, docs) in _TABLE:
        if model not in registry:
            registry[model] = WeightsFamily(family_name, model, _DEFAULTS.get(model, "IMAGENET1K_V1"))
        mean, std = _SPECIAL_NORMALIZATION.get(model, (IMAGENET_MEAN, IMAGENET_STD))
        registry[model].add(
            entry_name, _URL_ROOT + file_name,
            dict(crop_size=crop, resize_size=resize, interpolation=interpolation, mean=mean, std=std),
            dict(categories=IMAGENET_CATEGORIES, num_params=params, min_size=min_size, recipe=recipe,
                 _metrics={"ImageNet-1K": {"acc@1": acc1, "acc@5": acc5}}, _ops=gflops, _file_size=megabytes,
                 _docs=docs))
    return registry


REGISTRY = _build_registry()
# MobileNet_V3_Small_Weights, EfficientNet_B0_Weights, ...: the names torchvision gives them
globals().update({family.name: family for family in REGISTRY.values()})


def get_model_weights(name):
    """The WeightsFamily of model ``name`` (torchvision's ``get_model_weights``)."""
    if name not in REGISTRY:
        raise InvalidArgumentError(f"no pretrained weights are registered for model {name!r}; models with "
                                   f"weights: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get_weight(name):
    """The entry called ``"<Family>.<ENTRY>"``, e.g. ``"MobileNet_V3_Small_Weights.IMAGENET1K_V1"``."""
    family_name, _, entry_name = str(name).partition(".")
    for family in REGISTRY.values():
        if family.name == family_name:
            return resolve(family.model_name, entry_name)
    raise InvalidArgumentError(f"unknown weights {name!r}; expected '<Family>.<ENTRY>' with a family among "
                               f"{', '.join(f.name for f in REGISTRY.values())}")


def resolve(model_name, weights):
    """The WeightsEntry ``weights`` names for ``model_name``: None for None, else an entry or an error.

    ``weights`` may be ``"DEFAULT"``, an entry name such as ``"IMAGENET1K_V1"`` (optionally
    prefixed with the family, ``"MobileNet_V3_Small_Weights.IMAGENET1K_V1"``), or an entry itself.
    """
    if weights is None:
        return None
    family = get_model_weights(model_name)
    if isinstance(weights, WeightsEntry):
        if weights.family is not family:
            raise InvalidArgumentError(f"weights {weights!r} belong to {weights.model_name}, not {model_name}")
        return weights
    if isinstance(weights, str):
        name = weights[len(family.name) + 1:] if weights.startswith(family.name + ".") else weights
        if name in family.names():
            return family[name]
    raise InvalidArgumentError(f"unknown weights {weights!r} for {model_name}; valid: "
                               f"{', '.join(family.names())} (or None)")


def load_pretrained(model, entry, progress=True):
    """Download (once), verify and load ``entry``'s weights into ``model``; returns the model."""
    if not isinstance(entry, WeightsEntry):
        raise InvalidArgumentError(f"expected a WeightsEntry (see resolve), got {type(entry).__name__}")
    model.load_state_dict(entry.get_state_dict(progress=progress))
    return model
