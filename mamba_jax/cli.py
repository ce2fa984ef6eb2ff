"""The `mamba-jax` command line.

    mamba-jax generate --model default --prompt "def fibonacci(n):" --max-new-tokens 200
    mamba-jax generate --model state-spaces/mamba-130m-hf --prompt "Mamba is" --temperature 0.8 --top-p 0.9
    mamba-jax train --out runs/bytes --max-minutes 4
    mamba-jax eval --model default            # held-out bits per byte on this machine's stdlib
    mamba-jax bench ops|generate|report ...   # benchmarks and their figures (mamba-jax bench --help)

`--model` is "default" (the small byte-level model shipped in mamba_jax/default_model), a local
checkpoint folder (transformers *-hf or state-spaces layout) or a Hugging Face hub id. Errors that
come from the user's input (a missing path, a malformed checkpoint, a bad flag) print one line on
stderr and exit with status 1 (2 for bad flags), without a traceback; MAMBA_JAX_DEBUG=1 shows it.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
import time

from .loading import ByteTokenizer


class CLIError(Exception):
    """An error worth one line to the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def load_model(name: str, dtype: str = "float32", implementation: str = "auto"):
    """`mamba_jax.loading.load_model` with the CLI's flag values: returns (model, folder, config dict).
    Any failure becomes a one-line CLIError."""
    import jax.numpy as jnp
    from . import loading

    impl = None if implementation == "auto" else implementation
    try:
        return loading.load_model(name, dtype=getattr(jnp, dtype), implementation=impl)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise CLIError(f"model {name!r}: {_one_line(e)}") from e
    except Exception as e:  # safetensors and torch errors: all mean a bad checkpoint here
        raise CLIError(f"model {name!r}: could not load the checkpoint: {type(e).__name__}: {_one_line(e)}") from e


class _TextStream:
    """Turns streamed token ids into text on stdout as they arrive."""

    def __init__(self, tokenizer, out):
        self.tok = tokenizer
        self.out = out
        self.ids: list[int] = []
        self.printed = ""
        self.bytes_dec = codecs.getincrementaldecoder("utf-8")("replace") if isinstance(tokenizer, ByteTokenizer) else None

    def __call__(self, new_ids: list[int]):
        if not new_ids:
            return
        if self.bytes_dec is not None:
            text = self.bytes_dec.decode(bytes(t for t in new_ids if t < 256))
        else:
            self.ids.extend(new_ids)
            full = self.tok.decode(self.ids)
            if full.endswith("\ufffd"):  # an unfinished multi-byte character: wait for more tokens
                return
            text = full[len(self.printed):] if full.startswith(self.printed) else full
            self.printed = full
        self.out.write(text)
        self.out.flush()

    def finish(self):
        if self.bytes_dec is not None:
            self.out.write(self.bytes_dec.decode(b"", final=True))
        elif self.ids:
            full = self.tok.decode(self.ids)
            self.out.write(full[len(self.printed):] if full.startswith(self.printed) else "")
        self.out.write("\n")
        self.out.flush()


def _kernels_used(model) -> str:
    import jax
    from . import ops

    backend = jax.default_backend()
    if model.implementation == "xla":
        return "pure JAX (xla)"
    built = ops.cpu_available() if backend == "cpu" else ops.cuda_available() if backend == "gpu" else False
    return "FFI kernels" if built else "pure JAX (no FFI kernels built for this backend)"


def cmd_generate(args) -> int:
    import jax
    from .generate import Generator

    if args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model, folder, cfg = load_model(args.model, args.dtype, args.implementation)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise CLIError(f"no tokenizer for the model in {folder}: it has no tokenizer.json "
                       "(and is not a byte-level model)")
    ids = tokenizer.encode(args.prompt)
    if not isinstance(tokenizer, ByteTokenizer):
        ids = ids.ids
    if not ids:
        raise CLIError("--prompt is empty")
    eos = None if args.ignore_eos else cfg.get("eos_token_id")
    gen = Generator(model)
    try:  # every argument check runs here, before anything is printed or compiled
        chunks = gen.stream([ids], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, eos_token_id=eos, seed=args.seed, chunk_size=args.chunk_size)
    except (ValueError, TypeError) as e:
        raise CLIError(_one_line(e)) from e
    out = _TextStream(tokenizer, sys.stdout)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    for chunk in chunks:
        out([t for t in chunk[0] if t != eos])
    out.finish()
    s = gen.last_stats
    dev = jax.devices()[0]
    print(f"[prefill {len(ids)} tokens: {s.prefill_s * 1e3:.1f} ms | decode {s.decode_steps} tokens: "
          f"{s.decode_tokens_per_s:.1f} tokens/s | compile {s.compile_s:.1f} s | backend {jax.default_backend()} "
          f"({dev.device_kind}), {_kernels_used(model)}]", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from . import train

    try:
        train.run(args)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(_one_line(e)) from e
    return 0


def cmd_eval(args) -> int:
    from flax import nnx
    from . import data as data_lib
    from .train import evaluate_bpb, make_eval_fn

    model, folder, cfg = load_model(args.model, "float32", args.implementation)
    if cfg.get("mamba_jax_tokenizer") != "bytes":
        raise CLIError(f"mamba-jax eval measures byte-level models; {folder} is not one")
    corpus = data_lib.ByteCorpus.load(args.data_root, args.heldout_fraction)
    windows = data_lib.eval_windows(corpus.heldout, args.seq_len, args.max_tokens)
    g, p, r = nnx.split(model, nnx.Param, ...)
    t0 = time.perf_counter()
    bpb = evaluate_bpb(make_eval_fn(g, r), p, windows, args.batch)
    print(f"held-out: {bpb:.4f} bits/byte over {windows.shape[0] * args.seq_len:,} tokens "
          f"({len(corpus.heldout_files)} files of {corpus.root}, context {args.seq_len}) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(list(args.bench_args))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mamba-jax", description="Mamba language models in JAX: generate, train, evaluate, benchmark.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    g = sub.add_parser("generate", help="stream a continuation of a prompt")
    g.add_argument("--model", default="default", help="'default', a checkpoint folder, or a hub id")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--implementation", choices=["auto", "ffi", "xla"], default="auto")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    g.add_argument("--chunk-size", type=int, default=8, help="decode steps between screen updates")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at the model's EOS token")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train a byte-level model on this Python's standard library")
    from .train import add_arguments

    add_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="held-out bits per byte of a byte-level model on this Python's stdlib")
    e.add_argument("--model", default="default")
    e.add_argument("--seq-len", type=int, default=256)
    e.add_argument("--batch", type=int, default=16)
    e.add_argument("--max-tokens", type=int, default=None, help="score at most this many held-out tokens")
    e.add_argument("--data-root", default=None)
    e.add_argument("--heldout-fraction", type=float, default=0.05)
    e.add_argument("--implementation", choices=["auto", "ffi", "xla"], default="auto")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="benchmarks: `bench ops`, `bench generate`, `bench report` (`mamba-jax bench --help`)")
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after `bench` belongs to the benchmark's own parser
        args = parser.parse_args(["bench"])
        args.bench_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"mamba-jax: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("mamba-jax: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything else: still one line, the traceback on request
        if os.environ.get("MAMBA_JAX_DEBUG"):
            raise
        print(f"mamba-jax: error: {type(e).__name__}: {_one_line(e)} (MAMBA_JAX_DEBUG=1 shows the traceback)",
              file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
