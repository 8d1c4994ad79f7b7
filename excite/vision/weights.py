"""The registry of torchvision's pretrained weights for excite's models: URLs, hashes, classes and preprocessing."""
import dataclasses
import enum
import functools
from typing import Callable

from ..errors import InvalidArgumentError
from ._imagenet_categories import IMAGENET_CATEGORIES

# ImageNet's per-channel statistics, which torchvision's presets (and every excite model) normalise with
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_RECIPE_V1 = "https://github.com/pytorch/vision/tree/main/references/classification#efficientnet-v1"
_RECIPE_V2 = "https://github.com/pytorch/vision/tree/main/references/classification#efficientnet-v2"
_RECIPE_MOBILENET = "https://github.com/pytorch/vision/tree/main/references/classification#mobilenetv3-large--small"
_PORTED = "These weights are ported from the original paper."
_RECIPE_REGNET = "https://github.com/pytorch/vision/tree/main/references/classification#{}-models"
_RECIPE_NEW = "https://github.com/pytorch/vision/issues/3995#new-recipe"
_RECIPE_SWAG = "https://github.com/facebookresearch/SWAG"
_RECIPE_SWAG_LINEAR = "https://github.com/pytorch/vision/pull/5793"
_SWAG_LICENSE = "https://github.com/facebookresearch/SWAG/blob/main/LICENSE"
_SIMPLE_RECIPE = "These weights reproduce closely the results of the paper using a simple training recipe."
_SWAG_E2E = ("These weights are learnt via transfer learning by end-to-end fine-tuning the original SWAG weights on "
             "ImageNet-1K data.")
_SWAG_LINEAR = ("These weights are composed of the original frozen SWAG trunk weights and a linear classifier learnt "
                "on top of them trained on ImageNet-1K data.")
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


@dataclasses.dataclass(eq=False)
class Weights:
    """One set of pretrained weights, as torchvision's ``Weights``: where it is, how to prepare input, what it is.

    ``transforms`` is a constructor (a ``functools.partial`` of ImageClassification), called as
    ``weights.transforms()``. Equality is identity, so ``DEFAULT`` is an alias of the entry it names.
    """

    url: str
    transforms: Callable
    meta: dict


