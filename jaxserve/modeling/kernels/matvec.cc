// Float32 products of a few rows with a weight matrix, for XLA:CPU through the XLA FFI (see
// jaxserve/modeling/native_matvec.py): out [R, O] = x [R, I] . w [O, I]^T for R <= 4.
//
// Why not XLA's dot: a decode step at batch 1-4 is a stream of weight reads, and XLA:CPU's
// matrix-vector dots run on one thread and lose time on the small projections (SmolLM2's 576 x 576 ones:
// 10 GB/s against 18-21 here). Output features are handed out in blocks to the calling thread and XLA's
// intra-op pool, as the attention kernel hands out query tokens; each block reads its weight rows once
// for all R rows of x.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

#include "work_queue.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t MAX_ROWS = 4;
constexpr int64_t BLOCK = 32;  // output features per work item: 18 for a 576-wide projection

// out[r, o] for o in [o0, o1), four weight rows at a time (four independent accumulators per x row).
template <int R>
void ProductBlock(const float* w, const float* x, float* out, int64_t in, int64_t outs, int64_t o0,
                  int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) {
    const float* w0 = w + o * in;
    const float* w1 = w0 + in;
    const float* w2 = w1 + in;
    const float* w3 = w2 + in;
    for (int r = 0; r < R; ++r) {
      const float* xr = x + r * in;
      float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t i = 0; i < in; ++i) {
        a0 += w0[i] * xr[i];
        a1 += w1[i] * xr[i];
        a2 += w2[i] * xr[i];
        a3 += w3[i] * xr[i];
      }
      float* row = out + r * outs + o;
      row[0] = a0;
      row[1] = a1;
      row[2] = a2;
      row[3] = a3;
    }
  }
  for (; o < o1; ++o) {
    const float* w0 = w + o * in;
    for (int r = 0; r < R; ++r) {
      const float* xr = x + r * in;
      float a0 = 0.0f;
#pragma omp simd reduction(+ : a0)
      for (int64_t i = 0; i < in; ++i) a0 += w0[i] * xr[i];
      out[r * outs + o] = a0;
    }
  }
}

// Blocks of output features are handed out from a shared counter (see work_queue.h).
struct Product {
  const float *w, *x;
  float* out;
  int64_t rows, in, outs, blocks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};

  void Work() {
    for (int64_t b = next.fetch_add(1); b < blocks; b = next.fetch_add(1)) {
      const int64_t o0 = b * BLOCK, o1 = std::min(outs, o0 + BLOCK);
      switch (rows) {
        case 1: ProductBlock<1>(w, x, out, in, outs, o0, o1); break;
        case 2: ProductBlock<2>(w, x, out, in, outs, o0, o1); break;
        case 3: ProductBlock<3>(w, x, out, in, outs, o0, o1); break;
        default: ProductBlock<4>(w, x, out, in, outs, o0, o1); break;
      }
      finished.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error MatVec(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                  ffi::ResultBuffer<ffi::F32> out) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[1] || xd[0] < 1 || xd[0] > MAX_ROWS) {
    return ffi::Error::InvalidArgument("matvec takes x [R, I] with 1 <= R <= 4 and w [O, I]");
  }
  auto product = std::make_shared<Product>();
  product->w = w.typed_data();
  product->x = x.typed_data();
  product->out = out->typed_data();
  product->rows = xd[0];
  product->in = xd[1];
  product->outs = wd[0];
  product->blocks = (wd[0] + BLOCK - 1) / BLOCK;
  jaxserve::RunOnPool(pool, product, product->blocks);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxserveMatVec, MatVec,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x [R, I]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w [O, I]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // out [R, O]
