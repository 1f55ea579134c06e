// One modulated layer of G's per-pixel stack for training, in one kernel:
//   Y[b] = LeakyReLU(gain * (X[b] @ W[b]) + bias_scaled, slope)       (bias_scaled = gain * bias)
// which is leaky_relu(X @ W + bias) * gain for gain > 0, the layer as cips_edge.model computes it, with
// the activation written once by the GEMM's epilogue instead of read and written again by a separate
// bias + leaky ReLU + gain pass (that pass is about a tenth of a compiled paper-256 step on an H200).
//
// X [B, M, K] bf16 (elements of a row contiguous; row and batch strides free, multiples of 8), W^T [B, N, K]
// bf16 row-major (one weight matrix per sample, the modulated weights in the model's own [out, in] layout,
// which WGMMA reads K-major without a transposed copy), bias_scaled [N] fp32, Y [B, M, N] bf16 row-major.
// fp32 accumulation; the epilogue rounds to bf16 once. A CUTLASS 3 kernel for SM90 (TMA loads,
// warp-specialized WGMMA, persistent CTAs), 256x128 tiles on clusters of two along N (as cuBLAS's kernels
// for these shapes). TMA wants 16-byte rows: K and N multiples of 8.
//
// The backward through a layer into the one before it (CipsTrainModulatedFcGradInput) is one kernel the
// same way: the GEMM G @ W^T with the previous layer's leaky ReLU derivative, read from its output, in the
// epilogue. Both read the weights from the same [out, in] memory.
//
// Called through ctypes (cips_edge/train/fused_fc.py) with raw pointers and the caller's stream, so the
// library depends on no torch ABI; cudart is linked statically.

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace {

using namespace cute;

using Bf16 = cutlass::bfloat16_t;
using RowMajor = cutlass::layout::RowMajor;
constexpr int kAlign = 8;  // bf16 elements per 16 bytes

using ColumnMajor = cutlass::layout::ColumnMajor;
// Tile, cluster and schedule: the defaults are the configuration the training results were measured with;
// a build may set others for a comparison (build.sh's NVCC_FLAGS, e.g. "-DCIPS_FC_PINGPONG
// -DCIPS_FC_TILE_M=128": two consumer warp groups on tiles of their own, each one's epilogue overlapping
// the other's products, for short K), and benchmarks/fused_fc_check.py times a library named by
// $CIPS_TRAIN_OPS against the unfused layer.
#ifndef CIPS_FC_TILE_M
#define CIPS_FC_TILE_M 256
#endif
#ifndef CIPS_FC_TILE_N
#define CIPS_FC_TILE_N 128
#endif
#ifndef CIPS_FC_CLUSTER_M
#define CIPS_FC_CLUSTER_M 1
#endif
#ifndef CIPS_FC_CLUSTER_N
#define CIPS_FC_CLUSTER_N 2
#endif
using TileShape = Shape<Int<CIPS_FC_TILE_M>, Int<CIPS_FC_TILE_N>, _64>;
using ClusterShape = Shape<Int<CIPS_FC_CLUSTER_M>, Int<CIPS_FC_CLUSTER_N>, _1>;
#ifdef CIPS_FC_PINGPONG
using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecialized;
using KernelSchedule = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
#else
using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecializedCooperative;
using KernelSchedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
#endif

// The backward's activation derivative over the forward's output Z (the previous layer's activation):
// dY where Z > 0, else slope * dY (Z has the pre-activation's sign: gain and slope are positive).
template <class T>
struct LeakyReluGrad {
  static const bool kIsHeavy = false;
  struct Arguments {
    T slope = T(0);
  };
  CUTLASS_HOST_DEVICE T operator()(T const& dy, T const& z, Arguments const& args) const {
    return z > T(0) ? dy : dy * args.slope;
  }
};

template <class T, int N>
struct LeakyReluGrad<cutlass::Array<T, N>> {
  static const bool kIsHeavy = false;
  using Arguments = typename LeakyReluGrad<T>::Arguments;
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& dy, cutlass::Array<T, N> const& z,
                                                      Arguments const& args) const {
    cutlass::Array<T, N> out;
    LeakyReluGrad<T> op;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = op(dy[i], z[i], args);
    return out;
  }
};

