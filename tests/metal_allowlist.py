"""What the Metal path may contain: the StableHLO operations and element types that Apple's jax-metal
plugin is expected to compile, each with the reason it is here, and a checker for lowered programs.

This is the one place that says what "Metal-safe" means for mamba_jax. tests/test_metal_path.py
lowers every op, the model and generation with ``implementation="xla"`` (and the
``implementation=None`` default branch, lowered for the "METAL" platform), tests/test_sampling.py the
sampler, and both run `check_stablehlo` on the text. Adding an entry here is a claim about
jax-metal: give the reason.

Sources for the claims (nothing here was run on a Mac by this project):
  * jax-metal 0.1.1 (Oct 2024, the last release; works with jax/jaxlib up to 0.5.0) lowers StableHLO
    to MPSGraph and cannot lower custom calls at all.
  * MPSGraph tensors are float16, bfloat16, float32, int32 or int64 (the plugin's own error message,
    jax issue #24867, rejecting a ui32 result); float64 and complex are not supported.
  * Reported broken or missing there: `pad` with interior padding (what `lax.associative_scan`
    emits), cumsum/cumprod lowered through `reduce_window`, variadic reductions (argmax/argmin),
    clz and popcnt, shifts (jax issue: 'mhlo.shift_right_arithmetic' failed to legalize),
    `rng_bit_generator`, and some `lax.cond` shapes (jax issue #21601).
  * Reported working: `while` (scan/fori with a static trip count), elementwise math, `dot_general`,
    single-operand `reduce`, gather/scatter, static and dynamic slices, concatenate.
"""

from __future__ import annotations

import dataclasses
import re

# ------------------------------------------------------------------------------------------ element types
ALLOWED_ELEMENT_TYPES = {
    "f32": "the math and state dtype; native in MPSGraph",
    "f16": "an activation dtype; native in MPSGraph",
    "bf16": "an activation dtype; MPSGraph has bfloat16 (macOS 14+)",
    "i32": "loop counters, token ids, iota and argmax indices; native in MPSGraph",
    "i1": "predicates of compare/select and of while conditions (MPSGraph bool)",
}
# Named so that the failure message can say why (anything else is simply "not in the allow-list").
FORBIDDEN_ELEMENT_TYPES = {
    "f64": "no float64 on Metal",
    "complex": "no complex types on Metal",
    "ui32": "MPSGraph has no uint32 tensors (jax issue #24867); jax.random's threefry and bit tricks on "
            "float bit patterns produce it",
    "i64": "int64 exists in MPSGraph but nothing in mamba_jax needs it; its presence means x64 leaked in",
}

# ------------------------------------------------------------------------------------------ operations
ALLOWED_OPS = {
    # structure
    "func.func": "function definitions (jax outlines helpers as private functions)",
    "func.call": "calls of those private functions; inlined by the plugin's MLIR pipeline",
    "func.return": "function return",
    "stablehlo.return": "region terminator (while/reduce/case bodies)",
    "stablehlo.while": "lax.scan / fori_loop / while_loop with a static trip count: supported",
    "stablehlo.constant": "literals",
    "stablehlo.iota": "index vectors (argmax, masks)",
    # data movement
    "stablehlo.broadcast_in_dim": "broadcasting",
    "stablehlo.reshape": "reshapes",
    "stablehlo.transpose": "axis permutations",
    "stablehlo.convert": "dtype casts among the allowed element types",
    "stablehlo.slice": "static slices",
    "stablehlo.dynamic_slice": "scan inputs sliced per step: supported",
    "stablehlo.dynamic_update_slice": "scan outputs written per step, token buffers: supported",
    "stablehlo.concatenate": "exterior padding is done by concatenation (conv history, chunk padding)",
    "stablehlo.gather": "embedding lookup: supported",
    "stablehlo.scatter": "gradient of gather (embedding backward): supported",
    "stablehlo.select": "jnp.where",
    "stablehlo.pad": "exterior padding only (checked: interior padding is rejected); gradients of slices",
    # math
    "stablehlo.add": "elementwise math",
    "stablehlo.subtract": "elementwise math",
    "stablehlo.multiply": "elementwise math",
    "stablehlo.divide": "elementwise math",
    "stablehlo.negate": "elementwise math",
    "stablehlo.abs": "elementwise math",
    "stablehlo.maximum": "elementwise math",
    "stablehlo.minimum": "elementwise math",
    "stablehlo.clamp": "elementwise math",
    "stablehlo.exponential": "elementwise math (decays exp(dt A), softmax)",
    "stablehlo.exponential_minus_one": "elementwise math",
    "stablehlo.log": "elementwise math",
    "stablehlo.log_plus_one": "elementwise math (softplus)",
    "stablehlo.logistic": "elementwise math (sigmoid in silu)",
    "stablehlo.tanh": "elementwise math",
    "stablehlo.sqrt": "elementwise math",
    "stablehlo.rsqrt": "elementwise math (RMSNorm)",
    "stablehlo.power": "elementwise math",
    "stablehlo.sign": "elementwise math",
    "stablehlo.floor": "elementwise math",
    "stablehlo.is_finite": "elementwise predicate",
    "stablehlo.compare": "elementwise comparison -> i1",
    "stablehlo.and": "logical and of i1 masks",
    "stablehlo.or": "logical or of i1 masks",
    "stablehlo.not": "logical not of i1 masks",
    "stablehlo.dot_general": "matmuls (projections, LM head): supported",
    "stablehlo.reduce": "single-operand reductions only (checked: variadic reduce is rejected)",
}

