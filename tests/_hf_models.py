"""Small random transformers MambaForCausalLM models: the oracle for tests/test_model.py and test_loading.py.

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


def make_hf_model(seed: int, *, vocab_size: int = VOCAB, n_layer: int = 2, **fields):
    """A float32, eval-mode MambaForCausalLM with every parameter perturbed by N(0, 0.1^2)."""
    torch, transformers = require_torch()
    torch.manual_seed(seed)
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
