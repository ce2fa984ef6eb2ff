"""Where does one decode step's time go on the GPU? A profile of `mamba_jax.generate.Generator`'s decode loop.

    python3 benchmarks/profile_decode.py --model mamba-2.8b --batch 1
    python3 benchmarks/profile_decode.py --model tiny --batch 1 --new-tokens 8 --dump-hlo /tmp/hlo   # CPU smoke

What it measures (random weights, greedy, prompts of --prompt-len tokens, --new-tokens decode steps):
  wall      one timed `generate(prompts, new_tokens + 1)` after a warm-up call: decode ms per step
            (GenerationStats.decode_s / decode_steps, as `mamba-jax bench` reports it).
  trace     one more call under `jax.profiler.trace`, read back with `jax.profiler.ProfileData`. From the
            GPU plane's stream lines: GPU activities (kernels, memcpys) per decode step, the GPU busy time
            per step (sum of their durations), the idle fraction (1 - busy / wall per step) and the top 25
            activities by time. Decode activities are the ones whose `hlo_module` stat (or annotation)
            names the decode function; where over 10% name none, the activities of a second trace, of a
            prefill-only call (`generate(prompts, 1)`), are subtracted instead. Names mentioning "graph"
            or "command buffer" are listed (work launched as CUDA graphs is traced differently, or not at all).
  --dump-hlo DIR  the optimized HLO of the compiled decode loop -> DIR/decode.hlo.txt, with counts of
            its custom-call, fusion and while instructions and of "command_buffer" mentions.
  --prefill  profile the prefill of the prompt instead (`generate(prompts, 1)`): the activities of the
            prefill function per call, against the call's wall time (e.g. --prompt-len 65536).
Without a GPU plane (CPU backend) it lists the planes and lines the trace has and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from mamba_jax import shapes
from mamba_jax.bench import model_config, random_prompts
from mamba_jax.generate import _COMPILED, Generator
from mamba_jax.nn import MambaLM

GRAPH_RE = re.compile(r"graph|command.?buffer", re.I)


# ------------------------------------------------------------------------------------ trace reading
def _name(x) -> str:
    return str(getattr(x, "name", "") or "")


def _stats(x) -> dict:
    try:
        return {k: v for k, v in getattr(x, "stats", ()) if k is not None}
    except Exception:
        return {}


def _trace(gen, prompts, n, tmp) -> tuple[object, object]:
    """Runs gen.generate(prompts, n) under the profiler -> (ProfileData, the call's GenerationStats)."""
    from jax.profiler import ProfileData

    with jax.profiler.trace(tmp):
        gen.generate(prompts, n)
    paths = sorted(Path(tmp).glob("**/*.xplane.pb"))
    if not paths:
        raise FileNotFoundError(f"no *.xplane.pb under {tmp}")
    return ProfileData.from_file(str(paths[-1])), gen.last_stats


def _module(st: dict) -> str:
    """The XLA module an activity belongs to: its hlo_module stat, else the one its annotation names."""
    if "hlo_module" in st:
        return str(st["hlo_module"])
    for v in st.values():
        m = re.search(r"hlo_module=([^,#:]+)|(jit_\w+)", str(v))
        if m:
            return m.group(1) or m.group(2)
    return ""


def _describe(pd) -> list:
    """Prints every plane with its lines (name, event count); returns the planes."""
    planes = list(getattr(pd, "planes", ()))
    for pl in planes:
        lines = list(getattr(pl, "lines", ()))
        print(f"plane {_name(pl)!r}: {len(lines)} lines")
        for ln in lines[:30]:
            print(f"    line {_name(ln)!r}: {len(list(getattr(ln, 'events', ())))} events")
        if len(lines) > 30:
            print(f"    ... {len(lines) - 30} more lines")
    return planes


def _gpu_events(planes) -> list[tuple[str, int, int, str]] | None:
    """(name, start_ns, duration_ns, XLA module) of the first GPU plane's stream-line events, or None."""
    gpu = [pl for pl in planes if "GPU" in _name(pl).upper()]
    if not gpu:
        return None
    lines = list(getattr(gpu[0], "lines", ()))
    streams = [ln for ln in lines if _name(ln).startswith("Stream")]
    if not streams:  # unknown layout: every line but the derived XLA/step ones
        streams = [ln for ln in lines if not re.match(r"XLA |Steps|Framework|Source|Launch", _name(ln))]
    print(f"GPU plane {_name(gpu[0])!r}: activity lines {[_name(ln) for ln in streams]}")
    out, shown = [], False
    for ln in streams:
        for ev in getattr(ln, "events", ()):
            st = _stats(ev)
            if not shown:
                print(f"  stats of the first activity event: { {k: str(v)[:80] for k, v in st.items()} }")
                shown = True
            out.append((_name(ev), int(getattr(ev, "start_ns", 0)), int(getattr(ev, "duration_ns", 0)),
                        _module(st)))
    return out


def _host_events(planes) -> list[tuple[str, int, int, str]]:
    """(name, start_ns, duration_ns, line) of the host planes' events, Python frames ("$...") left out.
    Events nest (an executable's run holds its thunks), so their durations overlap."""
    out = []
    for pl in planes:
        if not _name(pl).startswith("/host:"):
            continue
        for ln in getattr(pl, "lines", ()):
            for ev in getattr(ln, "events", ()):
                if not _name(ev).startswith("$"):
                    out.append((_name(ev), int(getattr(ev, "start_ns", 0)), int(getattr(ev, "duration_ns", 0)),
                                _name(ln)))
    return out


def _graph_mentions(planes) -> None:
    hits = collections.Counter()
    for pl in planes:
        for ln in getattr(pl, "lines", ()):
            if GRAPH_RE.search(_name(ln)):
                hits[f"line {_name(pl)}/{_name(ln)}"] += 1
            for ev in getattr(ln, "events", ()):
                if GRAPH_RE.search(_name(ev)) and not _name(ev).startswith("$"):  # "$": Python frames
                    hits[f"event {_name(ev)[:100]}"] += 1
    print(f"graph / command-buffer mentions in line or event names: {len(hits) or 'none'}")
    for what, n in hits.most_common(15):
        print(f"    {n:6d}  {what}")


def _aggregate(events) -> dict[str, list[int]]:
    agg: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for name, _, dur, _ in events:
        agg[name][0] += 1
        agg[name][1] += dur
    return agg


def _report(agg, steps: int, wall_ms: float, traced_wall_ms: float, what: str = "decode step") -> None:
    launches = sum(c for c, _ in agg.values())
    busy_ns = sum(t for _, t in agg.values())
    busy_ms = busy_ns / steps / 1e6
    print(f"\nper {what} ({steps} {'steps' if steps > 1 else 'call'}):")
    print(f"  GPU activities (kernel launches + copies): {launches / steps:.1f}")
    print(f"  GPU busy (sum of durations):               {busy_ms * 1e3:.1f} us")
    print(f"  wall, untraced call:                       {wall_ms * 1e3:.1f} us  -> idle {1 - busy_ms / wall_ms:.1%}")
    print(f"  wall, traced call:                         {traced_wall_ms * 1e3:.1f} us  -> idle "
          f"{1 - busy_ms / traced_wall_ms:.1%}")
    print(f"\ntop 25 by total time (per step):\n  {'us/step':>9} {'%busy':>6} {'count':>6} {'mean us':>8}  name")
    for name, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"  {t / steps / 1e3:9.2f} {t / max(busy_ns, 1):6.1%} {c / steps:6.2f} {t / max(c, 1) / 1e3:8.2f}  {name[:110]}")