# Allowed only where the caller says so (see `check_stablehlo(allow_case=...)`).
CONDITIONAL_OPS = {
    "stablehlo.case": "emitted by lax.platform_dependent (implementation=None) with a branch index "
                      "that is a constant once lowered for one platform; jax-metal had bugs with some "
                      "lax.cond shapes (jax #21601), so implementation='xla' must not contain it",
}

FORBIDDEN_OPS = {
    "stablehlo.custom_call": "jax-metal cannot lower custom calls (FFI kernels, cusolver, ...)",
    "stablehlo.reduce_window": "cumsum/cumprod lower through it; broken on jax-metal (use a matmul or a scan)",
    "stablehlo.sort": "avoided: sorting is slow or missing on jax-metal (top-k/top-p thresholds use bisection)",
    "stablehlo.rng_bit_generator": "ui32/i64 state and output; unsupported on jax-metal",
    "stablehlo.count_leading_zeros": "clz: unsupported on jax-metal",
    "stablehlo.popcnt": "popcnt: unsupported on jax-metal",
    "stablehlo.shift_left": "integer shifts failed to legalize on jax-metal",
    "stablehlo.shift_right_logical": "integer shifts failed to legalize on jax-metal",
    "stablehlo.shift_right_arithmetic": "integer shifts failed to legalize on jax-metal",
    "stablehlo.bitcast_convert": "reinterprets bits, usually to ui32; not needed on the Metal path",
    "stablehlo.fft": "complex types",
    "stablehlo.all_reduce": "collectives: one device on Metal",
    "stablehlo.all_gather": "collectives: one device on Metal",
    "stablehlo.reduce_scatter": "collectives: one device on Metal",
    "stablehlo.collective_permute": "collectives: one device on Metal",
    "stablehlo.infeed": "host transfers inside the program",
    "stablehlo.outfeed": "host transfers inside the program",
}


# ------------------------------------------------------------------------------------------ checker
@dataclasses.dataclass(frozen=True)
class Violation:
    line: int  # 1-based line in the StableHLO text
    what: str  # the op or element type
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}: {self.why}"


# An op at the start of a statement: "%x = stablehlo.add", "%x:2 = stablehlo.while(",
# "%x = \"stablehlo.case\"(", "stablehlo.return", "func.func public @main(".
_OP_RE = re.compile(r'^\s*(?:%[\w#.:]+(?:\s*,\s*%[\w#.:]+)*\s*=\s*)?"?([a-z_]+\.[a-z_0-9.]+)"?[\s(<{:@]')
_RESULTS_RE = re.compile(r'^\s*%[\w.]+:(\d+)\s*=')
_APPLIES_RE = re.compile(r'\bapplies\s+([a-z_]+\.[a-z_0-9]+)')
_TENSOR_RE = re.compile(r'tensor<([^<>]*(?:<[^<>]*>)?[^<>]*)>')
_INTERIOR_RE = re.compile(r'interior\s*=\s*\[([^\]]*)\]')
_OTHER_TYPES_RE = re.compile(r'!stablehlo\.token|\bcomplex<')


