"""The `mamba-jax` command line, run as a subprocess (what a user types): generation from the bundled
default model, and one clear stderr line, a non-zero exit and no traceback for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mamba_jax.loading import DEFAULT_MODEL_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MAMBA_JAX_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mamba_jax.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(r, *needles, code=None):
    assert r.returncode != 0
    if code is not None:
        assert r.returncode == code
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_default_model_is_bundled_and_small():
    folder = DEFAULT_MODEL_DIR
    size = os.path.getsize(os.path.join(folder, "model.safetensors"))
    assert size <= 20 * 1000 * 1000
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["mamba_jax_tokenizer"] == "bytes" and cfg["eos_token_id"] == 256
    assert os.path.isfile(os.path.join(folder, "MODEL_CARD.md"))


def test_generate_default_model_streams_python():
    prompt = "def fibonacci(n):"
    r = _run("generate", "--model", "default", "--prompt", prompt, "--max-new-tokens", "48")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(prompt)
    text = r.stdout[len(prompt):]
    assert len(text.encode()) >= 30  # 48 bytes unless the model ended the file (EOS)
    # Python-shaped: a line break followed by indentation, and mostly printable ASCII.
    assert "\n " in text
    assert sum(c.isprintable() or c in "\n\t" for c in text) >= 0.95 * len(text)
    # The subprocess sees the devices this process sees.
    assert "tokens/s" in r.stderr and "prefill" in r.stderr and f"backend {jax.default_backend()}" in r.stderr


def test_generate_default_model_matches_the_library():
    # The CLI's greedy text is exactly what the library produces from the same checkpoint.
    from mamba_jax import from_pretrained
    from mamba_jax.generate import generate

    prompt = "import os\n"
    r = _run("generate", "--prompt", prompt, "--max-new-tokens", "24", "--chunk-size", "5")
    assert r.returncode == 0, r.stderr
    model = from_pretrained(DEFAULT_MODEL_DIR)
    toks = generate(model, [list(prompt.encode())], 24, eos_token_id=256)[0]
    expected = bytes(t for t in toks if t < 256).decode("utf-8", "replace")
    assert r.stdout == prompt + expected + "\n"


def test_missing_model_path(tmp_path):
    missing = str(tmp_path / "no_such_model")
    r = _run("generate", "--model", missing, "--prompt", "x")
    _assert_one_line_error(r, "mamba-jax: error:", "no_such_model")


@pytest.mark.parametrize("case", ["garbage-config", "no-weights", "truncated-weights", "wrong-shapes"])
def test_malformed_checkpoint(tmp_path, case):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with open(os.path.join(DEFAULT_MODEL_DIR, "config.json")) as f:
        good_cfg = f.read()
    with open(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors"), "rb") as f:
        good_weights = f.read()
    if case == "garbage-config":
        (folder / "config.json").write_text("{not json")
    elif case == "no-weights":
        (folder / "config.json").write_text(good_cfg)
    elif case == "truncated-weights":
        (folder / "config.json").write_text(good_cfg)
        (folder / "model.safetensors").write_bytes(good_weights[:1000])
    else:
        cfg = json.loads(good_cfg)
        cfg["hidden_size"] = 256
        cfg["intermediate_size"] = 512
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "model.safetensors").write_bytes(good_weights)
    r = _run("generate", "--model", str(folder), "--prompt", "x")
    _assert_one_line_error(r, "mamba-jax: error:", str(folder))


@pytest.mark.parametrize("args,needle,code", [
    (["--top-p", "abc"], "--top-p", 2),
    (["--implementation", "cuda-please"], "--implementation", 2),
    (["--no-such-flag"], "--no-such-flag", 2),
    (["--top-p", "1.5", "--temperature", "1"], "top_p", 1),
    (["--max-new-tokens", "0"], "max-new-tokens", 1),
    (["--temperature", "-1"], "temperature", 1),
], ids=["top-p-not-a-number", "bad-implementation", "unknown-flag", "top-p-range", "max-new-tokens", "temperature"])
def test_bad_flags(args, needle, code):
    r = _run("generate", "--prompt", "x", *args)
    _assert_one_line_error(r, needle, code=code)
    assert r.stdout == ""  # rejected before anything is printed


def test_no_command_and_bad_command():
    _assert_one_line_error(_run(), "mamba-jax", code=2)
    _assert_one_line_error(_run("frobnicate"), "frobnicate", code=2)


def test_train_without_stop_condition_is_one_line(tmp_path):
    r = _run("train", "--out", str(tmp_path / "run"))
    _assert_one_line_error(r, "--steps", code=1)


def test_bench_quick_runs(tmp_path):
    out = tmp_path / "rows.json"
    r = _run("bench", "--quick", "--impls", "auto", "--out", str(out))  # the smoke run; --impls xla doubles it
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert rows and all(np.isfinite(row["ms_per_token"]) for row in rows if "ms_per_token" in row)


def test_side_by_side_table_from_recorded_rows(tmp_path):
    """benchmarks/bench_side_by_side.py matches our rows with mamba_ssm's by workload and prints the ratio
    (their ms / ours) per matched row, read back here from recorded files of made-up numbers."""
    ours = [{"source": "mamba-jax", "bench": "generate", "kind": "decode", "model": "mamba-2.8b", "batch": 1,
             "implementation": "auto", "dtype": "bfloat16", "median_ms": 2.0},
            {"source": "mamba-jax", "bench": "generate", "kind": "decode", "model": "mamba-2.8b", "batch": 64,
             "implementation": "auto", "dtype": "bfloat16", "median_ms": 5.0},
            {"source": "mamba-jax", "bench": "generate", "kind": "decode", "model": "mamba-130m", "batch": 1,
             "implementation": "auto", "dtype": "bfloat16", "median_ms": 0.5},
            {"source": "mamba-jax", "op": "selective_state_update", "case": "B64-D5120-N16", "implementation": "ffi",
             "dtype": "bfloat16", "median_ms": 0.02}]
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    profile = [{"op": "selective_state_update", "case": "B64-D5120-N16", "implementation": "ffi",
                "kernel_us_per_call": 17.0}]
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    lines = ['{"who": "mamba_ssm", "torch": "x", "gpu": "NVIDIA H200"}',
             '{"who": "mamba_ssm", "what": "decode mamba-2.8b b1", "ms": 3.0}',
             '{"who": "mamba_ssm", "what": "decode mamba-2.8b b64", "ms": 4.0}',
             '{"who": "mamba_ssm", "what": "ssu b64 d5120 n16", "ms": 0.0133}']
    (tmp_path / "theirs.jsonl").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_side_by_side.py"
    r = subprocess.run([sys.executable, str(script), "--ours", str(tmp_path / "ours.json"), "--theirs",
                        str(tmp_path / "theirs.jsonl"), "--profiles", str(tmp_path / "profile.json"),
                        "--out", str(tmp_path / "both.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"decode mamba-2.8b batch 1 \(ms/token\)\s+3\.0000\s+2\.0000\s+1\.50x", r.stdout), r.stdout
    assert re.search(r"decode mamba-2.8b batch 64 \(ms/token\)\s+4\.0000\s+5\.0000\s+0\.80x", r.stdout), r.stdout
    # an op row with the kernel time from the profile; decode rows have none
    assert re.search(r"selective_state_update B64-D5120-N16 \[ffi\] \(ms\)\s+0\.0133\s+0\.0200\s+0\.66x\s+0\.0170",
                     r.stdout), r.stdout
    assert re.search(r"decode mamba-2.8b batch 1 \(ms/token\).*1\.50x\s+-", r.stdout), r.stdout
    assert "3 rows matched, 1 at 1.0x or better, 2 behind" in r.stdout
    rows = json.loads((tmp_path / "both.json").read_text())
    assert sum(row["source"] == "mamba_ssm" for row in rows) == 3
    assert [row["kernel_ms"] for row in rows if "kernel_ms" in row] == [0.017]


def test_report_names_the_run_of_a_cross_run_pure_jax_ratio(tmp_path):
    """docs/results.md's op table: a kernel row's "vs pure JAX" ratio is plain when the pure-JAX row comes
    from the same run (file), and names the pure-JAX row's run when it was taken from another one."""
    from mamba_jax.bench import report, results as R

    def row(op, impl, ms, commit, day):
        return {"source": "mamba-jax", "kind": "op", "op": op, "case": "B1-L64-D8", "implementation": impl,
                "dtype": "bfloat16", "median_ms": ms, "device_kind": "NVIDIA H200", "git_commit": commit,
                "date": f"2026-11-{day}T00:00:00"}

    # causal_conv1d: the latest run ("new") timed only the kernel; selective_scan: one run timed both
    (tmp_path / "old.json").write_text(json.dumps([row("causal_conv1d", "ffi", 1.0, "old", 29),
                                                   row("causal_conv1d", "xla", 3.0, "old", 29)]))
    (tmp_path / "new.json").write_text(json.dumps([row("causal_conv1d", "ffi", 0.5, "new", 30),
                                                   row("selective_scan", "ffi", 0.25, "new", 30),
                                                   row("selective_scan", "xla", 0.75, "new", 30)]))
    table = report.op_table(R.load_rows([tmp_path]), "NVIDIA H200")
    lines = {(ln.split(" | ")[0], ln.split(" | ")[2]): ln for ln in table.splitlines() if ln.startswith("| ")}
    assert " | 6.00x (pure JAX: old) | " in lines[("| causal_conv1d", "ffi")], table
    assert " | 3.00x | " in lines[("| selective_scan", "ffi")], table  # same run: no run named
    assert "(pure JAX" not in lines[("| selective_scan", "ffi")], table


