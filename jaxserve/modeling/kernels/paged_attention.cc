// Paged attention for XLA:CPU, called through the XLA FFI (see jaxserve/modeling/native_attention.py).
//
// Float32, any number of query tokens per row (one in a decode step, a prompt chunk's worth in prefill).
// For a query token at position pos in row b, the keys and values of positions max(0, pos - window + 1) ..
// pos are read straight from the page pool through the row's block table: each position's K heads x H
// floats are contiguous in a [pages, page_size, K, H] pool, so a query reads its row's pages in order,
// with no gathered copy. Work items are spread over XLA's intra-op thread pool: single query tokens in a
// decode step, and in a prompt chunk blocks of query tokens of one row and KV head, which share each key
// page (transposed once) and each value row. Default model, 2-core CPU, 30 layers' attention in a prompt
// step (`benchmarks/profile_decode.py --prefill 128 --batch 4`, `ffi_call`): 112 ms one query at a time,
// 57 ms in blocks for 4 x 128 tokens; 31 and 20 ms for 1 x 128.
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

// Where a row's cached `position` starts in the page pool, in floats, through the row's block table.
// Clamped like an XLA gather, so a bad table entry can never read outside the pool.
int64_t PositionOffset(const Problem& p, const int32_t* table, int64_t position) {
  const int64_t page = std::clamp<int64_t>(table[position / p.page_size], 0, p.num_pages - 1);
  return (page * p.page_size + position % p.page_size) * p.kv_heads * p.head_dim;
}

// A row of scores becomes its softmax, after Gemma 2's logit soft cap, cap * tanh(score / cap), when
// cap > 0. The cap is a pass of its own: inside the scoring loops GCC computed the tanh of every score,
// capped or not.
void Softmax(float cap, float* row, int64_t count) {
  if (cap > 0.0f) {
#pragma omp simd
    for (int64_t t = 0; t < count; ++t) row[t] = std::tanh(row[t] / cap) * cap;
  }
  const float top = *std::max_element(row, row + count);
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) row[t] = expf(row[t] - top);
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t t = 0; t < count; ++t) total += row[t];
  const float inverse = 1.0f / total;
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) row[t] *= inverse;
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
  auto position_offset = [&](int64_t position) { return PositionOffset(p, table, position); };
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
      scores[head * n + t] = dot * p.scale;
    }
  }
  for (int64_t head = 0; head < heads; ++head) Softmax(p.softcap, scores + head * n, n);
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

// Prompt chunks: the query tokens of one row and KV head in blocks of up to QUERY_BLOCK. Each key page is
// transposed once into [H, page_size] and scored against every query head of the block with FMAs along
// the positions, where one query at a time needs a horizontal sum per (query, head, position).
constexpr int64_t QUERY_BLOCK = 16;

// One call's inputs, shared by both ways of splitting it into work items.
struct Call {
  Problem problem;
  const float *q, *keys, *values;
  const int32_t *tables, *positions;  // [B, P], [B, T]
  float* out;
  int64_t rows, tokens_per_row;  // B, T
};

struct BlockScratch {
  std::vector<float> scores;      // [block queries * G, n]
  std::vector<float> keys_t;      // one page of one KV head, [H, page_size]
  std::vector<float> page_scores; // [SCORE_HEADS, page_size]
  std::vector<int64_t> heads;     // query heads (i * G + g) of the block scored against one page
};

// sums[r * page_size + t] = q[r] . key t, for SCORE_HEADS query heads q[r] and the keys of one transposed
// page kt [H, page_size]. Four independent sums keep the FMA units busy where one would wait on each
// FMA's latency; PAGE > 0 fixes the page size at compile time, so the sums stay in registers.
constexpr int64_t SCORE_HEADS = 4;

template <int64_t PAGE>
void ScorePage(const float* const* q, const float* kt, int64_t H, float* sums, int64_t page_size = PAGE) {
  if constexpr (PAGE > 0) {
    float s0[PAGE] = {}, s1[PAGE] = {}, s2[PAGE] = {}, s3[PAGE] = {};
    for (int64_t h = 0; h < H; ++h) {
      const float* k = kt + h * PAGE;
      const float q0 = q[0][h], q1 = q[1][h], q2 = q[2][h], q3 = q[3][h];
#pragma omp simd
      for (int64_t t = 0; t < PAGE; ++t) {
        s0[t] += q0 * k[t];
        s1[t] += q1 * k[t];
        s2[t] += q2 * k[t];
        s3[t] += q3 * k[t];
      }
    }
    std::copy_n(s0, PAGE, sums);
    std::copy_n(s1, PAGE, sums + PAGE);
    std::copy_n(s2, PAGE, sums + 2 * PAGE);
    std::copy_n(s3, PAGE, sums + 3 * PAGE);
  } else {
    std::fill_n(sums, SCORE_HEADS * page_size, 0.0f);
    for (int64_t r = 0; r < SCORE_HEADS; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const float qh = q[r][h];
        const float* k = kt + h * page_size;
        float* out = sums + r * page_size;
#pragma omp simd
        for (int64_t t = 0; t < page_size; ++t) out[t] += qh * k[t];
      }
  }
}

