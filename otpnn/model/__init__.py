"""The MLP: flat parameters, per-shard gradients, in-order reduction, SGD, evaluation."""

from otpnn.model.mlp import Workspace, evaluate, layers_gradient, reduce_in_order, shard_gradient
from otpnn.model.params import init_params, layer_views, num_params, params_sha256
from otpnn.model.sgd import SGD, UPDATE_CHUNK, Hyper, reduce_and_update, sgd_update

__all__ = [
    "SGD",
    "UPDATE_CHUNK",
    "Hyper",
    "Workspace",
    "evaluate",
    "init_params",
    "layer_views",
    "layers_gradient",
    "num_params",
    "params_sha256",
    "reduce_and_update",
    "reduce_in_order",
    "sgd_update",
    "shard_gradient",
]
