"""An independent implementation of the small spectrum test models: torch,
float64, written out by hand from the layers' definitions (no Keras).

`MODELS` builds each Keras model; `torch_outputs` computes the same model's
logits from the flat weight vector (the Keras model's trainable weights
concatenated in `model.trainable_variables` order) with torch in float64.
From it: the dense Hessian and Gauss-Newton matrix of the mean softmax
cross-entropy (`torch.func.hessian`, `torch.func.jacrev`), and the top
eigenvalues by SciPy's `eigsh` on `torch.func` Hessian-vector products.
"""

import keras
import numpy as np

N, D, C = 40, 6, 4
IMAGE = (6, 6, 1)
EPSILON = 1e-3  # Keras' BatchNormalization default


def mlp(seed=0):
    """Dense(5, tanh) -> BatchNorm -> Dense(4): 69 weights."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(C, name="head")(hidden)
    return keras.Model(inputs, outputs, name="mlp")


def cnn(seed=0, filters=3):
    """Conv2D(filters, 3, relu) -> BatchNorm -> GAP -> Dense(4)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(IMAGE),
        keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                            name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(C, name="head"),
    ], name="cnn")


MODELS = {"mlp": mlp, "cnn": cnn}
BUILDERS = dict(MODELS, cnn_wide=lambda seed=0: cnn(seed, filters=8))


def arrays(name, seed=0):
    """Inputs, labels, and weights with BatchNorm statistics set away from
    their initial values (so inference mode is not the identity)."""
    rng = np.random.default_rng(seed)
    model = BUILDERS[name]()
    shape = (D,) if name == "mlp" else IMAGE
    x = rng.normal(size=(N, *shape)).astype("float32")
    labels = rng.integers(0, C, size=N)
    weights = []
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if "moving_mean" in variable.path:
            value = rng.normal(scale=0.3, size=value.shape)
        elif "moving_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, size=value.shape)
        elif "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, size=value.shape)
        elif "beta" in variable.path:
            value = rng.normal(scale=0.2, size=value.shape)
        weights.append(np.asarray(value, "float32"))
    return x, labels, weights


def build(name, weights):
    model = BUILDERS[name]()
    model.set_weights(weights)
    return model


# == torch, float64 ==========================================================
def _torch():
    import torch

    return torch


def _split_weights(name, flat, constants):
    """Named tensors from the flat trainable vector and the constants."""
    torch = _torch()
    if name == "mlp":
        trainable = [("hidden_w", (D, 5)), ("hidden_b", (5,)),
                     ("gamma", (5,)), ("beta", (5,)), ("head_w", (5, C)),
                     ("head_b", (C,))]
    else:
        kernel = tuple(constants["conv_shape"])
        filters = kernel[-1]
        trainable = [("conv_w", kernel), ("conv_b", (filters,)),
                     ("gamma", (filters,)), ("beta", (filters,)),
                     ("head_w", (filters, C)), ("head_b", (C,))]
    named, start = {}, 0
    for key, shape in trainable:
        size = int(np.prod(shape))
        named[key] = flat[start:start + size].reshape(shape)
        start += size
    assert start == flat.numel(), (start, flat.numel())
    named.update({k: torch.as_tensor(v, dtype=torch.float64)
                  for k, v in constants.items() if k != "conv_shape"})
    return named


def constants_of(name, weights):
    """The non-trainable values (BatchNorm statistics) of `weights`."""
    if name == "mlp":
        # Keras order: hidden (w, b), bn (gamma, beta, mean, var), head (w, b)
        return {"mean": weights[4], "var": weights[5]}
    return {"mean": weights[4], "var": weights[5],
            "conv_shape": weights[0].shape}


def trainable_flat(name, weights):
    index = [0, 1, 2, 3, 6, 7]
    return np.concatenate([np.ravel(weights[i]) for i in index]).astype(np.float64)


def torch_outputs(name, flat, x, constants, training=False):
    """The model's logits in float64, from the flat trainable weights."""
    torch = _torch()
    w = _split_weights(name, flat, constants)
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)

    def batch_norm(h, axes):
        if training:
            mean = h.mean(dim=axes, keepdim=False)
            var = ((h - mean) ** 2).mean(dim=axes)
        else:
            mean, var = w["mean"], w["var"]
        return (h - mean) / torch.sqrt(var + EPSILON) * w["gamma"] + w["beta"]

    if name == "mlp":
        h = torch.tanh(x @ w["hidden_w"] + w["hidden_b"])
        h = batch_norm(h, (0,))
    else:
        kernel = w["conv_w"].permute(3, 2, 0, 1)  # (kh, kw, in, out) -> OIHW
        h = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), kernel,
                                       padding="same")
        h = torch.relu(h.permute(0, 2, 3, 1) + w["conv_b"])
        h = batch_norm(h, (0, 1, 2))
        h = h.mean(dim=(1, 2))
    return h @ w["head_w"] + w["head_b"]


def cross_entropy(logits, labels):
    torch = _torch()
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return torch.nn.functional.cross_entropy(logits, labels)


def loss_function(name, weights, x, labels, training=False, batch_size=None):
    """flat -> mean loss; with `batch_size`, the sample-weighted mean of
    the batches' losses (what training mode computes batch by batch)."""
    constants = constants_of(name, weights)
    size = len(x) if batch_size is None else batch_size

    def loss(flat):
        total = 0.0
        for start in range(0, len(x), size):
            part = slice(start, start + size)
            logits = torch_outputs(name, flat, x[part], constants, training)
            total = total + cross_entropy(logits, labels[part]) * len(x[part])
        return total / len(x)

    return loss


def dense_hessian(name, weights, x, labels, training=False, batch_size=None):
    torch = _torch()
    flat = torch.as_tensor(trainable_flat(name, weights))
    loss = loss_function(name, weights, x, labels, training, batch_size)
    return torch.func.hessian(loss)(flat).numpy()


def dense_gauss_newton(name, weights, x, labels):
    """J^T H_L J of the mean cross-entropy, inference mode."""
    torch = _torch()
    flat = torch.as_tensor(trainable_flat(name, weights))
    constants = constants_of(name, weights)
    logits = torch_outputs(name, flat, x, constants)
    jacobian = torch.func.jacrev(
        lambda f: torch_outputs(name, f, x, constants))(flat)  # (N, C, P)
    p = torch.softmax(logits, dim=1)
    curvature = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / len(x)
    return torch.einsum("ncp,ncd,ndq->pq", jacobian, curvature,
                        jacobian).numpy()


def eigsh_top(name, weights, x, labels, k):
    """SciPy's eigsh on torch.func Hessian-vector products, float64."""
    from scipy.sparse.linalg import LinearOperator
    from scipy.sparse.linalg import eigsh

    torch = _torch()
    flat = torch.as_tensor(trainable_flat(name, weights))
    grad = torch.func.grad(loss_function(name, weights, x, labels))

    def matvec(v):
        v = torch.as_tensor(np.ravel(v), dtype=torch.float64)
        return torch.func.jvp(grad, (flat,), (v,))[1].numpy()

    size = flat.numel()
    values = eigsh(LinearOperator((size, size), matvec=matvec,
                                  dtype=np.float64),
                   k=k, which="LA", tol=1e-12, return_eigenvectors=False)
    return np.sort(values)[::-1]