// out[j][h] += sum over t < count of weights[j][t] * rows[t * stride + h], for N query heads that read the
// same value rows. HEAD > 0 fixes the head size at compile time, so the N sums stay in registers across
// the rows (two heads: eight independent FMA chains at 64 floats, against four for one).
template <int64_t HEAD, int64_t N>
void AddWeightedRows(const float* const* weights, const float* rows, int64_t count, int64_t stride,
                     float* const* out, int64_t head_dim = HEAD) {
  if constexpr (HEAD > 0) {
    float sums[N][HEAD];
    for (int64_t j = 0; j < N; ++j) std::copy_n(out[j], HEAD, sums[j]);
    for (int64_t t = 0; t < count; ++t, rows += stride) {
      for (int64_t j = 0; j < N; ++j) {
        const float weight = weights[j][t];
#pragma omp simd
        for (int64_t h = 0; h < HEAD; ++h) sums[j][h] += weight * rows[h];
      }
    }
    for (int64_t j = 0; j < N; ++j) std::copy_n(sums[j], HEAD, out[j]);
  } else {
    for (int64_t j = 0; j < N; ++j) {
      const float* row = rows;
      for (int64_t t = 0; t < count; ++t, row += stride) {
        const float weight = weights[j][t];
#pragma omp simd
        for (int64_t h = 0; h < head_dim; ++h) out[j][h] += weight * row[h];
      }
    }
  }
}

// Queries t0 .. t1-1 of one row, KV head `kv_head`. q, positions and out point at the row's first token.
void AttendBlock(const Problem& p, const float* q, const float* keys, const float* values,
                 const int32_t* table, const int32_t* positions, int64_t kv_head, int64_t t0, int64_t t1,
                 float* out, BlockScratch& s) {
  const int64_t K = p.kv_heads, G = p.groups, H = p.head_dim, PS = p.page_size;
  const int64_t stride = K * H;  // floats per cached position
  const int64_t span = p.table_pages * PS;
  const int64_t nq = t1 - t0;
  auto head_offset = [&](int64_t t, int64_t g) { return ((t * K + kv_head) * G + g) * H; };
  // Each query's first and last key position; last < first marks padding (output zeros).
  int64_t first[QUERY_BLOCK], last[QUERY_BLOCK];
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t g = 0; g < G; ++g) std::fill_n(out + head_offset(t0 + i, g), H, 0.0f);
    const int64_t pos = positions[t0 + i];
    first[i] = 0;
    last[i] = -1;
    if (pos < 0 || pos >= span) continue;
    first[i] = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
    last[i] = pos;
    lo = std::min(lo, first[i]);
    hi = std::max(hi, pos);
  }
  if (hi < 0) return;
  const int64_t n = hi - lo + 1;
  if (static_cast<int64_t>(s.scores.size()) < nq * G * n) s.scores.resize(nq * G * n);
  if (static_cast<int64_t>(s.keys_t.size()) < H * PS) s.keys_t.assign(H * PS, 0.0f);
  if (static_cast<int64_t>(s.page_scores.size()) < SCORE_HEADS * PS) s.page_scores.resize(SCORE_HEADS * PS);
  if (static_cast<int64_t>(s.heads.size()) < nq * G) s.heads.resize(nq * G);
  float* kt = s.keys_t.data();
  float* sums = s.page_scores.data();
  auto position_offset = [&](int64_t position) { return PositionOffset(p, table, position) + kv_head * H; };

  // Scores, one page segment at a time: positions start .. start+len-1 share a page.
  for (int64_t start = lo; start <= hi;) {
    const int64_t len = std::min(PS - start % PS, hi - start + 1);
    const float* key = keys + position_offset(start);
    for (int64_t t = 0; t < len; ++t)
      for (int64_t h = 0; h < H; ++h) kt[h * PS + t] = key[t * stride + h];
    // The query heads whose window meets this segment, SCORE_HEADS at a time.
    int64_t count = 0;
    for (int64_t i = 0; i < nq; ++i)
      if (std::max(first[i], start) <= std::min(last[i], start + len - 1))
        for (int64_t g = 0; g < G; ++g) s.heads[count++] = i * G + g;
    for (int64_t j = 0; j < count; j += SCORE_HEADS) {
      const float* batch[SCORE_HEADS];
      for (int64_t r = 0; r < SCORE_HEADS; ++r) {
        const int64_t head = s.heads[std::min(j + r, count - 1)];  // repeats the last one to fill the batch
        batch[r] = q + head_offset(t0 + head / G, head % G);
      }
      if (PS == 16) {
        ScorePage<16>(batch, kt, H, sums);
      } else {
        ScorePage<0>(batch, kt, H, sums, PS);
      }
      for (int64_t r = 0; r < SCORE_HEADS && j + r < count; ++r) {
        const int64_t head = s.heads[j + r], i = head / G;
        const int64_t from = std::max(first[i], start), to = std::min(last[i], start + len - 1);
        float* row = s.scores.data() + head * n;
        for (int64_t position = from; position <= to; ++position)
          row[position - lo] = sums[r * PS + position - start] * p.scale;
      }
    }
    start += len;
  }
  // Softmax of each query head over its own positions.
  for (int64_t i = 0; i < nq; ++i) {
    if (last[i] < first[i]) continue;
    for (int64_t g = 0; g < G; ++g)
      Softmax(p.softcap, s.scores.data() + (i * G + g) * n + (first[i] - lo), last[i] - first[i] + 1);
  }
  // Weighted values, two query heads at a time (their outputs stay in registers); the block's value rows
  // stay in cache between query heads.
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t start = first[i]; start <= last[i];) {  // a page segment at a time
      const int64_t len = std::min(PS - start % PS, last[i] - start + 1);
      const float* value = values + position_offset(start);
      for (int64_t g = 0; g < G; g += 2) {  // two heads at a time, the last one alone if G is odd
        const float* weights[2];
        float* head_out[2];
        for (int64_t j = 0; j < 2 && g + j < G; ++j) {
          weights[j] = s.scores.data() + (i * G + g + j) * n + (start - lo);
          head_out[j] = out + head_offset(t0 + i, g + j);
        }
        const bool pair = g + 1 < G;
        if (H == 64 && pair) {
          AddWeightedRows<64, 2>(weights, value, len, stride, head_out);
        } else if (H == 64) {
          AddWeightedRows<64, 1>(weights, value, len, stride, head_out);
        } else if (pair) {
          AddWeightedRows<0, 2>(weights, value, len, stride, head_out, H);
        } else {
          AddWeightedRows<0, 1>(weights, value, len, stride, head_out, H);
        }
      }
      start += len;
    }
  }
}