def profile_prefill(gen, prompts, wall_ms) -> None:
    """The prefill call's GPU activities (module name holding "prefill"), per call."""
    with tempfile.TemporaryDirectory() as tmp:
        pd, st = _trace(gen, prompts, 1, tmp)
        events = _gpu_events(list(pd.planes))
        if events is None:
            print("no GPU plane in the trace (backend %s): nothing more to report" % jax.default_backend())
            return
        pre = [e for e in events if "prefill" in e[3]] or events
        print(f"prefill activities: {len(pre)} of {len(events)} (picked by XLA module)")
        _report(_aggregate(pre), 1, wall_ms, st.prefill_s * 1e3, what="prefill call")


def profile(gen, prompts, n, wall_ms) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pd, st = _trace(gen, prompts, n, tmp)
        planes = _describe(pd)
        _graph_mentions(planes)
        events = _gpu_events(planes)
        if events is None:
            print("no GPU plane in the trace (backend %s): nothing more to report" % jax.default_backend())
            return
        steps, traced_ms = st.decode_steps, st.decode_s / max(st.decode_steps, 1) * 1e3
        modules = collections.Counter(m for *_, m in events)
        print(f"XLA module of the activities: {dict(modules.most_common(10))}")
        if modules[""] <= 0.1 * len(events):  # (nearly) every activity names its module
            dec = [e for e in events if "decode" in e[3]]
            if dec:
                span = max(s + d for _, s, d, _ in dec) - min(s for _, s, _, _ in dec)
                print(f"decode activities picked by XLA module; first-to-last span {span / steps / 1e3:.1f} us/step")
            agg = _aggregate(dec)
        else:
            print("activities without an XLA module: subtracting a prefill-only call's trace")
            with tempfile.TemporaryDirectory() as tmp2:
                pre = _gpu_events(list(_trace(gen, prompts, 1, tmp2)[0].planes)) or []
            agg = _aggregate(events)
            for name, (c, t) in _aggregate(pre).items():
                agg[name][0] -= c
                agg[name][1] -= t
            agg = {k: v for k, v in agg.items() if v[0] > 0}
        _report(agg, steps, wall_ms, traced_ms)