def _element_type(tensor_body: str) -> str:
    # "2x3xf32" -> "f32"; "f32" -> "f32"; "4x!quant.uniform<...>" -> that.
    body = tensor_body.split(",")[0].strip()  # drop an encoding attribute
    parts = body.split("x")
    # A dimension is digits or "?"; the element type is what follows the last dimension.
    i = 0
    while i < len(parts) - 1 and (parts[i].isdigit() or parts[i] == "?"):
        i += 1
    return "x".join(parts[i:])


def used_ops(text: str) -> set[str]:
    """The set of operation names in a StableHLO module's text (reducer bodies included)."""
    ops = set()
    for line in text.splitlines():
        m = _OP_RE.match(line)
        if m:
            ops.add(m.group(1))
        elif re.match(r'^\s*return\b', line):
            ops.add("func.return")
        ops.update(_APPLIES_RE.findall(line))
    return ops


def check_stablehlo(text: str, *, allow_case: bool = False) -> list[Violation]:
    """Returns every violation of the allow-list in a lowered module's text (empty when clean).

    Checks each operation (name in ALLOWED_OPS, or CONDITIONAL_OPS when allowed), each tensor element
    type (in ALLOWED_ELEMENT_TYPES), that `pad` has no interior padding, that `reduce` has one
    operand, and that nothing mentions custom_call.
    """
    out: list[Violation] = []
    seen_types: set[tuple[str, int]] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        names = []
        m = _OP_RE.match(line)
        if m:
            names.append(m.group(1))
        elif re.match(r'^\s*return\b', line):
            names.append("func.return")
        names += _APPLIES_RE.findall(line)
        for name in names:
            if name in ALLOWED_OPS:
                pass
            elif name in CONDITIONAL_OPS and allow_case:
                pass
            elif name in CONDITIONAL_OPS:
                out.append(Violation(lineno, name, CONDITIONAL_OPS[name]))
            elif name in FORBIDDEN_OPS:
                out.append(Violation(lineno, name, FORBIDDEN_OPS[name]))
            else:
                out.append(Violation(lineno, name, "not in the allow-list (tests/metal_allowlist.py)"))
        if m and m.group(1) == "stablehlo.pad":
            im = _INTERIOR_RE.search(line)
            if im is None or any(v.strip() not in ("", "0") for v in im.group(1).split(",")):
                out.append(Violation(lineno, "stablehlo.pad",
                                     "interior padding (lax.associative_scan emits it): unsupported on jax-metal"))
        if m and m.group(1) == "stablehlo.reduce":
            rm = _RESULTS_RE.match(line)
            if line.count("init:") > 1 or (rm is not None and int(rm.group(1)) > 1):
                out.append(Violation(lineno, "stablehlo.reduce",
                                     "variadic reduce (argmax/argmin style): unsupported on jax-metal"))
        if "custom_call" in line and not (m and m.group(1) == "stablehlo.custom_call"):
            out.append(Violation(lineno, "custom_call", FORBIDDEN_OPS["stablehlo.custom_call"]))
        for body in _TENSOR_RE.findall(line):
            et = _element_type(body)
            if et in ALLOWED_ELEMENT_TYPES or (et, lineno) in seen_types:
                continue
            seen_types.add((et, lineno))
            key = "complex" if et.startswith("complex") else et
            why = FORBIDDEN_ELEMENT_TYPES.get(key, "element type not in the allow-list")
            out.append(Violation(lineno, f"element type {et}", why))
        om = _OTHER_TYPES_RE.search(line)
        if om and "tensor<complex" not in line:
            out.append(Violation(lineno, om.group(0), "type not in the allow-list"))
    return out


def format_violations(violations: list[Violation], text: str, limit: int = 20) -> str:
    """A readable report: each violation with its line of StableHLO (first `limit`)."""
    lines = text.splitlines()
    rows = []
    for v in violations[:limit]:
        src = lines[v.line - 1].strip() if 0 < v.line <= len(lines) else ""
        rows.append(f"  {v}\n      {src[:200]}")
    more = len(violations) - limit
    if more > 0:
        rows.append(f"  ... and {more} more")
    return "\n".join(rows)
