// cips.fast::GridSin for ONNX Runtime's CUDA execution provider: the Fourier block of a grid graph in one
// pass (docs: runtime/cuda_ops/README.md).
//
//   Y[h, w, :] = float16(sin(A[w, :] + B[h, :]))    A [W, F] float32 (columns), B [H, F] float32 (rows)
//
// The grid graph forms it as Add(Unsqueeze(A, 0), Unsqueeze(B, 1)) -> Sin -> Cast(float16): two float32
// [H, W, F] tensors written and read again before the float16 one. Here each thread reads its column's and
// row's values (small tables, cached) and writes only the float16 result. The sum is one float32 add,
// the sine is sinf and the cast rounds to nearest even, as ONNX Runtime's Add, Sin and Cast kernels do.

#include "cips_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

constexpr int kThreads = 256;

[[noreturn]] void fail(const std::string& message) { cips::fail("GridSin", message); }

void check(cudaError_t error, const char* what) { cips::check(error, "GridSin", what); }

__device__ __forceinline__ uint32_t sin2(float a0, float b0, float a1, float b1) {
  __half2 h = __floats2half2_rn(sinf(a0 + b0), sinf(a1 + b1));
  return *reinterpret_cast<uint32_t*>(&h);
}

// Eight features a thread (F a multiple of 8, every row 16-byte aligned): 2 x 16-byte loads from each
// table, one 16-byte store. Index i counts groups of 8 along (h, w, F / 8).
template <class Index>
__global__ void grid_sin8(const float* __restrict__ a, const float* __restrict__ b, __half* __restrict__ y,
                          Index columns, Index groups, Index total) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const Index g = i % groups, pixel = i / groups;
    const Index row = pixel / columns, column = pixel - row * columns;
    const float4* pa = reinterpret_cast<const float4*>(a) + 2 * (column * groups + g);
    const float4* pb = reinterpret_cast<const float4*>(b) + 2 * (row * groups + g);
    const float4 a0 = __ldg(pa), a1 = __ldg(pa + 1), b0 = __ldg(pb), b1 = __ldg(pb + 1);
    uint4 out;
    out.x = sin2(a0.x, b0.x, a0.y, b0.y);
    out.y = sin2(a0.z, b0.z, a0.w, b0.w);
    out.z = sin2(a1.x, b1.x, a1.y, b1.y);
    out.w = sin2(a1.z, b1.z, a1.w, b1.w);
    reinterpret_cast<uint4*>(y)[i] = out;
  }
}

// Any F, any alignment: one feature a thread.
template <class Index>
__global__ void grid_sin1(const float* __restrict__ a, const float* __restrict__ b, __half* __restrict__ y,
                          Index columns, Index features, Index total) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const Index f = i % features, pixel = i / features;
    const Index row = pixel / columns, column = pixel - row * columns;
    y[i] = __float2half_rn(sinf(a[column * features + f] + b[row * features + f]));
  }
}

template <class Index>
void launch(const float* a, const float* b, __half* y, int64_t h, int64_t w, int64_t f, cudaStream_t stream) {
  const bool by8 = f % 8 == 0 && cips::aligned16(a) && cips::aligned16(b) && cips::aligned16(y);
  const int64_t total = by8 ? h * w * (f / 8) : h * w * f;
  const int64_t blocks = cips::stride_blocks(total, kThreads);
  if (by8)
    grid_sin8<Index><<<unsigned(blocks), kThreads, 0, stream>>>(a, b, y, Index(w), Index(f / 8), Index(total));
  else
    grid_sin1<Index><<<unsigned(blocks), kThreads, 0, stream>>>(a, b, y, Index(w), Index(f), Index(total));
  check(cudaGetLastError(), "launch");
}

struct GridSinKernel : cips::Kernel<GridSinKernel> {
  explicit GridSinKernel(const OrtKernelInfo*) {}

  void Compute(Ort::KernelContext ctx) const {
    Ort::ConstValue a = ctx.GetInput(0), b = ctx.GetInput(1);
    std::vector<int64_t> a_shape = a.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> b_shape = b.GetTensorTypeAndShapeInfo().GetShape();
    if (a_shape.size() != 2 || b_shape.size() != 2 || a_shape[1] != b_shape[1])
      fail("A must be [W, F] and B [H, F] with the same F");
    const int64_t w = a_shape[0], h = b_shape[0], f = a_shape[1];
    Ort::UnownedValue y = ctx.GetOutput(0, {h, w, f});
    if (h == 0 || w == 0 || f == 0) return;
    auto* a_data = a.GetTensorData<float>();
    auto* b_data = b.GetTensorData<float>();
    auto* y_data = reinterpret_cast<__half*>(y.GetTensorMutableRawData());
    auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    if (h * w * f <= INT32_MAX)  // 32-bit index arithmetic where it suffices: divisions are the loop's cost
      launch<uint32_t>(a_data, b_data, y_data, h, w, f, stream);
    else
      launch<uint64_t>(a_data, b_data, y_data, h, w, f, stream);
  }
};

struct GridSinOp : Ort::CustomOpBase<GridSinOp, GridSinKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return cips::as_status([&] { *kernel = new GridSinKernel(info); });
  }
  const char* GetName() const { return "GridSin"; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; }
};

}  // namespace

void add_grid_sin(Ort::CustomOpDomain& domain) {
  static const GridSinOp op;  // outlives every session, as the domain does
  domain.Add(&op);
}
