"""matplotlib figures of benchmark rows (normalised by mamba_jax.bench.results).

  op_sweep(rows, op, axis)   time vs seqlen or vs batch of one op, one line per implementation, the
                             floor (bytes and flops at the device's peaks) dotted
  op_bars(rows, ops)         each case of the latest run of each op: ffi vs the pure-JAX path vs mamba_ssm
  decode(rows)               ms/token vs batch per model
  memory(rows)               peak device memory vs prompt length (prefill), per model
  save_all(rows, folder)     every figure the rows allow, as PNGs; returns their paths

Every figure's title carries the rows' GPU, dtypes, commits and dates (results.label). matplotlib is
imported on first use (a test/dev dependency), with the Agg backend unless one is already chosen.
"""

from __future__ import annotations

from pathlib import Path

from . import results as R

STYLE = {"ffi": ("C0", "o", "-"), "auto": ("C0", "o", "-"), "xla": ("C1", "s", "-"), "assoc": ("C2", "^", "--"),
         "lax.scan": ("C4", "v", "--"), "copy": ("0.5", "x", ":"), "mamba_ssm": ("C3", "D", "-")}
NAMES = {"ffi": "mamba-jax (FFI kernel)", "auto": "mamba-jax (FFI kernels)", "xla": "pure-JAX path",
         "assoc": "pure JAX, associative scan", "lax.scan": "pure JAX, lax.scan", "copy": "copy of the activations",
         "mamba_ssm": "mamba_ssm"}


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:
            pass
    import matplotlib.pyplot as plt

    return plt


def _series(rows, x_key):
    """{implementation: sorted [(x, median_ms, row)]}"""
    out: dict[str, list] = {}
    for r in rows:
        if r.get(x_key) is not None:
            out.setdefault(r["implementation"], []).append((r[x_key], r["median_ms"], r))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def sweep_rows(rows: list[dict], op: str, axis: str) -> list[dict]:
    """The rows of `op` along `axis` ("seqlen" or "batch") from its latest run that has >= 2 points
    along it with every other size fixed (plus mamba_ssm rows of the same device and sizes)."""
    ours = [r for r in rows if r["kind"] == "op" and r.get("op") == op and r["source"] != "mamba_ssm"
            and r.get("shape") and r["shape"].get(axis) is not None]
    best, best_key = [], None
    for run in sorted({r["run"] for r in ours}, key=lambda run: R.run_date([r for r in ours if r["run"] == run])):
        groups: dict[tuple, list] = {}
        for r in (r for r in ours if r["run"] == run):
            fixed = tuple(sorted((k, v) for k, v in r["shape"].items() if k != axis)) + (r["dtype"], r.get("mode"))
            groups.setdefault(fixed, []).append(r)
        for fixed, g in groups.items():
            if len({r["shape"][axis] for r in g}) >= 2 and len(g) >= len(best):
                best, best_key = g, fixed
    if not best:
        return []
    dev = best[0].get("device_kind")
    fixed_shape = {k: v for k, v in best_key[:-2]}
    theirs = [r for r in rows if r["source"] == "mamba_ssm" and r.get("op") == op and r.get("device_kind") == dev
              and r.get("shape") and {k: v for k, v in r["shape"].items() if k != axis} == fixed_shape]
    return best + theirs