def test_report_decode_rows_come_from_the_latest_run_of_each_batch(tmp_path):
    """docs/results.md's decode table: a run that re-measured only batch 1 replaces the batch-1 rows and
    leaves the other batches' rows of the older run in the table (each side on its own)."""
    from mamba_jax.bench import report, results as R

    def row(source, batch, ms, commit, day):
        return {"source": source, "bench": "generate", "kind": "decode", "model": "mamba-2.8b", "batch": batch,
                "implementation": "auto" if source == "mamba-jax" else "mamba_ssm", "median_ms": ms,
                "device_kind": "NVIDIA H200", "git_commit": commit, "date": f"2026-11-{day}T00:00:00"}

    (tmp_path / "old.json").write_text(json.dumps([row("mamba-jax", 1, 2.5, "old", 29), row("mamba-jax", 64, 4.4, "old", 29),
                                                   row("mamba_ssm", 1, 3.3, "old", 29), row("mamba_ssm", 64, 4.7, "old", 29)]))
    (tmp_path / "new.json").write_text(json.dumps([row("mamba-jax", 1, 2.3, "new", 30), row("mamba_ssm", 1, 3.2, "new", 30)]))
    table = report.generation_tables(R.load_rows([tmp_path]), "NVIDIA H200")
    got = {(ln.split(" | ")[1], ln.split(" | ")[2]): (ln.split(" | ")[3], ln.split(" | ")[-1])
           for ln in table.splitlines() if ln.startswith("| mamba-2.8b")}
    assert got == {("1", "auto"): ("2.300", "new 2026-11-30 |"), ("1", "mamba_ssm"): ("3.200", "new 2026-11-30 |"),
                   ("64", "auto"): ("4.400", "old 2026-11-29 |"), ("64", "mamba_ssm"): ("4.700", "old 2026-11-29 |")}, table


