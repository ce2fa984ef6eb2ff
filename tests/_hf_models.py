"""Small random transformers MambaForCausalLM / Mamba2ForCausalLM models: the oracle for tests/test_model.py,
test_model_mamba2.py and test_loading.py; and the helpers those tests share for a mixer inside a user's
own NNX model (perturbed parameters, float64 copies, a gradient check against a float64 oracle).

The oracle logits come from transformers' pure-PyTorch path (no CUDA kernels) run in float64, on a copy
of the float32 model that was saved; every parameter (biases, norms, A_log, D included) is perturbed
away from its initial value so that a mis-mapped tensor cannot hide behind a constant.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

VOCAB = 97

# id -> transformers MambaConfig fields. Together they cover odd hidden sizes, d_state 4 and 16, conv
# width 2, 3 and 4, time_step_rank "auto" and not d/16, tied and untied heads, use_bias and
# use_conv_bias on and off, and a bf16-style residual (residual_in_fp32 False).
CONFIGS = {
    "d37-N16-w4-rauto-tied-convbias": dict(hidden_size=37, state_size=16, conv_kernel=4, time_step_rank="auto",
                                           tie_word_embeddings=True, use_bias=False, use_conv_bias=True),
    "d50-N4-w2-r5-untied-bias-noconvbias": dict(hidden_size=50, state_size=4, conv_kernel=2, time_step_rank=5,
                                                tie_word_embeddings=False, use_bias=True, use_conv_bias=False),
    "d33-N16-w4-r7-tied-bias-convbias-x1": dict(hidden_size=33, state_size=16, conv_kernel=4, time_step_rank=7,
                                                expand=1, tie_word_embeddings=True, use_bias=True,
                                                use_conv_bias=True),
    "d24-N4-w3-r2-untied-nobias-res16": dict(hidden_size=24, state_size=4, conv_kernel=3, time_step_rank=2,
                                             tie_word_embeddings=False, use_bias=False, use_conv_bias=False,
                                             residual_in_fp32=False, layer_norm_epsilon=1e-6),
}


# id -> transformers Mamba2Config fields (nheads * headdim = expand * hidden_size). Together they cover
# odd head counts (3, 5), ngroups 1 and 2, chunk_size below the prompt length, d_state 8 and 16, conv
# width 3 and 4, tied and untied heads, use_bias and use_conv_bias on and off, a dt limit, and a
# bf16-style residual (residual_in_fp32 False).
CONFIGS2 = {
    "h3-p16-g1-N8-w4-T4-tied": dict(hidden_size=24, num_heads=3, head_dim=16, n_groups=1, state_size=8,
                                    conv_kernel=4, chunk_size=4, tie_word_embeddings=True),
    "h6-p8-g2-N16-w3-T3-untied-bias-noconvbias": dict(hidden_size=24, num_heads=6, head_dim=8, n_groups=2,
                                                      state_size=16, conv_kernel=3, chunk_size=3,
                                                      tie_word_embeddings=False, use_bias=True,
                                                      use_conv_bias=False),
    "h5-p8-g1-N8-w4-x1-dtlimit-res16": dict(hidden_size=40, expand=1, num_heads=5, head_dim=8, n_groups=1,
                                            state_size=8, conv_kernel=4, chunk_size=16, tie_word_embeddings=True,
                                            time_step_limit=(0.0, 0.05), residual_in_fp32=False,
                                            layer_norm_epsilon=1e-6),
}


def make_hf_model(seed: int, *, vocab_size: int = VOCAB, n_layer: int = 2, mamba2: bool = False, **fields):
    """A float32, eval-mode MambaForCausalLM (Mamba2ForCausalLM with `mamba2`) with every parameter
    perturbed by N(0, 0.1^2)."""
    torch, transformers = require_torch()
    torch.manual_seed(seed)
    if mamba2:
        cfg = transformers.Mamba2Config(vocab_size=vocab_size, num_hidden_layers=n_layer, **fields)
        model = transformers.Mamba2ForCausalLM(cfg).float().eval()
    else:
        cfg = transformers.MambaConfig(vocab_size=vocab_size, num_hidden_layers=n_layer, **fields)
        model = transformers.MambaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def require_torch():
    """(torch, transformers), or a skip with the reason when either is missing."""
    torch = pytest.importorskip("torch", reason="the parity oracle is transformers' PyTorch Mamba")
    transformers = pytest.importorskip("transformers", reason="the parity oracle is transformers' MambaForCausalLM")
    return torch, transformers


def float64_copy(model):
    return copy.deepcopy(model).double().eval()


def oracle_logits(model64, ids) -> np.ndarray:
    """ids [b, l] ints -> float64 logits [b, l, vocab] from the transformers slow path (no padding)."""
    torch, _ = require_torch()
    with torch.no_grad():
        return model64(torch.as_tensor(np.asarray(ids), dtype=torch.long), use_cache=False).logits.numpy()


def rel_err(x, ref) -> float:
    """max |x - ref| / max |ref| (a norm-wise relative error: logits near 0 would blow up an elementwise one)."""
    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))


def left_pad(prompts, pad_id: int = 0):
    """list of 1-D int arrays -> (ids [b, L] int32, mask [b, L] bool), each row LEFT-padded to the longest."""
    L = max(len(p) for p in prompts)
    ids = np.full((len(prompts), L), pad_id, np.int32)
    mask = np.zeros((len(prompts), L), bool)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = p
        mask[i, L - len(p):] = True
    return ids, mask


def perturb_params(module, seed: int, scale: float = 0.1):
    """Adds N(0, scale^2) to every nnx.Param of `module` in place (moves zero/one-initialised parameters
    off their constants, so that a mis-wired one cannot hide) and returns the module."""
    from flax import nnx

    rng = np.random.RandomState(seed)
    for _, v in nnx.iter_graph(module):
        if isinstance(v, nnx.Param):
            v[...] = v[...] + scale * rng.standard_normal(v[...].shape).astype(np.float32)
    return module


def params64(module) -> dict:
    """{path tuple: float64 array} of every nnx.Param of `module`."""
    from flax import nnx

    return {tuple(p): np.asarray(v[...], np.float64) for p, v in nnx.iter_graph(module) if isinstance(v, nnx.Param)}


def check_gradient_against_oracle(net, x, target, net_oracle, seed: int = 5):
    """nnx.grad of the mean squared error of net(x) under jit: <grad, v> for a random direction v equals
    the central difference of the float64 `net_oracle(params64 dict, x)` along v."""
    import jax.numpy as jnp
    from flax import nnx

    def loss(net):
        return jnp.mean((net(jnp.asarray(x)) - jnp.asarray(target, jnp.float32)) ** 2)

    grads = {tuple(p): np.asarray(g[...], np.float64) for p, g in nnx.to_flat_state(nnx.jit(nnx.grad(loss))(net))}
    q = params64(net)
    assert grads.keys() == q.keys()
    rng = np.random.RandomState(seed)
    direction = {k: rng.standard_normal(v.shape) for k, v in q.items()}
    dot = sum(float(np.sum(grads[k] * direction[k])) for k in q)
    eps = 1e-4
    shifted = lambda sign: {k: q[k] + sign * eps * direction[k] for k in q}
    oracle_loss = lambda p: np.mean((net_oracle(p, x) - target) ** 2)
    fd = (oracle_loss(shifted(+1)) - oracle_loss(shifted(-1))) / (2 * eps)
    assert abs(dot - fd) <= 1e-4 * max(1.0, abs(fd)), (dot, fd)


class TinyNet:
    """Builds a user's own NNX model with a mixer inside: Linear(5 -> 24) -> h + mixer(h) -> Linear(24 -> 3),
    float32 matmuls in full precision, every parameter perturbed (see perturb_params).

    make_mixer(d_model, rngs) -> the mixer module."""

    @staticmethod
    def build(make_mixer, seed: int):
        import jax
        from flax import nnx

        class Net(nnx.Module):
            def __init__(self, rngs):
                hi = jax.lax.Precision.HIGHEST
                self.inp = nnx.Linear(5, 24, precision=hi, rngs=rngs)
                self.mixer = make_mixer(24, rngs)
                self.out = nnx.Linear(24, 3, precision=hi, rngs=rngs)

            def __call__(self, x):
                h = self.inp(x)
                return self.out(h + self.mixer(h))

        return perturb_params(Net(nnx.Rngs(seed)), seed)

    @staticmethod
    def oracle(q, x, mixer_oracle):
        """The net in float64 NumPy from a `params64` dict; mixer_oracle(mixer params {path: array}, h)."""
        m = {k[1:]: v for k, v in q.items() if k[0] == "mixer"}
        h = np.asarray(x, np.float64) @ q[("inp", "kernel")] + q[("inp", "bias")]
        return (h + mixer_oracle(m, h)) @ q[("out", "kernel")] + q[("out", "bias")]


def transformers_norm_has_groups() -> bool:
    """Whether the installed transformers' Mamba2 gated RMSNorm normalizes per group (older releases,
    e.g. 5.17, normalize over the whole d_inner whatever n_groups is)."""
    import inspect
    _, transformers = require_torch()
    from transformers.models.mamba2 import modeling_mamba2
    return "group_size" in inspect.signature(modeling_mamba2.MambaRMSNormGated.__init__).parameters