def op_sweep(rows: list[dict], op: str, axis: str, ax=None):
    """Time per call vs `axis`; returns the Axes, or None when the rows have no such sweep."""
    sel = sweep_rows(rows, op, axis)
    if not sel:
        return None
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    for impl, pts in _series([dict(r, **{axis: r["shape"][axis]}) for r in sel], axis).items():
        color, marker, ls = STYLE.get(impl, ("k", ".", "-"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ls=ls, color=color,
                label=NAMES.get(impl, impl))
    floor = sorted({(r["shape"][axis], R.floor_ms(r)) for r in sel if r["implementation"] in ("ffi", "xla")
                    and R.floor_ms(r)})
    if floor:
        ax.plot([f[0] for f in floor], [f[1] for f in floor], ls=":", color="k", lw=1,
                label="floor: bytes & flops at peak")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel("ms per call (median)")
    fixed = {k: v for k, v in sel[0]["shape"].items() if k != axis}
    ax.set_title(f"{op} vs {axis}  ({sel[0].get('model') or ''} {fixed})\n{R.label(sel)}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def op_bars(rows: list[dict], ops, device: str | None = None):
    """One panel per op: each case of the op's latest run (on `device`), one bar per implementation,
    mamba_ssm's rows of the same cases beside them. Returns the Figure (None: no rows)."""
    panels = []
    for op in ops:
        ours, theirs = R.comparison(rows, op, device)
        ours = [r for r in ours if r["implementation"] != "copy"]
        if ours:
            panels.append((op, sorted({r["case"] for r in ours}, key=R.case_sort_key), ours + theirs))
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.9 * len(panels)), squeeze=False)
    for ax, (op, cases, sel) in zip(axes[:, 0], panels):
        impls = [i for i in STYLE if any(r["implementation"] == i for r in sel)]
        impls += sorted({r["implementation"] for r in sel} - set(impls))
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            ys = [next((r["median_ms"] for r in sel if r["case"] == c and r["implementation"] == impl), 0)
                  for c in cases]
            ax.bar([i + j * width for i in range(len(cases))], ys, width, label=NAMES.get(impl, impl),
                   color=STYLE.get(impl, ("0.3",))[0])
        floors = [next((R.floor_ms(r) for r in sel if r["case"] == c and R.floor_ms(r)), None) for c in cases]
        for i, f in enumerate(floors):
            if f:
                ax.hlines(f, i - width / 2, i + 0.8 - width / 2, colors="k", linestyles=":", lw=1.2,
                          label="floor" if i == 0 else None)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms per call")
        ax.set_title(f"{op}\n{R.label(sel)}", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def decode(rows: list[dict], device: str | None = None):
    """ms/token vs batch, one panel per model, lines per implementation (latest run of each model)."""
    dec = [r for r in rows if r["kind"] == "decode" and (device is None or r.get("device_kind") == device)]
    models = sorted({r["model"] for r in dec if r["source"] != "mamba_ssm"})
    if not models:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        ours = R.latest_run(dec, model=model, source="mamba-jax")
        dev = ours[0].get("device_kind")
        theirs = R.latest_run(dec, model=model, source="mamba_ssm", device_kind=dev)
        sel = ours + theirs
        for impl, pts in _series(sel, "batch").items():
            color, marker, ls = STYLE.get(impl, ("k", ".", "-"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ls=ls, color=color,
                    label=NAMES.get(impl, impl))
        floor = sorted({(r["batch"], R.floor_ms(r)) for r in ours if R.floor_ms(r)})
        if floor:
            ax.plot([f[0] for f in floor], [f[1] for f in floor], ls=":", color="k", lw=1,
                    marker="." if len(floor) == 1 else None, label="floor: weights + 2 x cache at peak")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch"] for r in sel}), [str(b) for b in sorted({r["batch"] for r in sel})])
        ax.set_xlabel("batch")
        ax.set_ylabel("ms per token (decode step of the batch)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"decode {model}\n{R.label(sel)}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def memory(rows: list[dict], device: str | None = None):
    """Peak device memory vs prompt length (prefill at batch 1), per model and implementation."""
    pre = [r for r in rows if r["kind"] == "prefill" and r.get("peak_bytes_in_use")
           and (device is None or r.get("device_kind") == device)]
    if not pre:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (model, impl) in sorted({(r["model"], r["implementation"]) for r in pre}):
        pts = {}
        for r in sorted(pre, key=lambda r: str(r.get("date"))):  # the latest row per prompt length
            if r["model"] == model and r["implementation"] == impl:
                pts[r["prompt_len"]] = r["peak_bytes_in_use"] / 1e9
        xs = sorted(pts)
        color, marker, ls = STYLE.get(impl, ("k", ".", "-"))
        ax.plot(xs, [pts[x] for x in xs], marker=marker, ls=ls, label=f"{model} {NAMES.get(impl, impl)}")
    weights = {r["model"]: r["weights_bytes"] for r in pre if r.get("weights_bytes")}
    for model, w in sorted(weights.items()):
        ax.axhline(w / 1e9, ls=":", lw=1, color="0.4")
        ax.annotate(f"{model} weights", (ax.get_xlim()[0], w / 1e9), fontsize=7, va="bottom", color="0.3")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt length (batch 1)")
    ax.set_ylabel("peak device memory, GB (process-wide)")
    ax.set_title(f"prefill peak memory\n{R.label(pre)}", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_all(rows: list[dict], folder, prefix: str = "", device: str | None = None) -> list[Path]:
    """Writes every figure the rows allow to `folder` as PNGs: <prefix>ops.png, <prefix><op>-vs-seqlen.png,
    <prefix><op>-vs-batch.png, <prefix>decode.png, <prefix>memory.png. Returns the paths written."""
    plt = _plt()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if device:
        rows = [r for r in rows if r.get("device_kind") == device]
    out = []

    def save(fig, name):
        path = folder / f"{prefix}{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        out.append(path)

    ops = sorted({r["op"] for r in rows if r["kind"] == "op" and r.get("op") not in (None, "copy")})
    fig = op_bars(rows, [op for op in ops if not op.endswith("_metal_path")])
    if fig is not None:
        save(fig, "ops")
    for op in ops:
        for axis in ("seqlen", "batch"):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            if op_sweep(rows, op, axis, ax) is None:
                plt.close(fig)
                continue
            fig.tight_layout()
            save(fig, f"{op}-vs-{axis}")
    for name, make in (("decode", decode), ("memory", memory)):
        fig = make(rows)
        if fig is not None:
            save(fig, name)
    return out