// Blocks of (row, KV head, query block), the costliest (latest) query blocks of a row first.
struct Blocks {
  explicit Blocks(const Call& c)
      : call(c),
        blocks_per_row((c.tokens_per_row + QUERY_BLOCK - 1) / QUERY_BLOCK),
        count(c.rows * c.problem.kv_heads * blocks_per_row) {}

  const Call call;
  const int64_t blocks_per_row, count;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  void Work() {
    thread_local BlockScratch scratch;
    const Problem& problem = call.problem;
    const int64_t K = problem.kv_heads, T = call.tokens_per_row;
    const int64_t row_floats = T * K * problem.groups * problem.head_dim;
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      const int64_t row = i / (K * blocks_per_row);
      const int64_t kv_head = (i / blocks_per_row) % K;
      const int64_t block = blocks_per_row - 1 - i % blocks_per_row;
      const int64_t t0 = block * QUERY_BLOCK, t1 = std::min(t0 + QUERY_BLOCK, T);
      AttendBlock(problem, call.q + row * row_floats, call.keys, call.values,
                  call.tables + row * problem.table_pages, call.positions + row * T, kv_head, t0, t1,
                  call.out + row * row_floats, scratch);
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

// Decode steps: query tokens are handed out one at a time from a shared counter (see work_queue.h).
struct Queries {
  explicit Queries(const Call& c) : call(c), count(c.rows * c.tokens_per_row) {}

  const Call call;
  const int64_t count;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  void Work() {
    thread_local std::vector<float> scratch;
    const Problem& problem = call.problem;
    const int64_t query_floats = problem.kv_heads * problem.groups * problem.head_dim;
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      const int32_t* table = call.tables + (i / call.tokens_per_row) * problem.table_pages;
      AttendQuery(problem, call.q + i * query_floats, call.keys, call.values, table, call.positions[i],
                  call.out + i * query_floats, scratch);
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
  const Call call{Problem{qd[2], qd[3], qd[4], cd[0], cd[1], td[1], scale, softcap, window},
                  q.typed_data(),
                  keys.typed_data(),
                  values.typed_data(),
                  tables.typed_data(),
                  positions.typed_data(),
                  out->typed_data(),
                  qd[0],
                  qd[1]};
  if (call.tokens_per_row > 1) {
    auto blocks = std::make_shared<Blocks>(call);
    jaxserve::RunOnPool(pool, blocks, blocks->count);
  } else {
    auto queries = std::make_shared<Queries>(call);
    jaxserve::RunOnPool(pool, queries, queries->count);
  }
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