class WeightsEnum(enum.Enum):
    """The parent of every ``<Model>_Weights`` enum (torchvision's ``WeightsEnum``).

    A member (``EfficientNet_B0_Weights.IMAGENET1K_V1``, or the alias ``.DEFAULT``) has ``.url``,
    ``.transforms()``, ``.meta`` and ``.get_state_dict()``, as in torchvision. The enums are generated from
    the table below, one per model, so a row added there gets its enum member with no other code.
    """

    @classmethod
    def verify(cls, obj):
        """``obj`` as a member of this enum: None, a member, or its name (``"DEFAULT"``, ``"<Enum>.IMAGENET1K_V1"``)."""
        if obj is None:
            return None
        if isinstance(obj, str):
            name = obj[len(cls.__name__) + 1:] if obj.startswith(cls.__name__ + ".") else obj
            if name in cls.__members__:
                return cls[name]
            raise InvalidArgumentError(f"unknown weights {obj!r} for {cls._model_name}; valid: "
                                       f"{', '.join(cls.names())} (or None)")
        if not isinstance(obj, cls):
            raise InvalidArgumentError(f"weights {obj!r} belong to "
                                       f"{getattr(obj, 'model_name', type(obj).__name__)}, not {cls._model_name}")
        return obj

    @classmethod
    def names(cls):
        """``DEFAULT`` and the entries' names, as ``--weights`` accepts them."""
        return ["DEFAULT"] + [member.name for member in cls]

    @property
    def url(self):
        return self.value.url

    @property
    def transforms(self):
        return self.value.transforms

    @property
    def meta(self):
        return self.value.meta

    @property
    def family(self):
        return type(self)

    @property
    def model_name(self):
        return type(self)._model_name

    @property
    def preprocessing(self):
        """The keyword arguments of ``transforms()`` (crop_size, resize_size, interpolation, mean, std)."""
        return dict(self.value.transforms.keywords)

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

    def get_state_dict(self, progress=True, check_hash=True):
        """Download (once, into the cache), verify and load the state_dict."""
        from ..io.hub import load_state_dict_from_url

        return load_state_dict_from_url(self.url, progress=progress, check_hash=check_hash)

    def __repr__(self):
        return f"{type(self).__name__}.{self._name_}"

    def __reduce_ex__(self, protocol):
        # by name: the default (by value) would look up an unpickled copy of the Weights, equal only to itself
        return get_weight, (repr(self),)


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
    ("regnet_y_400mf", "RegNet_Y_400MF_Weights", "IMAGENET1K_V1", "regnet_y_400mf-c65dace8.pth",
     224, 256, "bilinear", 4344144, (1, 1), 74.046, 91.716, 0.402, 16.806, _RECIPE_REGNET.format("small"),
     _SIMPLE_RECIPE),
    ("regnet_y_400mf", "RegNet_Y_400MF_Weights", "IMAGENET1K_V2", "regnet_y_400mf-e6988f5f.pth",
     224, 232, "bilinear", 4344144, (1, 1), 75.804, 92.742, 0.402, 16.806, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_800mf", "RegNet_Y_800MF_Weights", "IMAGENET1K_V1", "regnet_y_800mf-1b27b58c.pth",
     224, 256, "bilinear", 6432512, (1, 1), 76.42, 93.136, 0.834, 24.774, _RECIPE_REGNET.format("small"),
     _SIMPLE_RECIPE),
    ("regnet_y_800mf", "RegNet_Y_800MF_Weights", "IMAGENET1K_V2", "regnet_y_800mf-58fc7688.pth",
     224, 232, "bilinear", 6432512, (1, 1), 78.828, 94.502, 0.834, 24.774, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_1_6gf", "RegNet_Y_1_6GF_Weights", "IMAGENET1K_V1", "regnet_y_1_6gf-b11a554e.pth",
     224, 256, "bilinear", 11202430, (1, 1), 77.95, 93.966, 1.612, 43.152, _RECIPE_REGNET.format("small"),
     _SIMPLE_RECIPE),
    ("regnet_y_1_6gf", "RegNet_Y_1_6GF_Weights", "IMAGENET1K_V2", "regnet_y_1_6gf-0d7bc02a.pth",
     224, 232, "bilinear", 11202430, (1, 1), 80.876, 95.444, 1.612, 43.152, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_3_2gf", "RegNet_Y_3_2GF_Weights", "IMAGENET1K_V1", "regnet_y_3_2gf-b5a9779c.pth",
     224, 256, "bilinear", 19436338, (1, 1), 78.948, 94.576, 3.176, 74.567, _RECIPE_REGNET.format("medium"),
     _SIMPLE_RECIPE),
    ("regnet_y_3_2gf", "RegNet_Y_3_2GF_Weights", "IMAGENET1K_V2", "regnet_y_3_2gf-9180c971.pth",
     224, 232, "bilinear", 19436338, (1, 1), 81.982, 95.972, 3.176, 74.567, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_8gf", "RegNet_Y_8GF_Weights", "IMAGENET1K_V1", "regnet_y_8gf-d0d0e4a8.pth",
     224, 256, "bilinear", 39381472, (1, 1), 80.032, 95.048, 8.473, 150.701, _RECIPE_REGNET.format("medium"),
     _SIMPLE_RECIPE),
    ("regnet_y_8gf", "RegNet_Y_8GF_Weights", "IMAGENET1K_V2", "regnet_y_8gf-dc2b1b54.pth",
     224, 232, "bilinear", 39381472, (1, 1), 82.828, 96.33, 8.473, 150.701, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_16gf", "RegNet_Y_16GF_Weights", "IMAGENET1K_V1", "regnet_y_16gf-9e6ed7dd.pth",
     224, 256, "bilinear", 83590140, (1, 1), 80.424, 95.24, 15.912, 319.49, _RECIPE_REGNET.format("large"),
     _SIMPLE_RECIPE),
    ("regnet_y_16gf", "RegNet_Y_16GF_Weights", "IMAGENET1K_V2", "regnet_y_16gf-3e4a00f9.pth",
     224, 232, "bilinear", 83590140, (1, 1), 82.886, 96.328, 15.912, 319.49, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_16gf", "RegNet_Y_16GF_Weights", "IMAGENET1K_SWAG_E2E_V1", "regnet_y_16gf_swag-43afe44d.pth",
     384, 384, "bicubic", 83590140, (1, 1), 86.012, 98.054, 46.735, 319.49, _RECIPE_SWAG, _SWAG_E2E),
    ("regnet_y_16gf", "RegNet_Y_16GF_Weights", "IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_16gf_lc_swag-f3ec0043.pth",
     224, 224, "bicubic", 83590140, (1, 1), 83.976, 97.244, 15.912, 319.49, _RECIPE_SWAG_LINEAR, _SWAG_LINEAR),
    ("regnet_y_32gf", "RegNet_Y_32GF_Weights", "IMAGENET1K_V1", "regnet_y_32gf-4dee3f7a.pth",
     224, 256, "bilinear", 145046770, (1, 1), 80.878, 95.34, 32.28, 554.076, _RECIPE_REGNET.format("large"),
     _SIMPLE_RECIPE),
    ("regnet_y_32gf", "RegNet_Y_32GF_Weights", "IMAGENET1K_V2", "regnet_y_32gf-8db6d4b5.pth",
     224, 232, "bilinear", 145046770, (1, 1), 83.368, 96.498, 32.28, 554.076, _RECIPE_NEW, _NEW_RECIPE),
    ("regnet_y_32gf", "RegNet_Y_32GF_Weights", "IMAGENET1K_SWAG_E2E_V1", "regnet_y_32gf_swag-04fdfa75.pth",
     384, 384, "bicubic", 145046770, (1, 1), 86.838, 98.362, 94.826, 554.076, _RECIPE_SWAG, _SWAG_E2E),
    ("regnet_y_32gf", "RegNet_Y_32GF_Weights", "IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_32gf_lc_swag-e1583746.pth",
     224, 224, "bicubic", 145046770, (1, 1), 84.622, 97.48, 32.28, 554.076, _RECIPE_SWAG_LINEAR, _SWAG_LINEAR),
    ("regnet_y_128gf", "RegNet_Y_128GF_Weights", "IMAGENET1K_SWAG_E2E_V1", "regnet_y_128gf_swag-c8ce3e52.pth",
     384, 384, "bicubic", 644812894, (1, 1), 88.228, 98.682, 374.57, 2461.564, _RECIPE_SWAG, _SWAG_E2E),
    ("regnet_y_128gf", "RegNet_Y_128GF_Weights", "IMAGENET1K_SWAG_LINEAR_V1", "regnet_y_128gf_lc_swag-cbe8ce12.pth",
     224, 224, "bicubic", 644812894, (1, 1), 86.068, 97.844, 127.518, 2461.564, _RECIPE_SWAG_LINEAR, _SWAG_LINEAR),
    ("maxvit_t", "MaxVit_T_Weights", "IMAGENET1K_V1", "maxvit_t-bc5ab103.pth",
     224, 224, "bicubic", 30919624, (224, 224), 83.7, 96.722, 5.558, 118.769,
     "https://github.com/pytorch/vision/tree/main/references/classification#maxvit",
     "These weights reproduce closely the results of the paper using a similar training recipe. They were trained "
     "with a BatchNorm2D momentum of 0.99 instead of the more correct 0.01."),
]
_DEFAULTS = {"mobilenet_v3_large": "IMAGENET1K_V2", "efficientnet_b1": "IMAGENET1K_V2",
             **{f"regnet_y_{size}": "IMAGENET1K_V2"
                for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")},
             "regnet_y_128gf": "IMAGENET1K_SWAG_E2E_V1"}
_URL_ROOT = "https://download.pytorch.org/models/"
_SPECIAL_NORMALIZATION = {"efficientnet_v2_l": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}



def _build_registry():
    """{model name: its generated ``<Model>_Weights`` enum}, from ``_TABLE``."""
    rows = {}
    for (model, family_name, entry_name, file_name, crop, resize, interpolation, params, min_size, acc1, acc5,
         gflops, megabytes, recipe, docs) in _TABLE:
        mean, std = _SPECIAL_NORMALIZATION.get(model, (IMAGENET_MEAN, IMAGENET_STD))
        weights = Weights(
            _URL_ROOT + file_name,
            functools.partial(ImageClassification, crop_size=crop, resize_size=resize, interpolation=interpolation,
                              mean=mean, std=std),
            dict(categories=IMAGENET_CATEGORIES, num_params=params, min_size=min_size, recipe=recipe,
                 _metrics={"ImageNet-1K": {"acc@1": acc1, "acc@5": acc5}}, _ops=gflops, _file_size=megabytes,
                 _docs=docs, **({"license": _SWAG_LICENSE} if "SWAG" in entry_name else {})))
        rows.setdefault((model, family_name), []).append((entry_name, weights))
    registry = {}
    for (model, family_name), members in rows.items():
        default = dict(members)[_DEFAULTS.get(model, "IMAGENET1K_V1")]
        # the same Weights object under a second name makes DEFAULT an alias, as in torchvision's class bodies
        family = WeightsEnum(family_name, members + [("DEFAULT", default)], module=__name__, qualname=family_name)
        family._model_name = model
        registry[model] = family
    return registry


REGISTRY = _build_registry()
# MobileNet_V3_Small_Weights, EfficientNet_B0_Weights, ...: the names torchvision gives them
FAMILIES = {family.__name__: family for family in REGISTRY.values()}
globals().update(FAMILIES)


def get_model_weights(name):
    """The ``<Model>_Weights`` enum of model ``name`` or of its builder (torchvision's ``get_model_weights``)."""
    if callable(name) and not isinstance(name, str):
        name = name.__name__
    if name not in REGISTRY:
        raise InvalidArgumentError(f"no pretrained weights are registered for model {name!r}; models with "
                                   f"weights: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def get_weight(name):
    """The member called ``"<Enum>.<ENTRY>"``, e.g. ``"MobileNet_V3_Small_Weights.IMAGENET1K_V1"`` or ``"....DEFAULT"``."""
    family_name, _, entry_name = str(name).partition(".")
    if family_name in FAMILIES:
        return FAMILIES[family_name].verify(entry_name)
    raise InvalidArgumentError(f"unknown weights {name!r}; expected '<Enum>.<ENTRY>' with an enum among "
                               f"{', '.join(FAMILIES)}")


def resolve(model_name, weights):
    """The member ``weights`` names for ``model_name``: None for None, else a member or an error.

    ``weights`` may be ``"DEFAULT"``, an entry name such as ``"IMAGENET1K_V1"`` (optionally
    prefixed with the enum's name, ``"MobileNet_V3_Small_Weights.IMAGENET1K_V1"``), or a member itself.
    """
    if weights is None:
        return None
    family = get_model_weights(model_name)
    if not isinstance(weights, (str, WeightsEnum)):
        raise InvalidArgumentError(f"unknown weights {weights!r} for {model_name}; valid: "
                                   f"{', '.join(family.names())} (or None)")
    return family.verify(weights)


def load_pretrained(model, entry, progress=True):
    """Download (once), verify and load ``entry``'s weights into ``model``; returns the model."""
    if not isinstance(entry, WeightsEnum):
        raise InvalidArgumentError(f"expected a weights enum member (see resolve), got {type(entry).__name__}")
    model.load_state_dict(entry.get_state_dict(progress=progress))
    return model
