"""Exports of a trained model for other frameworks: PyTorch's ``nn.Linear`` layout and ONNX.

otpnn stores a layer's weight as (in, out), so that a layer is ``x @ W + b``; ``torch.nn.Linear``
stores (out, in) and computes ``x @ W.T + b``. The PyTorch export transposes, and names tensors as
the state dict of ``nn.Sequential(Linear, act, Linear, act, ..., Linear)`` names them (``0.weight``,
``0.bias``, ``2.weight``, ...: the activations hold no parameters but take an index), so::

    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    model.load_state_dict(safetensors.torch.load_file("model-torch.safetensors"))

The ONNX export is a graph built with the ``onnx`` package (checked by ``onnx.checker``): input
``pixels`` float32 (N, 784) in [0, 1] (the image's bytes / 255, as in training), one ``Gemm``
per layer (weights (out, in), ``transB=1``), ReLU or Sigmoid between, ``Softmax`` to the output
``probabilities`` (N, 10). Both exports are float32, whatever dtype the model was trained in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save as st_save

from otpnn.atomic import write_atomic
from otpnn.errors import UsageError
from otpnn.saved_model import Model

ONNX_OPSET = 17
FORMATS = ("torch", "onnx")


class ExportError(UsageError):
    """An export that cannot be made (a missing optional package); the message says why."""


def torch_state_dict(model: Model) -> dict[str, np.ndarray]:
    """``nn.Sequential`` state-dict tensors: ``{2i}.weight`` (out, in) and ``{2i}.bias``."""
    tensors = {}
    for i, (w, b) in enumerate(model.layers()):
        tensors[f"{2 * i}.weight"] = np.ascontiguousarray(w.T, dtype=np.float32)
        tensors[f"{2 * i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
    return tensors


def export_torch(model: Model, path: str | os.PathLike) -> None:
    meta = {"format": "otpnn-torch-sequential/1", "layer_sizes": json.dumps(model.sizes),
            "activation": model.activation}  # fmt: skip
    _write(path, st_save(torch_state_dict(model), metadata=meta))


def onnx_model(model: Model) -> object:
    """The model as an ``onnx.ModelProto`` (see the module docstring for its interface)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'otpnn[onnx]'") from None
    act = {"relu": "Relu", "sigmoid": "Sigmoid"}[model.activation]
    nodes, inits, x = [], [], "pixels"
    layers = model.layers()
    for i, (w, b) in enumerate(layers):
        wt = numpy_helper.from_array(
            np.ascontiguousarray(w.T, dtype=np.float32), f"layer{i}.weight"
        )
        bt = numpy_helper.from_array(np.asarray(b, dtype=np.float32), f"layer{i}.bias")
        inits += [wt, bt]
        out = f"linear{i}"
        nodes.append(helper.make_node("Gemm", [x, wt.name, bt.name], [out], transB=1))
        x = out
        if i < len(layers) - 1:
            nodes.append(helper.make_node(act, [x], [f"{act.lower()}{i}"]))
            x = f"{act.lower()}{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "otpnn_mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", model.sizes[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", model.sizes[-1]])],
        inits,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="otpnn"
    )
    proto.ir_version = min(proto.ir_version, 8)  # readable by onnxruntime releases of 2022 on
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: Model, path: str | os.PathLike) -> None:
    _write(path, onnx_model(model).SerializeToString())  # type: ignore[attr-defined]


def _write(path: str | os.PathLike, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
