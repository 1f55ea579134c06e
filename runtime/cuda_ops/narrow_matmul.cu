// cips.fast::NarrowMatMul for ONNX Runtime's CUDA execution provider: the colour head of the fp16 graphs
// in one pass (docs: runtime/cuda_ops/README.md).
//
//   Y = float32(X) @ W    X [M, K] float16, W [K, N] float32 with N <= 8 (3 colours), Y [M, N] float32
//
// The fp16 graphs compute it as Cast(X, float32) -> Gemm: a float32 copy of the last activations written
// and read again, then a float32 GEMM whose 3 output columns leave the tensor cores out. Here 8 lanes
// share a row: each reads 8 of its halves (16 bytes) a step, multiplies them by W (in shared memory) and
// the 8 lanes' sums meet by shuffles. A warp takes 8 rows at a time, two a lane, so each read of W serves
// two rows; X is read once. As many blocks as the GPU holds at once loop over the rows, so W is loaded
// into shared memory once a block, not once every few rows.

#include "cips_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace {

constexpr int kMaxColumns = 8;
constexpr int kWarps = 8;        // per block
constexpr int kLanesPerRow = 8;  // lanes that share a row's features
constexpr int kRowsPerLane = 2;  // rows a lane takes at a time: each W value read serves both
constexpr int kGroups = 32 / kLanesPerRow;            // rows a warp reads at once
constexpr int kRowsPerWarp = kGroups * kRowsPerLane;  // rows a warp takes at a time
constexpr int64_t kMaxWeights = 48 * 1024 / sizeof(float);  // W in the default 48 KB of shared memory

[[noreturn]] void fail(const std::string& message) { cips::fail("NarrowMatMul", message); }

void check(cudaError_t error, const char* what) { cips::check(error, "NarrowMatMul", what); }

__device__ __forceinline__ float dot8(const float (&v)[8], float4 w0, float4 w1) {
  return v[0] * w0.x + v[1] * w0.y + v[2] * w0.z + v[3] * w0.w + v[4] * w1.x + v[5] * w1.y + v[6] * w1.z +
         v[7] * w1.w;
}

// W in shared memory. kBy8 (K a multiple of 8): feature chunks of 8, each column's chunk split into two
// float4 planes, planes[(h * N + n) * Q + q] = W[8q + 4h .. 8q + 4h + 3][n] (h = 0, 1; Q = K / 8): the 8
// lanes of a row read 8 consecutive chunks, 128 contiguous bytes a plane (no bank conflicts), and the
// warp's other rows read the same addresses. Otherwise transposed, W[k][n] at n * K + k.
template <int N, bool kBy8>
__global__ void narrow_matmul(const __half* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                              int64_t rows, int k) {
  extern __shared__ float4 shared[];
  float* ws = reinterpret_cast<float*>(shared);
  const int chunks = k / 8;
  for (int i = threadIdx.x; i < k * N; i += blockDim.x) {
    const int feature = i / N, n = i % N;
    if (kBy8)
      ws[(((feature % 8) / 4 * N + n) * chunks + feature / 8) * 4 + feature % 4] = w[i];
    else
      ws[n * k + feature] = w[i];
  }
  __syncthreads();
  const int lane = threadIdx.x % 32, part = lane % kLanesPerRow, group = lane / kLanesPerRow;
  const int64_t step = int64_t(gridDim.x) * kWarps * kRowsPerWarp;
  // each warp takes rows base .. base + kRowsPerWarp - 1 at a time: lane group g the rows base + g and
  // base + g + kGroups, so that one load instruction reads kGroups consecutive rows
  for (int64_t base = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp; base < rows; base += step) {
    int64_t row[kRowsPerLane];
    float acc[kRowsPerLane][N];
#pragma unroll
    for (int r = 0; r < kRowsPerLane; ++r) {
      row[r] = base + group + r * kGroups;
#pragma unroll
      for (int n = 0; n < N; ++n) acc[r][n] = 0.0f;
    }
    if (kBy8) {
      const float4* planes = reinterpret_cast<const float4*>(ws);
      for (int q = part; q < chunks; q += kLanesPerRow) {
        float v[kRowsPerLane][8];
#pragma unroll
        for (int r = 0; r < kRowsPerLane; ++r) {
          uint4 raw = make_uint4(0, 0, 0, 0);  // a row past the end reads nothing and adds zeros
          if (row[r] < rows) raw = *reinterpret_cast<const uint4*>(x + row[r] * k + q * 8);
          const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(h[j]);
            v[r][2 * j] = f.x;
            v[r][2 * j + 1] = f.y;
          }
        }
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const float4 w0 = planes[n * chunks + q], w1 = planes[(N + n) * chunks + q];
#pragma unroll
          for (int r = 0; r < kRowsPerLane; ++r) acc[r][n] += dot8(v[r], w0, w1);
        }
      }
    } else {
      for (int c = part; c < k; c += kLanesPerRow) {
        float v[kRowsPerLane];
#pragma unroll
        for (int r = 0; r < kRowsPerLane; ++r) v[r] = row[r] < rows ? __half2float(x[row[r] * k + c]) : 0.0f;
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const float wv = ws[n * k + c];
#pragma unroll
          for (int r = 0; r < kRowsPerLane; ++r) acc[r][n] += v[r] * wv;
        }
      }
    }
    // the sums of a row's 8 lanes: xor offsets below 8 stay within the lane group; every lane takes part
#pragma unroll
    for (int r = 0; r < kRowsPerLane; ++r) {
#pragma unroll
      for (int n = 0; n < N; ++n) {
#pragma unroll
        for (int offset = kLanesPerRow / 2; offset > 0; offset /= 2)
          acc[r][n] += __shfl_xor_sync(0xffffffffu, acc[r][n], offset);
      }
    }
    if (part == 0) {
#pragma unroll
      for (int r = 0; r < kRowsPerLane; ++r) {
        if (row[r] < rows) {
#pragma unroll
          for (int n = 0; n < N; ++n) y[row[r] * N + n] = acc[r][n];
        }
      }
    }
  }
}

template <class Kernel>
int64_t resident_blocks(Kernel kernel, size_t bytes) {
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "multiprocessor count");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, bytes), "occupancy");
  return int64_t(sms) * std::max(per_sm, 1);
}

template <int N>
void launch(const __half* x, const float* w, float* y, int64_t rows, int k, cudaStream_t stream) {
  const size_t bytes = size_t(k) * N * sizeof(float);
  // 8 halves a lane: every row starts on 16 bytes (K a multiple of 8)
  const bool by8 = k % 8 == 0 && cips::aligned16(x);
  auto kernel = by8 ? narrow_matmul<N, true> : narrow_matmul<N, false>;
  // the rows' loop: never more blocks than are resident at once, nor than there are rows for
  const int64_t needed = (rows + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp);
  const int64_t blocks = std::min(needed, resident_blocks(kernel, bytes));
  kernel<<<unsigned(blocks), kWarps * 32, bytes, stream>>>(x, w, y, rows, k);
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
