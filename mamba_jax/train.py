"""`mamba-jax train`: trains a byte-level MambaLM on the Python standard library sources.

    python -m mamba_jax.cli train --out runs/bytes --d-model 384 --n-layer 8 --max-minutes 4

The loss is next-byte cross-entropy; gradients come from the ops' custom VJPs (the FFI or pure-JAX
forward, the pure-JAX reference's backward). AdamW with linear warm-up and a cosine decay whose
progress is max(step / --steps, elapsed / --max-minutes), so a run bounded by wall-clock time still
ends at the bottom of its schedule. Every --ckpt-every steps (and at the end) it writes

    OUT/checkpoint/params.safetensors      float32 parameters (names = the model's parameter paths)
    OUT/checkpoint/opt_state.safetensors   optimizer state (names = pytree paths)
    OUT/checkpoint/state.json              step, elapsed time, tokens seen, the run's arguments

and `--resume` continues from there (batches are a function of (seed, step), so a resumed run sees
the batches an uninterrupted one would). At the end it exports OUT/model/ in the transformers
``*-hf`` layout (config.json + model.safetensors, loadable by `mamba_jax.from_pretrained`), reloads
that export and measures held-out bits per byte with it, and writes OUT/model/metrics.json.

Shape legend: b batch, l seqlen, V vocab.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from . import data as data_lib

LN2 = math.log(2.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=384)
    g.add_argument("--n-layer", type=int, default=8)
    g.add_argument("--d-state", type=int, default=16)
    g.add_argument("--expand", type=int, default=2)
    g.add_argument("--d-conv", type=int, default=4)
    g.add_argument("--implementation", choices=["auto", "ffi", "xla"], default="auto",
                   help="op implementation (auto: FFI kernels where built, else pure JAX)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch", type=int, default=64, help="sequences per step")
    g.add_argument("--seq-len", type=int, default=256, help="bytes per sequence")
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr = ratio * peak")
    g.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    g.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    g.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall-clock time")
    g.add_argument("--stop-at", type=int, default=None,
                   help="end this invocation at this step without shortening the schedule (continue with --resume)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None, help="directory of *.py files (default: this Python's stdlib)")
    g.add_argument("--heldout-fraction", type=float, default=0.05)
    g.add_argument("--max-files", type=int, default=None, help="use only the first N files (for tests)")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="run directory (checkpoint/, model/, log.jsonl)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    g.add_argument("--ckpt-every", type=int, default=500)
    g.add_argument("--eval-every", type=int, default=500)
    g.add_argument("--eval-batches", type=int, default=4, help="held-out batches for the periodic evaluation")
    g.add_argument("--final-eval-tokens", type=int, default=None,
                   help="cap on held-out tokens for the final evaluation (default: all)")
    g.add_argument("--log-every", type=int, default=20)
    g.add_argument("--export-dtype", choices=["float32", "bfloat16"], default="bfloat16",
                   help="storage dtype of the exported model.safetensors (A_log, D, dt bias stay float32)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def _impl(name):
    return None if name in (None, "auto") else name


def build_model(args, seed: int):
    from flax import nnx
    from .nn import MambaConfig, MambaLM

    cfg = MambaConfig(vocab_size=data_lib.VOCAB_SIZE, d_model=args.d_model, n_layer=args.n_layer,
                      d_state=args.d_state, d_conv=args.d_conv, expand=args.expand)
    return MambaLM(cfg, implementation=_impl(args.implementation), rngs=nnx.Rngs(seed))


def lr_at(args, step: int, elapsed_s: float) -> float:
    """Warm-up, then cosine from lr to lr * min_lr_ratio over the run's progress."""
    progress = 0.0
    if args.steps:
        progress = max(progress, step / args.steps)
    if args.max_minutes:
        progress = max(progress, elapsed_s / (60.0 * args.max_minutes))
    progress = min(progress, 1.0)
    warm = min(1.0, (step + 1) / max(1, args.warmup))
    cos = args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return args.lr * warm * cos