// A = [M, K] row-major (K-major), B as LayoutB: RowMajor = [K, N] row-major (N-major, read by WGMMA
// without a transpose), ColumnMajor = K-major; D = [M, N] row-major bf16 from the epilogue `Fusion`.
template <class Fusion, class LayoutB>
struct FusedGemm {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, RowMajor, kAlign,  // no C
      Bf16, RowMajor, kAlign,  // D
      EpilogueSchedule, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Bf16, RowMajor, kAlign,
      Bf16, LayoutB, kAlign,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// Forward: Y = LeakyReLU(gain * X @ W + gain * b)
using Forward = FusedGemm<cutlass::epilogue::fusion::LinCombPerColBiasEltAct<
    cutlass::epilogue::thread::LeakyReLU, Bf16, float, float>, ColumnMajor>;  // output, compute, bias
// Backward through a layer into the previous one: dPre = LeakyReluGrad(gain * dPreNext @ W^T, Z)
using GradInput = FusedGemm<cutlass::epilogue::fusion::LinCombDeEltAct<
    RowMajor, LeakyReluGrad, Bf16, float, Bf16>, RowMajor>;  // aux layout, output, compute, aux
// Forward's arguments for `batch` problems of m x n x k; X's row and batch strides in elements.
Forward::Gemm::Arguments forward_arguments(const Bf16* x, int64_t x_row, int64_t x_batch, const Bf16* w,
                                           const float* bias, Bf16* y, int batch, int m, int n, int k, float gain,
                                           float slope, int device, int sms) {
  using Kernel = Forward::Kernel;
  // Strides in (rows, columns, batch) order of each operand as CUTLASS sees it: A (M, K), B (N, K), D (M, N).
  typename Kernel::StrideA stride_x = make_stride(x_row, Int<1>{}, x_batch);
  typename Kernel::StrideB stride_w = make_stride(int64_t(k), Int<1>{}, int64_t(n) * k);  // W^T [n, k], K-major
  typename Kernel::StrideD stride_y = make_stride(int64_t(n), Int<1>{}, int64_t(m) * n);
  Forward::Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                {m, n, k, batch},
                                {x, stride_x, w, stride_w},
                                {{}, nullptr, stride_y, y, stride_y}};
  args.epilogue.thread.alpha = gain;
  args.epilogue.thread.beta = 0.0f;
  args.epilogue.thread.bias_ptr = bias;
  args.epilogue.thread.activation.leaky_alpha = slope;
  args.hw_info.device_id = device;
  args.hw_info.sm_count = sms;
  return args;
}

// GradInput's arguments: D [m, n] = LeakyReluGrad(gain * G [m, k] @ W[n, k]^T, Z) per sample, with G
// contiguous, W^T [k, n] row-major (the layer's [out, in] weights), Z's and D's row and batch strides in
// elements (D's rows may be wider than n: the columns beyond are left as they are).
GradInput::Gemm::Arguments grad_input_arguments(const Bf16* g, const Bf16* w, const Bf16* z, int64_t z_row,
                                                int64_t z_batch, Bf16* d, int64_t d_row, int64_t d_batch, int batch,
                                                int m, int n, int k, float gain, float slope, int device, int sms) {
  using Kernel = GradInput::Kernel;
  typename Kernel::StrideA stride_g = make_stride(int64_t(k), Int<1>{}, int64_t(m) * k);
  typename Kernel::StrideB stride_w = make_stride(Int<1>{}, int64_t(n), int64_t(k) * n);  // B (N, K) = W, N-major
  typename Kernel::StrideD stride_d = make_stride(d_row, Int<1>{}, d_batch);
  GradInput::Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {m, n, k, batch},
                                  {g, stride_g, w, stride_w},
                                  {{}, nullptr, stride_d, d, stride_d}};
  args.epilogue.thread.alpha = gain;
  args.epilogue.thread.beta = 0.0f;
  args.epilogue.thread.activation.slope = slope;
  args.epilogue.thread.aux_ptr = z;
  args.epilogue.thread.dAux = make_stride(z_row, Int<1>{}, z_batch);
  args.hw_info.device_id = device;
  args.hw_info.sm_count = sms;
  return args;
}

