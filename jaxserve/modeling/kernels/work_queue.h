// How the native kernels spread their work items over the calling thread and XLA's intra-op pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace jaxserve {

// `work->Work()` takes items from the work's own counter until none is left, counting each one it
// completes in `work->finished`. The caller runs Work() too and waits for all `items` to be finished, not
// for the helpers to return: a helper that starts late (its thread busy with another op) finds no item
// left, so it never holds the step up. The shared_ptr keeps the state alive for such late helpers.
template <typename Work>
void RunOnPool(xla::ffi::ThreadPool& pool, const std::shared_ptr<Work>& work, int64_t items) {
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), items) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Work(); });
  work->Work();
  while (work->finished.load(std::memory_order_acquire) < items) std::this_thread::yield();
}

}  // namespace jaxserve
