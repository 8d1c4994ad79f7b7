"""The compiled kernels (numba, with explicit SIMD written as LLVM IR): loaded on first use through
`excite.kernels.threads.LazyModule`, called only by the plain dispatch one level up."""
