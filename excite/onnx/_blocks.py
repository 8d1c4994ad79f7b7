"""ONNX converters for the excite.vision model blocks whose forward holds logic beyond a Sequential."""
from ..errors import ShapeError, shape_str
from ..vision.models import efficientnet, mobilenetv3
from ._layers import emit_flatten
from ._registry import register_converter


def _residual(ctx, m, qualname, result, x):
    if result.shape != x.shape:
        raise ShapeError(f"layer {qualname!r} ({type(m).__name__}) has a residual connection but its block maps "
                         f"{shape_str(x.shape)} to {shape_str(result.shape)}")
    return ctx.builder.node("Add", [result.name, x.name], x.shape, qualname)


@register_converter(mobilenetv3.InvertedResidual)
def _inverted_residual(ctx, m, qualname, x):
    result = ctx.child(m, qualname, "block", x)
    return _residual(ctx, m, qualname, result, x) if m.use_res_connect else result


@register_converter(efficientnet.MBConv)
@register_converter(efficientnet.FusedMBConv)
def _mbconv(ctx, m, qualname, x):
    result = ctx.child(m, qualname, "block", x)
    if not m.use_res_connect:
        return result
    result = ctx.child(m, qualname, "stochastic_depth", result)
    return _residual(ctx, m, qualname, result, x)


@register_converter(mobilenetv3.MobileNetV3, methods=("forward", "_forward_impl"))
@register_converter(efficientnet.EfficientNet, methods=("forward", "_forward_impl"))
def _classifier_network(ctx, m, qualname, x):
    # torchvision's forward: features -> avgpool -> torch.flatten(x, 1) -> classifier
    x = ctx.child(m, qualname, "features", x)
    x = ctx.child(m, qualname, "avgpool", x)
    x = emit_flatten(ctx, qualname + ".flatten" if qualname else "flatten", x, 1, -1)
    return ctx.child(m, qualname, "classifier", x)
