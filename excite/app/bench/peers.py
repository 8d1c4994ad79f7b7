"""The deployment runtimes as benchmark peers, each in a process of its own: onnxruntime and OpenVINO.

    python -m excite.app.bench.peers onnxruntime|openvino --threads N

Both run the ONNX graph torch exports of the torchvision model (the torch peer writes it), with
their full graph optimisations: onnxruntime at ``ORT_ENABLE_ALL``, OpenVINO's CPU plugin with the
LATENCY hint in float32. They speak `protocol.serve`'s protocol; a case is
``("onnx", path, batch, size)``.
"""
import argparse

import numpy as np

from .protocol import serve


def _input(batch, size):
    return np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)


def serve_onnxruntime(threads):
    from excite.onnx import OnnxModel

    def build(kind, args):
        path, batch, size = args[0], int(args[1]), int(args[2])
        session = OnnxModel(path, num_threads=threads)  # ORT_ENABLE_ALL
        x = _input(batch, size)
        return lambda: session(x)

    serve(build)


def serve_openvino(threads):
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}

    def build(kind, args):
        path, batch, size = args[0], int(args[1]), int(args[2])
        model = core.read_model(path)
        model.reshape({model.inputs[0].get_any_name(): [batch, 3, size, size]})
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        x = _input(batch, size)
        return lambda: request.infer({0: x})

    serve(build)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m excite.app.bench.peers")
    parser.add_argument("runtime", choices=["onnxruntime", "openvino"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    (serve_onnxruntime if args.runtime == "onnxruntime" else serve_openvino)(args.threads)


if __name__ == "__main__":
    main()
