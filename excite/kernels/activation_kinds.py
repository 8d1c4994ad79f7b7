"""Integer codes of the activations the compiled kernels apply (importable without numba)."""
RELU, RELU6, SIGMOID, HARDSIGMOID, HARDSWISH, SILU, IDENTITY, SIGMOID_OF_OUTPUT = range(8)
KINDS = {"relu": RELU, "relu6": RELU6, "sigmoid": SIGMOID, "hardsigmoid": HARDSIGMOID,
         "hardswish": HARDSWISH, "silu": SILU, None: IDENTITY, "identity": IDENTITY}
