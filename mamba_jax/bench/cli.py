"""`mamba-jax bench`: benchmarks on the current backend, with a progress bar, a printed table, JSON rows
and PNG figures.

    mamba-jax bench ops [--op ssd_scan,...] [--sweep] [--quick] [--impls ffi,xla]   # op timings
    mamba-jax bench generate [--cases mamba-130m:1,...] [--quick]                     # decode / prefill
    mamba-jax bench report                        # docs/results.md + docs/results/*.png from recorded rows
    mamba-jax bench [--quick ...]                 # no subcommand: generate (as before)

ops and generate write their rows to benchmarks/results/<ops|generate>-<backend>-<date>-<commit>.json
(--out) and their figures to docs/results/runs/<that file's name>/ (with --out: <out>-plots/ beside it;
--plot-dir; --no-plots): time vs
seqlen and vs batch per op (with --sweep), ms/token vs batch per model, peak memory vs prompt length.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import docs_results_dir

SUBCOMMANDS = ("ops", "generate", "report")


def _plots(rows, json_path: Path, args) -> None:
    if args.no_plots:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("# no figures: matplotlib is not installed (pip install matplotlib)")
        return
    from . import plots, results

    if args.plot_dir:
        folder = Path(args.plot_dir)
    elif args.out:  # beside the JSON file that was asked for
        folder = json_path.parent / f"{json_path.stem}-plots"
    else:
        folder = docs_results_dir() / "runs" / json_path.stem
    paths = plots.save_all(results.load_file(json_path), folder)
    print(f"# wrote {len(paths)} figures to {folder}" + ("" if paths else " (too few points for any)"))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plot-dir", default=None, help="folder of the figures (default docs/results/runs/<json name>/, or <out>-plots/ with --out)")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_ops(args) -> int:
    from . import opbench

    if args.memory_only:
        return opbench.main(_memory_argv(args))
    rows = opbench.run(args, progress=False if args.no_progress else None)
    _plots(rows, opbench.report(rows, args.out), args)
    return 0


def _memory_argv(args) -> list[str]:
    return (["--op", args.op, "--memory-only"] + (["--backend", args.backend] if args.backend else [])
            + (["--quick"] if args.quick else []))


def cmd_generate(args) -> int:
    from . import generation

    rows = generation.run(args, progress=False if args.no_progress else None)
    _plots(rows, generation.report(rows, args.out), args)
    return 0


def cmd_report(args) -> int:
    from . import report

    return report.run(args)


def build_parser(prog: str = "mamba-jax bench") -> argparse.ArgumentParser:
    from . import generation, opbench, report

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", metavar="{ops,generate,report}")
    sub.required = True
    o = sub.add_parser("ops", help="time the ops (FFI kernels vs the pure-JAX path)", description=opbench.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    opbench.add_arguments(o)
    _common(o)
    o.set_defaults(func=cmd_ops)
    g = sub.add_parser("generate", help="decode ms/token, prefill, peak memory", description=generation.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    generation.add_arguments(g)
    _common(g)
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("report", help="docs/results.md and docs/results/*.png from benchmarks/results",
                       description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_arguments(r)
    r.set_defaults(func=cmd_report)
    return p


def main(argv=None, prog: str = "mamba-jax bench") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv = ["generate"] + argv  # `mamba-jax bench [--quick ...]`: the generation benchmark, as before
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        parser.error(str(e))
    return 2


if __name__ == "__main__":
    sys.exit(main())
