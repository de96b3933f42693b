// Paged decode attention for XLA:CPU, called through the XLA FFI (see jaxserve/modeling/native_attention.py).
//
// One query token per row, float32. For row b at position pos, the keys and values of positions
// max(0, pos - window + 1) .. pos are read straight from the page pool through the row's block table: each
// position's K heads x H floats are contiguous in a [pages, page_size, K, H] pool, so a row reads its pages
// once, in order, with no gathered copy. Rows are spread over XLA's intra-op thread pool.
//
// Why not XLA ops: at batch 64 the pure-JAX chunked path spends most of its time in gather-and-transpose
// copies and in batched 3x64x32 dots that XLA:CPU runs at a few GFLOP/s.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Problem {
  int64_t kv_heads, groups, head_dim;
  int64_t num_pages, page_size, table_pages;
  float scale, softcap;  // softcap <= 0: none
  int32_t window;        // <= 0: none
};

// (Called directly: GCC 12 dropped the prefetches when this was reached through a lambda.)
void PrefetchFloats(const float* start, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(start);
  for (int64_t line = 0; line < count * int64_t{sizeof(float)}; line += 64) __builtin_prefetch(bytes + line);
}

// Attention of one row's K * G query heads q [K, G, H] into out [K, G, H]. `scratch` holds the scores.
void AttendRow(const Problem& p, const float* q, const float* keys, const float* values,
               const int32_t* table, int32_t pos, float* out, std::vector<float>& scratch) {
  const int64_t heads = p.kv_heads * p.groups, H = p.head_dim, G = p.groups, PS = p.page_size;
  const int64_t stride = p.kv_heads * H;  // floats per cached position
  std::fill(out, out + heads * H, 0.0f);
  // Padding rows sit past the table's span on purpose: their output is zeros.
  if (pos < 0 || pos >= p.table_pages * PS) return;
  const int64_t first = p.window > 0 ? std::max<int64_t>(0, int64_t{pos} - p.window + 1) : 0;
  const int64_t n = pos - first + 1;
  if (static_cast<int64_t>(scratch.size()) < heads * n) scratch.resize(heads * n);
  float* scores = scratch.data();
  auto position_offset = [&](int64_t position) {
    // Clamped like an XLA gather, so a bad table entry can never read outside the pool.
    const int64_t page = std::clamp<int64_t>(table[position / PS], 0, p.num_pages - 1);
    return (page * PS + position % PS) * stride;
  };
  // A row's pages lie anywhere in the pool, so the hardware prefetcher loses the stream at each page;
  // asking for the position PREFETCH_AHEAD steps on keeps it fed (36 vs 47 and 43 vs 51 ms for 30 layers at
  // batch 64 with 150-210 positions per row, two /tmp ABBA runs; 4 steps ahead measured alike).
  constexpr int64_t PREFETCH_AHEAD = 8;

  for (int64_t t = 0; t < n; ++t) {
    const float* key = keys + position_offset(first + t);
    if (t + PREFETCH_AHEAD < n) PrefetchFloats(keys + position_offset(first + t + PREFETCH_AHEAD), stride);
    for (int64_t head = 0; head < heads; ++head) {
      const float* qh = q + head * H;
      const float* kh = key + (head / G) * H;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t h = 0; h < H; ++h) dot += qh[h] * kh[h];
      float score = dot * p.scale;
      if (p.softcap > 0.0f) score = std::tanh(score / p.softcap) * p.softcap;
      scores[head * n + t] = score;
    }
  }
  for (int64_t head = 0; head < heads; ++head) {
    float* row = scores + head * n;
    const float top = *std::max_element(row, row + n);
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) row[t] = expf(row[t] - top);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t t = 0; t < n; ++t) total += row[t];
    const float inverse = 1.0f / total;
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) row[t] *= inverse;
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* value = values + position_offset(first + t);
    if (t + PREFETCH_AHEAD < n) PrefetchFloats(values + position_offset(first + t + PREFETCH_AHEAD), stride);
    for (int64_t head = 0; head < heads; ++head) {
      const float weight = scores[head * n + t];
      const float* vh = value + (head / G) * H;
      float* oh = out + head * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) oh[h] += weight * vh[h];
    }
  }
}

// Rows are handed out one at a time from a shared counter to the calling thread and the pool's helpers. The
// caller waits for every row to be finished, not for the helpers to return: a helper that starts late (its
// thread busy with another op) finds no rows left, so it never holds the step up. The shared_ptr keeps
// the state alive for such late helpers.
struct Rows {
  Problem problem;
  const float *q, *keys, *values;
  const int32_t *tables, *positions;
  float* out;
  int64_t count;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  void Work() {
    thread_local std::vector<float> scratch;
    const int64_t row_floats = problem.kv_heads * problem.groups * problem.head_dim;
    for (int64_t b = next.fetch_add(1); b < count; b = next.fetch_add(1)) {
      AttendRow(problem, q + b * row_floats, keys, values, tables + b * problem.table_pages, positions[b],
                out + b * row_floats, scratch);
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> keys,
                           ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> tables,
                           ffi::Buffer<ffi::S32> positions, ffi::ResultBuffer<ffi::F32> out, float scale,
                           float softcap, int32_t window) {
  const auto qd = q.dimensions();
  const auto cd = keys.dimensions();
  const auto td = tables.dimensions();
  if (qd.size() != 4 || cd.size() != 4 || td.size() != 2 || positions.dimensions().size() != 1 ||
      td[0] != qd[0] || positions.dimensions()[0] != qd[0] || cd[2] != qd[1] || cd[3] != qd[3] ||
      !std::equal(cd.begin(), cd.end(), values.dimensions().begin(), values.dimensions().end())) {
    return ffi::Error::InvalidArgument(
        "decode attention takes q [B, K, G, H], keys and values [pages, page_size, K, H], tables [B, P] "
        "and positions [B]");
  }
  auto rows = std::make_shared<Rows>();
  rows->problem = Problem{qd[1], qd[2], qd[3], cd[0], cd[1], td[1], scale, softcap, window};
  rows->q = q.typed_data();
  rows->keys = keys.typed_data();
  rows->values = values.typed_data();
  rows->tables = tables.typed_data();
  rows->positions = positions.typed_data();
  rows->out = out->typed_data();
  rows->count = qd[0];
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), rows->count) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([rows] { rows->Work(); });
  rows->Work();
  while (rows->finished.load(std::memory_order_acquire) < rows->count) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxserveDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q [B, K, G, H]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // keys [pages, page_size, K, H]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // values, same
                                  .Arg<ffi::Buffer<ffi::S32>>()  // block tables [B, P]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // positions [B]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out [B, K, G, H]
                                  .Attr<float>("scale")
                                  .Attr<float>("softcap")
                                  .Attr<int32_t>("window"));
