// Spreads work items over XLA's intra-op thread pool without ever blocking on a task that has not
// started: items are claimed from an atomic counter by the caller and by any pool thread that gets
// to run, and the caller waits only for items already claimed. So a busy (or single-threaded) pool
// degrades to running everything on the calling thread, never to a deadlock.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace mamba_jax {
namespace cpu {

template <typename F>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t num_items, int64_t min_items_per_task, F fn) {
  if (num_items <= 0) return;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // Claims are small (about 16 per thread, never below min_items_per_task): on a machine shared
  // with other processes a helper can be descheduled while it holds a claim, and the caller then
  // waits for that claim only, so the smaller the claims the shorter that wait.
  const int64_t want = threads * 16;
  const int64_t chunk = std::max<int64_t>(std::max<int64_t>(1, min_items_per_task), (num_items + want - 1) / want);
  const int64_t tasks = (num_items + chunk - 1) / chunk;
  if (tasks <= 1 || threads <= 1) {
    fn(int64_t{0}, num_items);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto st = std::make_shared<State>();
  // `fn` lives on the caller's stack; helpers touch it only for chunks claimed before the caller
  // finishes waiting, and the caller waits for every claimed chunk.
  auto work = [st, &fn, chunk, num_items, tasks]() {
    for (;;) {
      const int64_t c = st->next.fetch_add(1);
      if (c >= tasks) return;
      const int64_t b = c * chunk, e = std::min(num_items, b + chunk);
      if (b < e) fn(b, e);
      if (st->done.fetch_add(1) + 1 == tasks) {
        std::lock_guard<std::mutex> lock(st->mu);
        st->cv.notify_all();
      }
    }
  };
  for (int64_t i = 1; i < std::min(threads, tasks); ++i) {
    auto task = work;  // Schedule takes ownership of a copy
    pool.Schedule(std::move(task));
  }
  work();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->done.load() == tasks; });
}

}  // namespace cpu
}  // namespace mamba_jax
