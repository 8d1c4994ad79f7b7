"""The model registry (get_model, list_models, get_model_builder), builder argument checks and weights= plumbing."""
import sys
import types

import pytest

import excite as ex
import excite.vision.models as exm
from excite.errors import InvalidArgumentError

ALL_MODELS = [
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m",
    "efficientnet_v2_s", "maxvit_t", "mobilenet_v3_digits", "mobilenet_v3_large", "mobilenet_v3_small",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
    "regnet_y_800mf", "regnet_y_8gf",
]
TORCHVISION_MODELS = [name for name in ALL_MODELS if name != "mobilenet_v3_digits"]  # the digits net is excite's


def test_list_models_shows_the_22_torchvision_networks_and_the_digits_net():
    assert exm.list_models() == ALL_MODELS
    assert ex.vision.models.list_models(module=ex.vision.models) == ALL_MODELS


def test_list_models_filters_like_torchvision(torchvision):
    ours = set(ALL_MODELS)
    for include, exclude in [("efficientnet*", None), (["mobilenet*", "*_b?"], None), (None, "*v2*"),
                             ("regnet_y_*", "*gf"),
                             ("efficientnet_*", ["*_b1", "*_v2_?"]), ("nothing*", None)]:
        theirs = [n for n in torchvision.models.list_models(include=include, exclude=exclude) if n in ours]
        mine = [n for n in exm.list_models(include=include, exclude=exclude) if n in TORCHVISION_MODELS]
        assert mine == theirs, (include, exclude)


def test_get_model_builder_returns_the_builder():
    assert exm.get_model_builder("mobilenet_v3_small") is exm.mobilenet_v3_small
    assert exm.get_model_builder("EfficientNet_V2_S") is exm.efficientnet_v2_s  # case-insensitive, as torchvision


def test_get_model_passes_keyword_arguments():
    model = exm.get_model("mobilenet_v3_small", num_classes=7, width_mult=0.5)
    assert isinstance(model, exm.MobileNetV3)
    assert model.classifier[3].out_features == 7
    assert model.features[0][0].out_channels == 8  # 16 * 0.5


def test_unknown_model_names_close_matches():
    with pytest.raises(InvalidArgumentError, match="mobilenet_v3_small") as info:
        exm.get_model("mobilenet_v3_smal")
    assert isinstance(info.value, ValueError)
    assert "mobilenet_v3_smal" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="efficientnet_b7"):
        exm.get_model_builder("efficientnet_b77")
    with pytest.raises(InvalidArgumentError, match="Unknown model 'resnet50'"):
        exm.get_model("resnet50")


def test_exports():
    for name in ["MobileNetV3", "EfficientNet", "InvertedResidual", "MBConv", "FusedMBConv", "MBConvConfig",
                 "FusedMBConvConfig", "InvertedResidualConfig", "get_model", "list_models", "get_model_builder",
                 "RegNet", "SimpleStemIN", "BottleneckTransform", "ResBottleneckBlock", "AnyStage", "BlockParams",
                 "MaxVit",
                 *ALL_MODELS]:
        assert hasattr(exm, name), name
    assert ex.vision.models is exm


def test_config_rows_scale_like_torchvision(torchvision):
    tv = torchvision.models
    for args in [(6, 5, 2, 112, 192, 4, 1.6, 2.2), (1, 3, 1, 32, 16, 1, 2.0, 3.1), (4, 3, 2, 24, 48, 4, 1.1, 1.2)]:
        mine, theirs = exm.MBConvConfig(*args), tv.efficientnet.MBConvConfig(*args)
        assert (mine.input_channels, mine.out_channels, mine.num_layers) == (
            theirs.input_channels, theirs.out_channels, theirs.num_layers)
    mine = exm.InvertedResidualConfig(40, 5, 240, 40, True, "HS", 1, 1, 0.75)
    theirs = tv.mobilenetv3.InvertedResidualConfig(40, 5, 240, 40, True, "HS", 1, 1, 0.75)
    assert vars(mine) == vars(theirs)


def test_bad_configurations_raise():
    with pytest.raises(InvalidArgumentError, match="should not be empty"):
        exm.MobileNetV3([], last_channel=1024)
    with pytest.raises(TypeError):
        exm.EfficientNet([("not", "a", "config")], dropout=0.2)
    bad_stride = exm.InvertedResidualConfig(16, 3, 16, 16, False, "RE", 3, 1, 1.0)
    with pytest.raises(InvalidArgumentError, match="stride must be 1 or 2, got 3"):
        exm.MobileNetV3([bad_stride], last_channel=1024)
    with pytest.raises(InvalidArgumentError, match="stride must be 1 or 2, got 3"):
        exm.EfficientNet([exm.MBConvConfig(1, 3, 3, 32, 16, 1)], dropout=0.2)


@pytest.fixture
def fake_weights(monkeypatch):
    """Stand-in for excite.vision.weights (resolve / load_pretrained), recording what the builders ask of it."""
    calls = []
    module = types.ModuleType("excite.vision.weights")

    def resolve(model_name, weights):
        calls.append(("resolve", model_name, weights))
        return types.SimpleNamespace(num_classes=1000, model_name=model_name)

    def load_pretrained(model, entry, progress=True):
        calls.append(("load_pretrained", type(model).__name__, entry.model_name, progress))

    module.resolve, module.load_pretrained = resolve, load_pretrained
    monkeypatch.setitem(sys.modules, "excite.vision.weights", module)
    return calls


def test_weights_are_resolved_and_loaded(fake_weights):
    model = exm.mobilenet_v3_small(weights="IMAGENET1K_V1", progress=False)
    assert isinstance(model, exm.MobileNetV3)
    assert fake_weights == [("resolve", "mobilenet_v3_small", "IMAGENET1K_V1"),
                            ("load_pretrained", "MobileNetV3", "mobilenet_v3_small", False)]
    fake_weights.clear()
    exm.get_model("efficientnet_b0", weights="DEFAULT", num_classes=1000)
    assert [c[0] for c in fake_weights] == ["resolve", "load_pretrained"]


def test_weights_pin_num_classes(fake_weights):
    with pytest.raises(InvalidArgumentError, match="'num_classes' expected value 1000 but got 10"):
        exm.efficientnet_b0(weights="DEFAULT", num_classes=10)
    assert [c[0] for c in fake_weights] == ["resolve"]  # refused before building anything


def test_no_weights_means_no_weights_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "excite.vision.weights", None)  # importing it would now fail
    assert isinstance(exm.mobilenet_v3_small(weights=None), exm.MobileNetV3)


def test_real_weights_registry_refuses_before_downloading():
    # both checks happen before any file is fetched, so they run offline
    with pytest.raises(InvalidArgumentError, match="'num_classes' expected value 1000 but got 10"):
        exm.mobilenet_v3_small(weights="DEFAULT", num_classes=10)
    with pytest.raises(InvalidArgumentError, match="IMAGENET1K_V1"):
        exm.efficientnet_b0(weights="NO_SUCH_WEIGHTS")