# ------------------------------------------------------------------------------------------- HLO dump
def dump_hlo(out_dir: str) -> None:
    decode = [exe for key, exe in _COMPILED.items() if key[0] == "decode"]
    if not decode:
        print("no compiled decode function in mamba_jax.generate._COMPILED")
        return
    text = decode[-1].as_text()
    path = Path(out_dir) / "decode.hlo.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    count = lambda op: len(re.findall(rf"\s{op}\(", text))  # noqa: E731  (instructions: "= type op(")
    print(f"\nwrote {path} ({len(text.splitlines())} lines): custom-call {count('custom-call')}, "
          f"fusion {count('fusion')}, while {count('while')}, 'command_buffer' mentions {text.count('command_buffer')}")
    targets = collections.Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    for t, n in targets.most_common():
        print(f"    custom-call {t}: {n}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mamba-130m", choices=["tiny", "tiny2", *shapes.ALL])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--impl", default="auto", choices=["auto", "xla"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--new-tokens", type=int, default=32, help="decode steps per call")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--dump-hlo", metavar="DIR", default=None, help="write DIR/decode.hlo.txt and count its ops")
    p.add_argument("--prefill", action="store_true", help="profile the prefill call instead of the decode loop")
    args = p.parse_args(argv)

    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}", flush=True)
    cfg = model_config(args.model)
    dtype = getattr(jnp, args.dtype)
    model = MambaLM(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    model.implementation = None if args.impl == "auto" else args.impl
    gen = Generator(model)
    prompts = random_prompts(args.batch, args.prompt_len, cfg.vocab_size, seed=args.batch)
    if args.prefill:
        for _ in range(3):  # compile, then two timed calls: the second's wall time is reported
            gen.generate(prompts, 1)
        wall_ms = gen.last_stats.prefill_s * 1e3
        print(f"{args.model} batch {args.batch} prompt {args.prompt_len} {args.impl} {args.dtype}: prefill "
              f"{wall_ms:.1f} ms", flush=True)
        try:
            profile_prefill(gen, prompts, wall_ms)
        except Exception as e:  # the ProfileData API moves between jax versions
            print(f"trace parsing failed: {type(e).__name__}: {e}")
        return 0
    n = args.new_tokens + 1
    gen.generate(prompts, n)  # warm-up: compiles prefill and the decode loop
    gen.generate(prompts, n)
    s = gen.last_stats
    wall_ms = s.decode_s / s.decode_steps * 1e3
    print(f"{args.model} batch {args.batch} {args.impl} {args.dtype}: {wall_ms:.3f} ms/token "
          f"({s.decode_steps} steps, prefill {s.prefill_s * 1e3:.1f} ms)", flush=True)
    if args.dump_hlo:
        dump_hlo(args.dump_hlo)
    print()
    try:
        profile(gen, prompts, n, wall_ms)
    except Exception as e:  # the ProfileData API moves between jax versions
        print(f"trace parsing failed: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
