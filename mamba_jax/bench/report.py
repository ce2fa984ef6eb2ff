"""docs/results.md's tables and docs/results/*.png from the recorded rows: `mamba-jax bench report`
(or `python benchmarks/plots.py`).

The text of docs/results.md outside the markers `<!-- results:begin -->` and `<!-- results:end -->`
is written by hand (the method); between them this module writes, for one device (default: the
NVIDIA H200 runs), the figures and one table per kind of measure, from the latest run of each op
and model, each row beside its floor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _root, docs_results_dir, results as R

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def _ratio(num, den):
    return f"{num / den:.2f}x" if num and den else "-"


def _vs_pure_jax(base: dict | None, row: dict) -> str:
    """The pure-JAX row's time over `row`'s; when the two come from different runs (files), the ratio
    names the pure-JAX row's run, since a ratio across runs carries the machines' run-to-run spread."""
    if base is None:
        return "-"
    ratio = _ratio(base["median_ms"], row["median_ms"])
    if base.get("run") == row.get("run") or ratio == "-":
        return ratio
    return f"{ratio} (pure JAX: {base.get('git_commit') or base.get('run')})"


def op_table(rows: list[dict], device: str) -> str:
    """The latest run of each op on `device`: every case and implementation, with the floor."""
    ops = sorted({r["op"] for r in rows if r["kind"] == "op" and r.get("device_kind") == device
                  and r.get("op") not in (None, "copy") and not r["op"].endswith("_metal_path")})
    lines = ["| op | case | impl | median ms | GB/s | floor ms | floor / median | vs pure JAX | vs mamba_ssm | run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for op in ops:
        ours, theirs = R.comparison(rows, op, device)
        base = {r["case"]: r for r in ours if r["implementation"] in ("xla", "assoc")}
        ssm = {r["case"]: r["median_ms"] for r in theirs}
        for r in sorted(ours + theirs, key=lambda r: (R.case_sort_key(r["case"]), r["source"], r["implementation"])):
            if r["implementation"] == "copy":
                continue
            fl = R.floor_ms(r)
            gbs = (r["bytes_moved"] / r["median_ms"] / 1e6) if r.get("bytes_moved") else None
            mine = r["source"] == "mamba-jax" and r["implementation"] == "ffi"
            lines.append(f"| {op} | {r['case']} | {r['implementation']} | {_f(r['median_ms'], '{:.4f}')} | "
                         f"{_f(gbs, '{:.0f}')} | {_f(fl, '{:.3g}')} | {_ratio(fl, r['median_ms'])} | "
                         f"{_vs_pure_jax(base.get(r['case']), r) if mine else '-'} | "
                         f"{_ratio(ssm.get(r['case']), r['median_ms']) if mine else '-'} | "
                         f"{r['git_commit'] or r.get('recorded_in') or '?'} {str(r.get('date'))[:10]} |")
    return "\n".join(lines)


def generation_tables(rows: list[dict], device: str) -> str:
    gen = [r for r in rows if r["kind"] in ("decode", "prefill") and r.get("device_kind") == device]
    models = sorted({r["model"] for r in gen})
    dec = ["| model | batch | impl | ms/token | tokens/s | floor ms/token | floor / median | peak GB | run |",
           "|---|---|---|---|---|---|---|---|---|"]
    pre = ["| model | prompt tokens | impl | prefill ms | peak GB (process-wide) | run |", "|---|---|---|---|---|---|"]
    for model in models:
        # Each (kind, batch, prompt length) from the latest run that measured it, on each side: a run that
        # re-measured only some batches does not hide the others.
        cases = {(r["kind"], r.get("batch"), r.get("prompt_len")) for r in gen if r["model"] == model}
        picked = [r for kind, batch, plen in cases for source in ("mamba-jax", "mamba_ssm")
                  for r in R.latest_run(gen, model=model, source=source, kind=kind, batch=batch, prompt_len=plen)]
        for r in sorted(picked, key=lambda r: (r["kind"], r.get("batch") or 0, r.get("prompt_len") or 0,
                                               r["implementation"])):
            run = f"{r['git_commit'] or r.get('recorded_in') or '?'} {str(r.get('date'))[:10]}"
            peak = _f(r["peak_bytes_in_use"] / 1e9, "{:.2f}") if r.get("peak_bytes_in_use") else "-"
            if r["kind"] == "decode":
                fl = R.floor_ms(r)
                tps = r.get("tokens_per_s") or r["batch"] * 1e3 / r["median_ms"]
                dec.append(f"| {model} | {r['batch']} | {r['implementation']} | {r['median_ms']:.3f} | {tps:.0f} | "
                           f"{_f(fl)} | {_ratio(fl, r['median_ms'])} | {peak} | {run} |")
            else:
                pre.append(f"| {model} | {r['prompt_len']} | {r['implementation']} | {r['median_ms']:.1f} | {peak} | {run} |")
    return "### Decode\n\n" + "\n".join(dec) + "\n\n### Prefill\n\n" + "\n".join(pre)


def build(rows: list[dict], device: str, fig_dir: Path, doc_dir: Path) -> str:
    """Writes the figures to fig_dir and returns the markdown between the markers."""
    from . import plots

    paths = plots.save_all(rows, fig_dir, device=device)
    rel = lambda p: Path(p).resolve().relative_to(doc_dir.resolve()).as_posix() if Path(p).resolve().is_relative_to(
        doc_dir.resolve()) else str(p)
    figs = "\n".join(f"![{Path(p).stem}]({rel(p)})" for p in paths)
    files = sorted({r["file"] for r in rows if r.get("device_kind") == device})
    return (f"Device: {device}. Generated by `python benchmarks/plots.py` from {len(files)} files of "
            f"benchmarks/results/ ({', '.join(files)}).\n\n"
            f"### Ops\n\n{op_table(rows, device)}\n\n{generation_tables(rows, device)}\n\n### Figures\n\n{figs}\n")


def write(doc: Path, body: str) -> None:
    text = doc.read_text() if doc.exists() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", nargs="*", default=None, help="result files or folders (default benchmarks/results)")
    p.add_argument("--device", default="NVIDIA H200", help="the device whose runs are reported")
    p.add_argument("--fig-dir", default=None, help="folder of the PNGs (default docs/results)")
    p.add_argument("--doc", default=None, help="markdown file whose marked section is rewritten (default docs/results.md)")


def run(args) -> int:
    rows = R.load_rows(args.results)
    devs = R.devices(rows)
    if args.device not in devs:
        raise ValueError(f"no rows of {args.device!r} in the results; devices there: {', '.join(devs)}")
    doc = Path(args.doc) if args.doc else _root() / "docs" / "results.md"
    fig_dir = Path(args.fig_dir) if args.fig_dir else docs_results_dir()
    for old in fig_dir.glob("*.png"):  # figures of ops or models no longer reported go away
        old.unlink()
    body = build(rows, args.device, fig_dir, doc.parent)
    write(doc, body)
    print(f"wrote {doc} and {len(list(fig_dir.glob('*.png')))} figures in {fig_dir}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mamba-jax bench report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))
