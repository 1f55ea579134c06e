// cips.fast::NarrowMatMul for ONNX Runtime's CUDA execution provider: the colour head of the fp16 graphs
// in one pass (docs: runtime/cuda_ops/README.md).
//
//   Y = float32(X) @ W    X [M, K] float16, W [K, N] float32 with N <= 8 (3 colours), Y [M, N] float32
//
// The fp16 graphs compute it as Cast(X, float32) -> Gemm: a float32 copy of the last activations written
// and read again, then a float32 GEMM whose 3 output columns leave the tensor cores out. Here a warp
// takes a row at a time: each lane reads 8 of its halves (16 bytes), multiplies them by W (held in shared
// memory, one row of N values per feature) and the lanes' sums meet by shuffles. X is read once.

#include "cips_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace {

constexpr int kMaxColumns = 8;
constexpr int kWarps = 8;  // per block
constexpr int64_t kMaxWeights = 48 * 1024 / sizeof(float);  // W in the default 48 KB of shared memory

[[noreturn]] void fail(const std::string& message) { cips::fail("NarrowMatMul", message); }

void check(cudaError_t error, const char* what) { cips::check(error, "NarrowMatMul", what); }

// W is kept transposed in shared memory, [N][K]: a lane's 8 consecutive features of one column are two
// 16-byte reads, and the 8 lanes of each quarter-warp phase read 8 consecutive 32-byte runs (no conflicts).
template <int N, bool kBy8>
__global__ void narrow_matmul(const __half* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                              int64_t rows, int k) {
  extern __shared__ float4 shared[];
  float* wt = reinterpret_cast<float*>(shared);
  for (int i = threadIdx.x; i < k * N; i += blockDim.x) wt[(i % N) * k + i / N] = w[i];
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows; row += warps) {
    const __half* xr = x + row * k;
    float acc[N];
#pragma unroll
    for (int n = 0; n < N; ++n) acc[n] = 0.0f;
    if (kBy8) {
      for (int c = lane * 8; c < k; c += 32 * 8) {
        const uint4 raw = *reinterpret_cast<const uint4*>(xr + c);
        const __half2* h = reinterpret_cast<const __half2*>(&raw);
        float v[8];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(h[j]);
          v[2 * j] = f.x;
          v[2 * j + 1] = f.y;
        }
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const float4* col = reinterpret_cast<const float4*>(wt + n * k + c);
          const float4 w0 = col[0], w1 = col[1];
          acc[n] += v[0] * w0.x + v[1] * w0.y + v[2] * w0.z + v[3] * w0.w + v[4] * w1.x + v[5] * w1.y +
                    v[6] * w1.z + v[7] * w1.w;
        }
      }
    } else {
      for (int c = lane; c < k; c += 32) {
        const float v = __half2float(xr[c]);
#pragma unroll
        for (int n = 0; n < N; ++n) acc[n] += v * wt[n * k + c];
      }
    }
#pragma unroll
    for (int n = 0; n < N; ++n) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) acc[n] += __shfl_xor_sync(0xffffffffu, acc[n], offset);
    }
    if (lane == 0) {
#pragma unroll
      for (int n = 0; n < N; ++n) y[row * N + n] = acc[n];
    }
  }
}

bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <int N>
void launch(const __half* x, const float* w, float* y, int64_t rows, int k, cudaStream_t stream) {
  const size_t bytes = size_t(k) * N * sizeof(float);
  // a grid-stride loop over rows, kWarps rows a block at a time, at most 2^16 blocks
  const int64_t blocks = std::min<int64_t>((rows + kWarps - 1) / kWarps, int64_t(1) << 16);
  // 8 halves a lane: every row starts on 16 bytes (K a multiple of 8) and W's transposed rows on 16 bytes
  if (k % 8 == 0 && aligned(x))
    narrow_matmul<N, true><<<unsigned(blocks), kWarps * 32, bytes, stream>>>(x, w, y, rows, k);
  else
    narrow_matmul<N, false><<<unsigned(blocks), kWarps * 32, bytes, stream>>>(x, w, y, rows, k);
  check(cudaGetLastError(), "launch");
}

template <int N = 1>
void launch_columns(int n, const __half* x, const float* w, float* y, int64_t rows, int k, cudaStream_t stream) {
  if constexpr (N <= kMaxColumns) {
    if (n == N) return launch<N>(x, w, y, rows, k, stream);
    launch_columns<N + 1>(n, x, w, y, rows, k, stream);
  }
}

struct NarrowMatMulKernel : cips::Kernel<NarrowMatMulKernel> {
  explicit NarrowMatMulKernel(const OrtKernelInfo*) {}

  void Compute(Ort::KernelContext ctx) const {
    Ort::ConstValue x = ctx.GetInput(0), w = ctx.GetInput(1);
    std::vector<int64_t> x_shape = x.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> w_shape = w.GetTensorTypeAndShapeInfo().GetShape();
    if (x_shape.size() != 2 || w_shape.size() != 2 || x_shape[1] != w_shape[0])
      fail("X must be [M, K] and W [K, N] with the same K");
    const int64_t rows = x_shape[0], k = w_shape[0], n = w_shape[1];
    if (n < 1 || n > kMaxColumns) fail("W must have 1 to 8 columns");
    if (k * n > kMaxWeights || k > INT32_MAX) fail("W must fit in 48 KB (K x N at most 12,288)");
    Ort::UnownedValue y = ctx.GetOutput(0, {rows, n});
    if (rows == 0) return;
    if (k == 0) {
      check(cudaMemsetAsync(y.GetTensorMutableData<float>(), 0, size_t(rows * n) * sizeof(float),
                            static_cast<cudaStream_t>(ctx.GetGPUComputeStream())), "memset");
      return;
    }
    launch_columns(int(n), reinterpret_cast<const __half*>(x.GetTensorRawData()), w.GetTensorData<float>(),
                   y.GetTensorMutableData<float>(), rows, int(k), static_cast<cudaStream_t>(ctx.GetGPUComputeStream()));
  }
};

struct NarrowMatMulOp : Ort::CustomOpBase<NarrowMatMulOp, NarrowMatMulKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return cips::as_status([&] { *kernel = new NarrowMatMulKernel(info); });
  }
  const char* GetName() const { return "NarrowMatMul"; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace

void add_narrow_matmul(Ort::CustomOpDomain& domain) {
  static const NarrowMatMulOp op;  // outlives every session, as the domain does
  domain.Add(&op);
}
