// cips.fast::GridLookup for ONNX Runtime's CUDA execution provider: the bilinear lookup of a grid graph's
// coordinate embedding without its dense GEMMs (docs: runtime/cuda_ops/README.md).
//
//   Y[h * W + w, :] = the table T [Ty, Tx, F] float16 looked up at (X[w], Y[h]), float32 texel
//                     coordinates (the graph clamps them to [0, Tx - 1] and [0, Ty - 1]; outside, the
//                     hat weights of texels past an end are 0 here as there)
//
// The grid graph forms it with hat weights relu(1 - |x - k|) for every texel k: a dense [H, 2 Ty] x
// [2 Ty, Tx F] GEMM, then a batched [W, 2 Tx] x [2 Tx, F] one, each weight split into a float16 pair
// (hi, lo = w - hi) so that the float16 GEMMs keep float32 weights, and two Concats that double the table
// and the first GEMM's result for those pairs. At most two weights of a row are not zero, so here each
// thread reads the two texels on each axis it needs and does the same sums: weights computed as the graph
// computes them, the same hi/lo pairs, float32 sums, the first axis rounded to float16 as the first GEMM's
// output is, then the second. Only the order of the float32 sums can differ from the GEMMs'.

#include "cips_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

constexpr int kThreads = 256;

[[noreturn]] void fail(const std::string& message) { cips::fail("GridLookup", message); }

void check(cudaError_t error, const char* what) { cips::check(error, "GridLookup", what); }

// The two texels around coordinate c on an axis of n and their weights as float16 pairs; a texel past
// the end has weight 0 and index 0 (read, multiplied by 0).
struct Taps {
  int index[2];
  float hi[2], lo[2];
};

__device__ __forceinline__ Taps taps(float c, int n) {
  Taps t;
  const int k0 = min(max(int(floorf(c)), 0), n - 1);
  for (int i = 0; i < 2; ++i) {
    const int k = k0 + i;
    const float w = k < n ? fmaxf(1.0f - fabsf(c - float(k)), 0.0f) : 0.0f;  // relu(1 - |c - k|)
    const __half hi = __float2half_rn(w);
    t.index[i] = k < n ? k : 0;
    t.hi[i] = __half2float(hi);
    t.lo[i] = __half2float(__float2half_rn(w - t.hi[i]));
  }
  return t;
}

// Eight features a thread (F a multiple of 8, the table and Y 16-byte aligned). Index i counts groups
// of 8 along (h, w, F / 8).
template <class Index>
__global__ void grid_lookup8(const float* __restrict__ xs, const float* __restrict__ ys,
                             const __half* __restrict__ table, __half* __restrict__ out, Index columns, int tx,
                             int ty, Index groups, Index total) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const Index g = i % groups, pixel = i / groups;
    const Index row = pixel / columns, column = pixel - row * columns;
    const Taps x = taps(__ldg(xs + column), tx), y = taps(__ldg(ys + row), ty);
    float acc[8] = {};
    for (int b = 0; b < 2; ++b) {  // along x: the first GEMM's float16 result at texel column x.index[b]
      float a[8] = {};
      for (int k = 0; k < 2; ++k) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(table) +
                              (Index(y.index[k]) * tx + x.index[b]) * groups + g);
        const __half2* h = reinterpret_cast<const __half2*>(&v);
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(h[j]);
          a[2 * j] += y.hi[k] * f.x + y.lo[k] * f.x;
          a[2 * j + 1] += y.hi[k] * f.y + y.lo[k] * f.y;
        }
      }
      for (int j = 0; j < 8; ++j) {
        const float r = __half2float(__float2half_rn(a[j]));
        acc[j] += x.hi[b] * r + x.lo[b] * r;
      }
    }
    uint4 o;
    __half2* h = reinterpret_cast<__half2*>(&o);
    for (int j = 0; j < 4; ++j) h[j] = __floats2half2_rn(acc[2 * j], acc[2 * j + 1]);
    reinterpret_cast<uint4*>(out)[i] = o;
  }
}

