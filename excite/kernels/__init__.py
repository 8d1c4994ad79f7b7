"""Compute on plain ``np.ndarray``s, forward and backward: what every layer above runs.

Two levels. The plain dispatch here — NumPy only, importable without numba — picks an algorithm
for the arrays in hand and calls the compiled kernels in `compiled/` (numba; loaded on first use):

- ``activations``: the one registry of elementwise activations (formulas, module, ONNX lowering);
  ``activation``: activations, their derivatives and softmax on arrays, by registry name.
- ``conv``: 2-D convolutions (depthwise, 1x1, dense, grouped) and their gradients, with a fused
  epilogue (bias, batch norm's affine map, activation, residual), over one module per kind
  (``conv_depthwise``, ``conv_dense``, ``conv_grouped``; ``conv_padding``: the zero-filled copies
  they share); ``pointwise``: the 1x1 products behind it (and Linear); ``fused``: conv + eval
  batch norm + activation + residual in one call.
- ``norm``: batch normalisation (statistics, affine map, backward) fused with an activation;
  ``se``: the Squeeze-and-Excitation block forward and backward; ``pooling``.
- ``layout``: NCHW shapes in channels-last memory; ``buffers``: a pool of reused large outputs;
  ``blas``: matrix products on excite's threads; ``threads``: lazy compilation, thread count and
  the size below which NumPy is cheaper than a compiled launch; ``bounds``: the bounds-checked
  build of the compiled kernels (EXCITE_KERNEL_BOUNDSCHECK=1); ``cache``: where the builds are
  cached ($EXCITE_HOME/kernels/<key>); ``compiler``: builds in worker processes, with a notice
  (``signatures.txt``: the builds the usual workloads need).

`compiled/` holds the numba code: ``simd`` (LLVM IR vector helpers), ``gemm`` (matrix-product
micro-kernels), ``depthwise_cl`` (depthwise row kernels), ``batchnorm`` and ``channel_reduce``
(per-channel passes), ``elementwise`` (activation loops), ``scalar_math`` and
``activation_math`` (the registry's formulas as compiled scalar code).
"""