def make_optimizer(args, params):
    import jax
    import optax

    def decay(path, x):  # matrices only; not A_log (a log-rate), biases, norms, D
        name = jax.tree_util.keystr(path)
        return x.ndim >= 2 and "A_log" not in name

    mask = jax.tree_util.tree_map_with_path(decay, params)
    # learning_rate 1.0: the step scales the updates by the scheduled lr (a runtime value), which
    # is what adamw does with its lr (the decoupled decay is scaled by it too).
    return optax.chain(optax.clip_by_global_norm(args.clip),
                       optax.adamw(1.0, b1=0.9, b2=0.95, weight_decay=args.weight_decay, mask=mask))


def make_train_step(graphdef, rest, tx):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params, rest)
        logits = model(batch[:, :-1])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch[:, 1:])
        return jnp.mean(nll)

    def step(params, opt_state, batch, lr):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr, updates)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def make_eval_fn(graphdef, rest):
    """Returns f(params, windows [b, l + 1] int32, row_weight [b] f32) -> (sum of nats over byte
    targets, their count), each row weighted (0 for padding rows)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    def f(params, windows, row_weight):
        model = nnx.merge(graphdef, params, rest)
        logits = model(windows[:, :-1]).astype(jnp.float32)
        tgt = windows[:, 1:]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits[..., :data_lib.VOCAB_SIZE], tgt)
        # bits per *byte*: EOS targets (file ends) are not counted
        w = (tgt < data_lib.EOS_ID).astype(jnp.float32) * row_weight[:, None]
        return jnp.sum(nll * w), jnp.sum(w)

    return jax.jit(f)


def evaluate_bpb(eval_fn, params, windows: np.ndarray, batch: int) -> float:
    """Held-out bits per byte over every window (one compiled shape: the last batch is padded with
    zero-weight rows)."""
    total, count = 0.0, 0.0
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch]
        weight = np.ones((batch,), np.float32)
        if w.shape[0] < batch:
            weight[w.shape[0]:] = 0.0
            w = np.concatenate([w, np.repeat(w[:1], batch - w.shape[0], axis=0)])
        s, c = eval_fn(params, w, weight)
        total += float(s)
        count += float(c)
    return total / max(count, 1.0) / LN2


def _save_tree(tree, path: str) -> None:
    import jax
    from safetensors.numpy import save_file

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    tensors = {}
    for i, (p, x) in enumerate(leaves):
        a = np.asarray(x)
        tensors[f"{i:05d}{jax.tree_util.keystr(p)}"] = np.ascontiguousarray(a).reshape(a.shape)  # keeps 0-d
    tmp = path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, path)


def _load_tree(like, path: str):
    import jax
    import jax.numpy as jnp
    from safetensors.numpy import load_file

    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    saved = load_file(path)
    out = []
    for i, (p, x) in enumerate(leaves):
        name = f"{i:05d}{jax.tree_util.keystr(p)}"
        if name not in saved:
            raise ValueError(f"checkpoint {path} has no tensor {name}: it was written for another model "
                             "or optimizer (different --d-model/--n-layer/...?)")
        arr = saved[name]
        if arr.shape != tuple(x.shape):
            raise ValueError(f"checkpoint {path}: {name} has shape {arr.shape}, expected {tuple(x.shape)}")
        out.append(jnp.asarray(arr, dtype=x.dtype))
    return jax.tree.unflatten(jax.tree.structure(like), out)


def save_checkpoint(out: str, params, opt_state, meta: dict) -> None:
    d = os.path.join(out, "checkpoint")
    os.makedirs(d, exist_ok=True)
    _save_tree(params, os.path.join(d, "params.safetensors"))
    _save_tree(opt_state, os.path.join(d, "opt_state.safetensors"))
    with open(os.path.join(d, "state.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(d, "state.json.tmp"), os.path.join(d, "state.json"))


def load_checkpoint(out: str, params, opt_state):
    d = os.path.join(out, "checkpoint")
    state_path = os.path.join(d, "state.json")
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"--resume: no checkpoint in {d} (state.json missing)")
    with open(state_path) as f:
        meta = json.load(f)
    params = _load_tree(params, os.path.join(d, "params.safetensors"))
    opt_state = _load_tree(opt_state, os.path.join(d, "opt_state.safetensors"))
    return params, opt_state, meta


def hf_config(cfg, extra: dict | None = None) -> dict:
    """transformers-style config.json for a MambaConfig (what `from_pretrained` reads)."""
    d = {
        "model_type": "mamba",
        "architectures": ["MambaForCausalLM"],
        "vocab_size": cfg.padded_vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "state_size": cfg.d_state,
        "conv_kernel": cfg.d_conv,
        "expand": cfg.expand,
        "intermediate_size": cfg.d_inner,
        "time_step_rank": cfg.resolved_dt_rank,
        "use_conv_bias": cfg.conv_bias,
        "use_bias": cfg.bias,
        "hidden_act": "silu",
        "layer_norm_epsilon": cfg.rms_norm_eps,
        "residual_in_fp32": cfg.residual_in_fp32,
        "tie_word_embeddings": cfg.tie_embeddings,
    }
    d.update(extra or {})
    return d


_KEEP_F32 = ("A_log", "D", "dt_bias")


def export_hf(model, folder: str, dtype: str = "bfloat16", extra_config: dict | None = None) -> int:
    """Writes folder/config.json and folder/model.safetensors (torch layout, transformers names).
    Returns the size of model.safetensors in bytes."""
    import ml_dtypes
    from flax import nnx
    from safetensors.numpy import save_file

    from .loading import checkpoint_name

    store = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
    tensors = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names, layout = checkpoint_name(tuple(path))
        arr = np.asarray(var.get_value(), dtype=np.float32)
        if layout == "T":
            arr = arr.T
        elif layout == "conv":
            arr = arr[:, None, :]  # torch Conv1d weight [e, 1, w]
        keep = str(path[-1]) in _KEEP_F32
        tensors[names[0]] = np.ascontiguousarray(arr.astype(np.float32 if keep else store))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(model.config, extra_config), f, indent=2)
        f.write("\n")
    return os.path.getsize(path)


def _args_dict(args) -> dict:
    return {k: v for k, v in vars(args).items() if not callable(v)}


def run(args) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from .loading import from_pretrained

    if not args.steps and not args.max_minutes:
        raise ValueError("give --steps and/or --max-minutes (when to stop)")
    if args.seq_len < 2 or args.batch < 1:
        raise ValueError("--seq-len must be >= 2 and --batch >= 1")
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "log.jsonl")

    def log(rec: dict):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    corpus = data_lib.ByteCorpus.load(args.data_root, args.heldout_fraction, args.max_files)
    info = corpus.summary()
    info["python"] = data_lib.python_description() if args.data_root is None else args.data_root
    print(f"data: {info['train_files']} train files ({info['train_bytes']:,} bytes), "
          f"{info['heldout_files']} held-out files ({info['heldout_bytes']:,} bytes) from {info['root']}",
          flush=True)

    model = build_model(args, args.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    tx = make_optimizer(args, params)
    opt_state = tx.init(params)
    step, elapsed0, tokens = 0, 0.0, 0
    if args.resume:
        params, opt_state, meta = load_checkpoint(args.out, params, opt_state)
        step, elapsed0, tokens = meta["step"], meta["elapsed_s"], meta["tokens"]
        print(f"resumed from {args.out}/checkpoint at step {step}", flush=True)
    backend = jax.default_backend()
    print(f"model: {n_params:,} parameters (d_model {args.d_model}, {args.n_layer} layers); "
          f"backend {backend}; batch {args.batch} x {args.seq_len} bytes", flush=True)
    log({"event": "start", "step": step, "params": n_params, "backend": backend, "data": info,
         "args": _args_dict(args)})

    train_step = make_train_step(graphdef, rest, tx)
    eval_fn = make_eval_fn(graphdef, rest)
    rng_eval = np.random.default_rng([args.seed, 1 << 30])
    eval_windows = data_lib.eval_windows(corpus.heldout, args.seq_len)
    eval_sub = eval_windows[rng_eval.permutation(eval_windows.shape[0])[:args.eval_batches * args.batch]]

    def meta_now(elapsed):
        return {"step": step, "elapsed_s": elapsed, "tokens": tokens, "args": _args_dict(args)}

    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=step, unit="step", dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter() - elapsed0
    t_log, tok_log = time.perf_counter(), tokens
    loss = None
    last_loss = float("nan")
    while True:
        elapsed = time.perf_counter() - t_start
        if (args.steps and step >= args.steps) or (args.max_minutes and elapsed >= 60 * args.max_minutes):
            break
        if args.stop_at is not None and step >= args.stop_at:
            break
        batch = data_lib.sample_batch(corpus.train, args.batch, args.seq_len,
                                      np.random.default_rng([args.seed, step]))
        lr = lr_at(args, step, elapsed)
        params, opt_state, loss = train_step(params, opt_state, jnp.asarray(batch), jnp.float32(lr))
        step += 1
        tokens += args.batch * args.seq_len
        if step % args.log_every == 0 or step == 1:
            last_loss = float(loss)  # syncs: also bounds how far the host runs ahead
            now = time.perf_counter()
            tps = (tokens - tok_log) / max(now - t_log, 1e-9)
            t_log, tok_log = now, tokens
            rec = {"step": step, "loss": last_loss, "bpb": last_loss / LN2, "lr": lr, "tokens": tokens,
                   "tok_per_s": tps, "elapsed_s": now - t_start}
            log(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.3f}", bpb=f"{last_loss / LN2:.3f}", tok_s=f"{tps:,.0f}",
                                lr=f"{lr:.2e}", refresh=False)
            else:
                print(f"step {step} loss {last_loss:.4f} ({last_loss / LN2:.3f} bits/byte) "
                      f"{tps:,.0f} tok/s lr {lr:.2e}", flush=True)
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"loss became {last_loss} at step {step}; lower --lr")
        if bar is not None:
            bar.update(1)
        if args.eval_every and step % args.eval_every == 0:
            bpb = evaluate_bpb(eval_fn, params, eval_sub, args.batch)
            log({"event": "eval", "step": step, "heldout_bpb_subset": bpb})
            (bar.write if bar is not None else print)(f"step {step}: held-out {bpb:.3f} bits/byte (subset)")
        if args.ckpt_every and step % args.ckpt_every == 0:
            save_checkpoint(args.out, params, opt_state, meta_now(time.perf_counter() - t_start))
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - t_start
    save_checkpoint(args.out, params, opt_state, meta_now(train_s))

    # Export, reload the export (what ships), and measure it on the held-out files.
    model = nnx.merge(graphdef, params, rest)
    model_dir = os.path.join(args.out, "model")
    size = export_hf(model, model_dir, args.export_dtype,
                     {"eos_token_id": data_lib.EOS_ID, "mamba_jax_tokenizer": "bytes"})
    shipped = from_pretrained(model_dir, implementation=_impl(args.implementation))
    g2, p2, r2 = nnx.split(shipped, nnx.Param, ...)
    final_windows = data_lib.eval_windows(corpus.heldout, args.seq_len, args.final_eval_tokens)
    t0 = time.perf_counter()
    final_bpb = evaluate_bpb(make_eval_fn(g2, r2), p2, final_windows, args.batch)
    metrics = {
        "heldout_bits_per_byte": final_bpb,
        "heldout_tokens_scored": int(final_windows.shape[0] * args.seq_len),
        "eval_context": args.seq_len,
        "steps": step,
        "tokens_seen": tokens,
        "train_seconds": train_s,
        "eval_seconds": time.perf_counter() - t0,
        "last_train_loss_bpb": last_loss / LN2,
        "params": n_params,
        "safetensors_bytes": size,
        "export_dtype": args.export_dtype,
        "backend": backend,
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "data": info,
        "args": _args_dict(args),
    }
    with open(os.path.join(model_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")
    log({"event": "final", **{k: v for k, v in metrics.items() if k != "args"}})
    print(f"done: {step} steps, {tokens:,} tokens in {train_s:.0f} s; held-out {final_bpb:.3f} bits/byte "
          f"(exported {args.export_dtype} weights, {size / 1e6:.1f} MB) -> {model_dir}", flush=True)
    return metrics