// Any F, any alignment: one feature a thread.
template <class Index>
__global__ void grid_lookup1(const float* __restrict__ xs, const float* __restrict__ ys,
                             const __half* __restrict__ table, __half* __restrict__ out, Index columns, int tx,
                             int ty, Index features, Index total) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const Index f = i % features, pixel = i / features;
    const Index row = pixel / columns, column = pixel - row * columns;
    const Taps x = taps(xs[column], tx), y = taps(ys[row], ty);
    float acc = 0.0f;
    for (int b = 0; b < 2; ++b) {
      float a = 0.0f;
      for (int k = 0; k < 2; ++k) {
        const float v = __half2float(table[(Index(y.index[k]) * tx + x.index[b]) * features + f]);
        a += y.hi[k] * v + y.lo[k] * v;
      }
      const float r = __half2float(__float2half_rn(a));
      acc += x.hi[b] * r + x.lo[b] * r;
    }
    out[i] = __float2half_rn(acc);
  }
}

template <class Index>
void launch(const float* xs, const float* ys, const __half* table, __half* out, int64_t h, int64_t w, int64_t tx,
            int64_t ty, int64_t f, cudaStream_t stream) {
  const bool by8 = f % 8 == 0 && cips::aligned16(table) && cips::aligned16(out);
  const int64_t total = by8 ? h * w * (f / 8) : h * w * f;
  const int64_t blocks = cips::stride_blocks(total, kThreads);
  if (by8)
    grid_lookup8<Index><<<unsigned(blocks), kThreads, 0, stream>>>(xs, ys, table, out, Index(w), int(tx), int(ty),
                                                                    Index(f / 8), Index(total));
  else
    grid_lookup1<Index><<<unsigned(blocks), kThreads, 0, stream>>>(xs, ys, table, out, Index(w), int(tx), int(ty),
                                                                    Index(f), Index(total));
  check(cudaGetLastError(), "launch");
}

struct GridLookupKernel : cips::Kernel<GridLookupKernel> {
  explicit GridLookupKernel(const OrtKernelInfo*) {}

  void Compute(Ort::KernelContext ctx) const {
    Ort::ConstValue x = ctx.GetInput(0), y = ctx.GetInput(1), table = ctx.GetInput(2);
    std::vector<int64_t> x_shape = x.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> y_shape = y.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> t_shape = table.GetTensorTypeAndShapeInfo().GetShape();
    if (x_shape.size() != 1 || y_shape.size() != 1 || t_shape.size() != 3)
      fail("X must be [W], Y [H] and the table [Ty, Tx, F]");
    const int64_t w = x_shape[0], h = y_shape[0], ty = t_shape[0], tx = t_shape[1], f = t_shape[2];
    if (tx <= 0 || ty <= 0 || tx > INT32_MAX || ty > INT32_MAX) fail("the table has no texels");
    Ort::UnownedValue out = ctx.GetOutput(0, {h * w, f});
    if (h == 0 || w == 0 || f == 0) return;
    auto* x_data = x.GetTensorData<float>();
    auto* y_data = y.GetTensorData<float>();
    auto* t_data = reinterpret_cast<const __half*>(table.GetTensorRawData());
    auto* out_data = reinterpret_cast<__half*>(out.GetTensorMutableRawData());
    auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    if (h * w * f <= INT32_MAX && ty * tx * f <= INT32_MAX)
      launch<uint32_t>(x_data, y_data, t_data, out_data, h, w, tx, ty, f, stream);
    else
      launch<uint64_t>(x_data, y_data, t_data, out_data, h, w, tx, ty, f, stream);
  }
};

struct GridLookupOp : Ort::CustomOpBase<GridLookupOp, GridLookupKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return cips::as_status([&] { *kernel = new GridLookupKernel(info); });
  }
  const char* GetName() const { return "GridLookup"; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index < 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; }
};

}  // namespace

void add_grid_lookup(Ort::CustomOpDomain& domain) {
  static const GridLookupOp op;  // outlives every session, as the domain does
  domain.Add(&op);
}