int fail(char* error, int error_len, const char* what, const char* detail) {
  if (error != nullptr && error_len > 0) std::snprintf(error, size_t(error_len), "%s: %s", what, detail);
  return 1;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Makes `device` this library's current GPU and reads its multiprocessor count; 0 or 1 (see fail).
int use_device(int device, int* sms, char* error, int error_len) {
  cudaError_t status = cudaSetDevice(device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
  return status == cudaSuccess ? 0 : fail(error, error_len, "device", cudaGetErrorString(status));
}

// Checks and runs one CUTLASS kernel on `stream`; 0 or 1 (see fail).
template <class Gemm>
int run(typename Gemm::Arguments const& args, void* stream, char* error, int error_len) {
  Gemm gemm;
  cutlass::Status result = gemm.can_implement(args);
  if (result != cutlass::Status::kSuccess)
    return fail(error, error_len, "CUTLASS cannot run this problem", cutlassGetStatusString(result));
  if (Gemm::get_workspace_size(args) != 0)
    return fail(error, error_len, "CUTLASS", "this configuration wants a workspace; none is allocated");
  auto s = static_cast<cudaStream_t>(stream);
  result = gemm.initialize(args, nullptr, s);
  if (result == cutlass::Status::kSuccess) result = gemm.run(s);
  if (result != cutlass::Status::kSuccess)
    return fail(error, error_len, "CUTLASS launch", cutlassGetStatusString(result));
  cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? 0 : fail(error, error_len, "launch", cudaGetErrorString(status));
}

// Host-side only: 0 where CUTLASS takes the problem without a workspace, else 1; the workspace it wants.
template <class Gemm>
int plan(typename Gemm::Arguments const& args, int64_t* workspace) {
  *workspace = int64_t(Gemm::get_workspace_size(args));
  return Gemm::can_implement(args) == cutlass::Status::kSuccess ? 0 : 1;
}

}  // namespace

// Y = LeakyReLU(gain * X @ W + bias_scaled, slope) for `batch` samples on `stream` (a cudaStream_t of
// GPU `device`: this library's runtime keeps its own current device, so the caller names it). X's rows
// are `x_row_stride` elements apart (at least K) and its samples `x_batch_stride` (used where batch > 1);
// `w` holds W^T [B, N, K] contiguous. Returns 0, or 1 with a one-line reason in `error`.
extern "C" __attribute__((visibility("default"))) int CipsTrainModulatedFc(
    const void* x, int64_t x_row_stride, int64_t x_batch_stride, const void* w, const float* bias_scaled, void* y,
    int batch, int m, int n, int k, float gain, float slope, int device, void* stream, char* error, int error_len) {
  if (k % kAlign || n % kAlign) return fail(error, error_len, "shape", "K and N must be multiples of 8");
  if (batch == 1) x_batch_stride = int64_t(m) * x_row_stride;  // unused; any valid stride
  if (!aligned16(x) || !aligned16(w) || !aligned16(y) || !aligned16(bias_scaled) || x_row_stride % kAlign ||
      x_batch_stride % kAlign || x_row_stride < k || x_batch_stride <= 0)
    return fail(error, error_len, "alignment",
                "X, W, Y and the bias must start on 16-byte boundaries, X's rows and samples a multiple of 8 elements "
                "apart");
  if (batch <= 0 || m <= 0) return 0;
  int sms = 0;
  if (use_device(device, &sms, error, error_len)) return 1;
  return run<Forward::Gemm>(
      forward_arguments(static_cast<const Bf16*>(x), x_row_stride, x_batch_stride, static_cast<const Bf16*>(w),
                        bias_scaled, static_cast<Bf16*>(y), batch, m, n, k, gain, slope, device, sms),
      stream, error, error_len);
}

// The backward through one layer into the layer before it, for `batch` samples:
//   D = G @ W^T * gain, times 1 where Z > 0 and `slope` elsewhere,
// G [B, M, K] the gradient at this layer's pre-activation (contiguous), `w` this layer's weights W [B, N, K]
// stored as W^T [B, K, N] row-major (its [out, in] memory: N = its input width), Z [B, M, N] the layer
// before's output (this layer's input; rows and samples `z_row_stride` and `z_batch_stride` elements
// apart), D [B, M, N] the gradient at the layer before's pre-activation (rows and samples `d_row_stride` and
// `d_batch_stride` elements apart: rows wider than N leave room for columns the caller writes beside it),
// without the pass that reads G @ W^T and Z and writes it.
extern "C" __attribute__((visibility("default"))) int CipsTrainModulatedFcGradInput(
    const void* g, const void* w, const void* z, int64_t z_row_stride, int64_t z_batch_stride, void* d,
    int64_t d_row_stride, int64_t d_batch_stride, int batch, int m, int n, int k, float gain, float slope, int device,
    void* stream, char* error, int error_len) {
  if (k % kAlign || n % kAlign) return fail(error, error_len, "shape", "K and N must be multiples of 8");
  if (batch == 1) {
    z_batch_stride = int64_t(m) * z_row_stride;
    d_batch_stride = int64_t(m) * d_row_stride;
  }
  if (!aligned16(g) || !aligned16(w) || !aligned16(z) || !aligned16(d) || z_row_stride % kAlign ||
      z_batch_stride % kAlign || z_row_stride < n || z_batch_stride <= 0 || d_row_stride % kAlign ||
      d_batch_stride % kAlign || d_row_stride < n || d_batch_stride < int64_t(m) * d_row_stride)
    return fail(error, error_len, "alignment",
                "G, W, Z and D must start on 16-byte boundaries, Z's and D's rows and samples a multiple of 8 "
                "elements apart, D's samples apart by at least its rows");
  if (batch <= 0 || m <= 0) return 0;
  int sms = 0;
  if (use_device(device, &sms, error, error_len)) return 1;
  return run<GradInput::Gemm>(
      grad_input_arguments(static_cast<const Bf16*>(g), static_cast<const Bf16*>(w), static_cast<const Bf16*>(z),
                           z_row_stride, z_batch_stride, static_cast<Bf16*>(d), d_row_stride, d_batch_stride, batch,
                           m, n, k, gain, slope, device, sms),
      stream, error, error_len);
}

// The entry points' signatures, for the caller to check against the one it was written for
// (cips_edge/train/fused_fc.py's ABI): 2 = the grad-input kernel's output strides.
extern "C" __attribute__((visibility("default"))) int CipsTrainOpsAbi() { return 2; }

// Host-side only (no GPU): whether CUTLASS takes `batch` problems of m x n x k on `sms` multiprocessors
// (0 = yes, 1 = no), the forward's (grad_input 0) or the backward's (1, its output rows `d_row` elements
// apart), and the workspace it would want (the ops allocate none: it must be 0).
extern "C" __attribute__((visibility("default"))) int CipsTrainModulatedFcPlan(int grad_input, int batch, int m,
                                                                               int n, int k, int sms, int64_t d_row,
                                                                               int64_t* workspace) {
  const auto* at = reinterpret_cast<const Bf16*>(std::uintptr_t(256));  // never read: aligned stand-ins
  auto* out = const_cast<Bf16*>(at);
  if (grad_input)
    return plan<GradInput::Gemm>(
        grad_input_arguments(at, at, at, n, int64_t(m) * n, out, d_row, int64_t(m) * d_row, batch, m, n, k,
                             1.4142135f, 0.2f, 0, sms),
        workspace);
  return plan<Forward::Gemm>(forward_arguments(at, k, int64_t(m) * k, at, reinterpret_cast<const float*>(at), out,
                                               batch, m, n, k, 1.4142135f, 0.2f, 0, sms),
                             workspace);
}
