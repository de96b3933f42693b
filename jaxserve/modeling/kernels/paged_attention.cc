// Paged attention for XLA:CPU, called through the XLA FFI (see jaxserve/modeling/native_attention.py).
//
// Float32, any number of query tokens per row (one in a decode step, a prompt chunk's worth in prefill).
// For a query token at position pos in row b, the keys and values of positions max(0, pos - window + 1) ..
// pos are read straight from the page pool through the row's block table: each position's K heads x H
// floats are contiguous in a [pages, page_size, K, H] pool, so a query reads its row's pages in order,
// with no gathered copy. Query tokens are spread over XLA's intra-op thread pool.
//
// Why not XLA ops: at batch 64 the pure-JAX chunked decode path spends most of its time in
// gather-and-transpose copies and in batched 3x64x32 dots that XLA:CPU runs at a few GFLOP/s; a prompt
// chunk's reference attention gathers and transposes the row's whole block-table bucket.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "work_queue.h"
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

// Attention of one query token's K * G heads q [K, G, H] into out [K, G, H]. `scratch` holds the scores.
void AttendQuery(const Problem& p, const float* q, const float* keys, const float* values,
                 const int32_t* table, int32_t pos, float* out, std::vector<float>& scratch) {
  const int64_t heads = p.kv_heads * p.groups, H = p.head_dim, G = p.groups, PS = p.page_size;
  const int64_t stride = p.kv_heads * H;  // floats per cached position
  std::fill(out, out + heads * H, 0.0f);
  // Padding tokens sit past the table's span on purpose: their output is zeros.
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

// Query tokens are handed out one at a time from a shared counter (see work_queue.h).
struct Queries {
  Problem problem;
  const float *q, *keys, *values;
  const int32_t *tables, *positions;
  float* out;
  int64_t count, tokens_per_row;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  void Work() {
    thread_local std::vector<float> scratch;
    const int64_t query_floats = problem.kv_heads * problem.groups * problem.head_dim;
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      const int32_t* table = tables + (i / tokens_per_row) * problem.table_pages;
      AttendQuery(problem, q + i * query_floats, keys, values, table, positions[i], out + i * query_floats,
                  scratch);
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error PagedAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> keys,
                          ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> tables,
                          ffi::Buffer<ffi::S32> positions, ffi::ResultBuffer<ffi::F32> out, float scale,
                          float softcap, int32_t window) {
  const auto qd = q.dimensions();
  const auto cd = keys.dimensions();
  const auto td = tables.dimensions();
  const auto pd = positions.dimensions();
  if (qd.size() != 5 || cd.size() != 4 || td.size() != 2 || pd.size() != 2 || td[0] != qd[0] ||
      pd[0] != qd[0] || pd[1] != qd[1] || cd[2] != qd[2] || cd[3] != qd[4] ||
      !std::equal(cd.begin(), cd.end(), values.dimensions().begin(), values.dimensions().end())) {
    return ffi::Error::InvalidArgument(
        "paged attention takes q [B, T, K, G, H], keys and values [pages, page_size, K, H], tables [B, P] "
        "and positions [B, T]");
  }
  auto queries = std::make_shared<Queries>();
  queries->problem = Problem{qd[2], qd[3], qd[4], cd[0], cd[1], td[1], scale, softcap, window};
  queries->q = q.typed_data();
  queries->keys = keys.typed_data();
  queries->values = values.typed_data();
  queries->tables = tables.typed_data();
  queries->positions = positions.typed_data();
  queries->out = out->typed_data();
  queries->count = qd[0] * qd[1];
  queries->tokens_per_row = qd[1];
  jaxserve::RunOnPool(pool, queries, queries->count);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxservePagedAttention, PagedAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q [B, T, K, G, H]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // keys [pages, page_size, K, H]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // values, same
                                  .Arg<ffi::Buffer<ffi::S32>>()  // block tables [B, P]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // positions [B, T]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out [B, T, K, G, H]
                                  .Attr<float>("scale")
                                  .Attr<float>("softcap")
                                  .Attr<int32_t>("window"));
