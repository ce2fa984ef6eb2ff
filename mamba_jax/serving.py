"""Continuous batching over a slot-indexed state pool (greedy decoding).

    server = ContinuousBatcher(model, n_slots=32)
    a = server.submit(prompt_a, max_new_tokens=100, eos_token_id=0)
    b = server.submit(prompt_b, max_new_tokens=20)
    outputs = server.run()                # {request id: generated tokens}; or call server.step() yourself

The decode state of every running request lives in one `MambaCache` of n_slots rows (the pool). Each
`step()` first admits waiting requests into free slots (their prompts prefilled together, ragged, and
their states written into their slots), then runs one decode step for every running request:
`model.step(tokens, pool, state_indices=slots)`, which updates only those slots, in place (the pool
is donated). A request leaves when it has its tokens or produced its EOS, and its slot takes the next
waiting request at the next step, so short requests do not wait for long ones as in a static batch.
Each request gets exactly the tokens that generating it alone gives (greedy).

One `step()` runs up to `steps_per_sync` decode steps in one compiled loop before the host looks at
the tokens (a decode step of a small model is shorter than the host's round trip): a request that
finishes inside the block idles in its slot until the block ends, and its extra tokens are dropped.

Batches are bucketed to powers of two (prompt lengths too, at least 8) so that few shapes compile;
padding rows of a decode step carry slot n_slots, which the update ops skip.
Shape legend: S n_slots, b rows of one step (bucketed), l prompt length (bucketed).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import sampling

i32 = jnp.int32


def _bucket(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


@dataclasses.dataclass
class Request:
    id: int
    prompt: list
    max_new_tokens: int
    eos_token_id: Optional[int] = None
    tokens: list = dataclasses.field(default_factory=list)
    slot: Optional[int] = None

    @property
    def finished(self) -> bool:
        return len(self.tokens) >= self.max_new_tokens or (
            self.eos_token_id is not None and bool(self.tokens) and self.tokens[-1] == self.eos_token_id)


class ContinuousBatcher:
    """Serves requests of different prompt lengths and token budgets from one pool of n_slots states.

    Args:
      model: a `MambaLM` (either family, any implementation).
      n_slots: the pool size: at most this many requests run at once.
      steps_per_sync: decode steps per host round trip (a power of two; fewer when the running
        requests need fewer).
    """

    def __init__(self, model, n_slots: int, steps_per_sync: int = 8):
        from flax import nnx

        if not isinstance(n_slots, (int, np.integer)) or n_slots < 1:
            raise ValueError(f"n_slots must be an int >= 1, got {n_slots!r}")
        if not isinstance(steps_per_sync, (int, np.integer)) or steps_per_sync < 1 or steps_per_sync & (steps_per_sync - 1):
            raise ValueError(f"steps_per_sync must be a power of two >= 1, got {steps_per_sync!r}")
        self.steps_per_sync = int(steps_per_sync)
        self.n_slots = int(n_slots)
        self.vocab_size = int(model.config.vocab_size)
        self._mode = sampling.sampling_mode(0.0, None, None, self.vocab_size)[0]
        graphdef, self._state = nnx.split(model)
        self.pool = model.init_cache(self.n_slots)
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: dict[int, Request] = {}  # slot -> request
        self._done: dict[int, Request] = {}
        self._next_id = 0
        self.steps = 0  # decode steps run

        zero = jnp.zeros((), i32)

        def greedy(logits):
            return sampling.sample(logits, self._mode, zero, zero, jnp.ones((), jnp.float32), jnp.ones((), jnp.float32))

        def prefill(state, pool, ids, mask, slots):
            model = nnx.merge(graphdef, state)
            logits, cache = model.prefill(ids, mask, last_only=True)
            pool = jax.tree.map(lambda p, c: p.at[slots].set(c.astype(p.dtype), mode="drop"), pool, cache)
            return greedy(logits), pool

        def decode(state, pool, tokens, slots, k):
            model = nnx.merge(graphdef, state)
            consts = model.step_constants()

            def one(carry, _):
                tok, pool = carry
                logits, pool = model.step(tok, pool, consts, state_indices=slots)
                tok = greedy(logits)
                return (tok, pool), tok

            (_, pool), toks = jax.lax.scan(one, (tokens, pool), None, length=k)
            return toks, pool  # [k, b]

        self._prefill = jax.jit(prefill, donate_argnums=(1,))
        self._decode = jax.jit(decode, donate_argnums=(1,), static_argnums=(4,))

    def submit(self, prompt: Sequence[int], max_new_tokens: int, eos_token_id: Optional[int] = None) -> int:
        """Queues a request; returns its id (the key of its tokens in `run`'s result)."""
        prompt = [int(t) for t in prompt]
        if not prompt or min(prompt) < 0 or max(prompt) >= self.vocab_size:
            raise ValueError(f"prompt must be a non-empty list of token ids in [0, {self.vocab_size})")
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        req = Request(self._next_id, prompt, int(max_new_tokens), eos_token_id)
        self._next_id += 1
        self._waiting.append(req)
        return req.id

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._running

    def _admit(self) -> None:
        free = [s for s in range(self.n_slots) if s not in self._running]
        batch = [self._waiting.popleft() for _ in range(min(len(free), len(self._waiting)))]
        if not batch:
            return
        b, l = _bucket(len(batch)), _bucket(max(len(r.prompt) for r in batch), 8)
        ids, mask = np.zeros((b, l), np.int32), np.zeros((b, l), bool)
        slots = np.full((b,), self.n_slots, np.int32)  # padding rows write nowhere
        for i, (req, slot) in enumerate(zip(batch, free)):
            ids[i, l - len(req.prompt):] = req.prompt
            mask[i, l - len(req.prompt):] = True
            slots[i] = req.slot = slot
        mask[len(batch):, -1] = True  # padding rows: one token, so that no row is empty
        first, self.pool = self._prefill(self._state, self.pool, jnp.asarray(ids), jnp.asarray(mask),
                                         jnp.asarray(slots))
        for req, tok in zip(batch, np.asarray(first)[:len(batch)].tolist()):
            req.tokens.append(int(tok))
            self._running[req.slot] = req

    def _retire(self) -> None:
        for slot in [s for s, r in self._running.items() if r.finished]:
            req = self._running.pop(slot)
            req.slot = None
            self._done[req.id] = req

    def step(self) -> None:
        """Admits waiting requests into free slots (a prefill), then up to `steps_per_sync` decode steps
        for the running ones."""
        self._retire()
        self._admit()
        self._retire()
        if not self._running:
            return
        reqs = list(self._running.values())
        b = min(_bucket(len(reqs)), _bucket(self.n_slots))
        tokens = np.zeros((b,), np.int32)
        slots = np.full((b,), self.n_slots, np.int32)
        for i, req in enumerate(reqs):
            tokens[i], slots[i] = req.tokens[-1], req.slot
        need = max(r.max_new_tokens - len(r.tokens) for r in reqs)
        k = min(self.steps_per_sync, _bucket(need))
        new, self.pool = self._decode(self._state, self.pool, jnp.asarray(tokens), jnp.asarray(slots), k)
        self.steps += k
        new = np.asarray(new)[:, :len(reqs)].T.tolist()
        for req, toks in zip(reqs, new):
            for tok in toks:
                if req.finished:
                    break
                req.tokens.append(int(tok))

    def run(self) -> dict:
        """Steps until every submitted request has finished; returns {request id: generated tokens}
        of the requests finished so far (EOS included)."""
        while not self.idle:
            self.step()
        self._retire()
        return {i: list(r.tokens) for i, r in sorted(self._done.items())}