def test_profile_ops_rows(tmp_path):
    """benchmarks/profile_ops.py runs the op benchmark's decode-loop program and writes one row per case
    and implementation: the untraced per-call time everywhere, and on a GPU the kernel time per call
    from the trace."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "profile_ops.py"
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, str(script), "--quick", "--op", "causal_conv1d_update", "--impls", "xla",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert rows and all(row["op"] == "causal_conv1d_update" and row["implementation"] == "xla" for row in rows)
    assert all(row["wall_us_per_call"] > 0 and row["calls"] == 4 for row in rows)
    # the host events of the traced execution, ranked by time (every backend has a host plane)
    for row in rows:
        times = [us for _, _, us in row["host_top"]]
        assert times and times == sorted(times, reverse=True) and times[0] > 0, row["host_top"]
    if jax.default_backend() == "gpu":
        assert all(0 < row["kernel_us_per_call"] for row in rows), rows


def test_bench_ops_chain_outputs_last(tmp_path):
    """`bench_ops.py --chain-outputs last`: the chained program returns only the last call's output (the
    others stay in XLA's temporary buffer) and the rows say so in their mode."""
    from mamba_jax.bench import harness

    def call(carry, x):
        return carry + 1.0, x * carry

    sets = [(jax.numpy.full((3,), float(i + 1)),) for i in range(2)]
    carry, outs = harness._chain(call, 3, "all")(sets, np.float32(1.0))
    carry_last, out_last = harness._chain(call, 3, "last")(sets, np.float32(1.0))
    assert len(outs) == 3 and float(carry) == float(carry_last) == 4.0
    np.testing.assert_array_equal(outs[-1], np.full(3, 3.0))  # call 3: set 0 (ones) x carry 3
    np.testing.assert_array_equal(out_last, outs[-1])
    # decode loops the same way: every step's output, or the last one's
    _, louts = harness._loop(call, 3, "all")(np.float32(1.0), sets[1])
    _, llast = harness._loop(call, 3, "last")(np.float32(1.0), sets[1])
    assert len(louts) == 3
    np.testing.assert_array_equal(llast, np.full(3, 6.0))  # step 3: set 1 (twos) x carry 3
    out = tmp_path / "rows.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ops.py"
    r = subprocess.run([sys.executable, str(script), "--op", "causal_conv1d", "--quick", "--impls", "xla",
                        "--no-memory", "--chain-outputs", "last", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert rows and all(row["mode"] == "chain-last" and np.isfinite(row["median_ms"]) for row in rows), rows
