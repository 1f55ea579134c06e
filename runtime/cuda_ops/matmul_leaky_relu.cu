// cips.fast::MatMulLeakyRelu for ONNX Runtime's CUDA execution provider:
// Y = LeakyRelu(X @ W + b, alpha) in one kernel, so the activation is written once instead of being
// read and written again by separate bias and LeakyRelu passes (docs: runtime/cuda_ops/README.md).
// cips.fast::MatMulAddLeakyRelu: Y = LeakyRelu(X @ W + C, alpha) with a full matrix C, as the grid
// graph's input layer adds its table half.
//
// X [M, K] or [B, M, K] fp16 row-major, W [K, N] fp16 row-major, b [N] fp16 (optional), C fp16 shaped as
// Y, Y fp16 [.., N].
// The GEMM is a CUTLASS 3 kernel for SM90 (TMA loads, warp-specialized WGMMA, fp32 accumulation); the
// epilogue adds the per-column bias and applies LeakyReLU before the fp16 store. TMA needs 16-byte
// aligned rows, hence K and N multiples of 8; M is free (TMA clips the last tile's rows).

#include "cips_ops.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace {

using namespace cute;

using Half = cutlass::half_t;
using RowMajor = cutlass::layout::RowMajor;
constexpr int kAlign = 8;  // elements per 16 bytes: TMA's alignment for every operand

// Six configurations, all with persistent CTAs and 64-deep K steps: 128x128 and 128x256 tiles (fewer
// passes over X for wide layers) with two consumer warp groups sharing each output tile (cooperative);
// 128x128 with each consumer warp group on a tile of its own, taking turns (ping-pong): one group's
// epilogue runs while the other's MMAs do, which matters when K is short (512 here: 8 K steps a tile);
// 256x128 cooperative tiles on clusters of two CTAs along N, which share each X tile through TMA
// multicast (cuBLAS's own kernels for these layers use 1x2 clusters); and 128x192 and 256x192
// cooperative tiles without clusters, for the widths the fp16 graphs have (a width plus its 7 extra
// columns, padded to 8: 520, 264, 136). CUTLASS rounds a problem's tiles up to whole clusters, and their
// MMAs run whether or not a tile holds any columns, so 520 columns cost 6 tiles of 128 (768) on 1x2
// clusters against 3 of 192 (576). By default each layer takes 256x192 or 256x128-1x2 by its width
// (default_tile); $CIPS_CUDA_OPS_TILE fixes one for every layer when a session is made (128x128;
// 128x256; 128x128-pingpong; 256x128-1x2; 128x192; 256x192), so they can be compared on one machine
// (benchmarks/cuda_ops_check.py --tile).

// D = LeakyReLU(1 * acc + beta * C + bias[col]). ElementC void: no source operand is read at all
// (MatMulLeakyRelu); Half: C is loaded by TMA and beta is 1 (MatMulAddLeakyRelu).
using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<
    cutlass::epilogue::thread::LeakyReLU, Half, float, Half>;

template <class TileShape, class ClusterShape, class MainloopSchedule, class EpilogueSchedule, class ElementC = void>
struct FusedGemm {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      ElementC, RowMajor, kAlign,  // C
      Half, RowMajor, kAlign,  // D = Y
      EpilogueSchedule, Fusion>::CollectiveOp;

  // A = X [M, K] row-major (K-major); B = W [K, N] row-major, i.e. N-major, which WGMMA reads for
  // 16-bit types without a transpose.
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Half, RowMajor, kAlign,
      Half, RowMajor, kAlign,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

using Cooperative = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CooperativeEpilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
using NoCluster = Shape<_1, _1, _1>;
using Tile128x128 = FusedGemm<Shape<_128, _128, _64>, NoCluster, Cooperative, CooperativeEpilogue>;
using Tile128x256 = FusedGemm<Shape<_128, _256, _64>, NoCluster, Cooperative, CooperativeEpilogue>;
using Tile128x128Pingpong = FusedGemm<Shape<_128, _128, _64>, NoCluster,
                                      cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                      cutlass::epilogue::TmaWarpSpecialized>;
using Tile256x128Cluster1x2 = FusedGemm<Shape<_256, _128, _64>, Shape<_1, _2, _1>, Cooperative, CooperativeEpilogue>;
using Tile128x192 = FusedGemm<Shape<_128, _192, _64>, NoCluster, Cooperative, CooperativeEpilogue>;
using Tile256x192 = FusedGemm<Shape<_256, _192, _64>, NoCluster, Cooperative, CooperativeEpilogue>;
// MatMulAddLeakyRelu's one configuration: the default's, reading C
using Tile256x128Cluster1x2WithC =
    FusedGemm<Shape<_256, _128, _64>, Shape<_1, _2, _1>, Cooperative, CooperativeEpilogue, Half>;

// The configurations by number: $CIPS_CUDA_OPS_TILE's values in this order, and CipsFastPlan's `tile`
// (which also takes kTileWithC, MatMulAddLeakyRelu's).
enum TileConfig {
  kTile128x128 = 0,
  kTile128x256 = 1,
  kTile128x128Pingpong = 2,
  kTile256x128Cluster1x2 = 3,
  kTile128x192 = 4,
  kTile256x192 = 5,
  kTiles = 6,
  kTileWithC = 6,
  kTileByWidth = -1  // none forced: each call's width picks (default_tile)
};
const char* const kTileNames[kTiles] = {"128x128", "128x256", "128x128-pingpong", "256x128-1x2", "128x192",
                                        "256x192"};

// f(Config{}) with the configuration `tile` names.
template <class F>
auto with_tile(TileConfig tile, F&& f) {
  switch (tile) {
    case kTile128x256: return f(Tile128x256{});
    case kTile128x128Pingpong: return f(Tile128x128Pingpong{});
    case kTile256x128Cluster1x2: return f(Tile256x128Cluster1x2{});
    case kTile128x192: return f(Tile128x192{});
    case kTile256x192: return f(Tile256x192{});
    case kTileWithC: return f(Tile256x128Cluster1x2WithC{});
    default: return f(Tile128x128{});
  }
}

void check(cutlass::Status status, const char* what) {
  if (status != cutlass::Status::kSuccess)
    ORT_CXX_API_THROW(std::string("MatMulLeakyRelu: CUTLASS ") + what + ": " + cutlassGetStatusString(status),
                      ORT_RUNTIME_EXCEPTION);
}

void check(cudaError_t error, const char* what) { cips::check(error, "MatMulLeakyRelu", what); }

[[noreturn]] void fail(const std::string& message) { cips::fail("MatMulLeakyRelu", message); }

// CUTLASS's arguments for Y = LeakyRelu(X @ W + b + C) with the tile configuration Config: x [m, k],
// w [k, n], bias [n] or null, c [m, n] (configurations that read C) or null, y [m, n], on `sms`
// multiprocessors of `device`.
template <class Config>
typename Config::Gemm::Arguments gemm_arguments(const Half* x, const Half* w, const Half* bias, const Half* c,
                                                Half* y, int m, int n, int k, float alpha, int device, int sms) {
  using Kernel = typename Config::Kernel;
  using Gemm = typename Config::Gemm;
  // Strides in (rows, columns, batch) order of each operand as CUTLASS sees it: A (M, K), B (N, K), D (M, N).
  typename Kernel::StrideA stride_x = make_stride(int64_t(k), Int<1>{}, int64_t(0));
  typename Kernel::StrideB stride_w = make_stride(Int<1>{}, int64_t(n), int64_t(0));
  typename Kernel::StrideD stride_y = make_stride(int64_t(n), Int<1>{}, int64_t(0));
  typename Kernel::StrideC stride_c = stride_y;

  typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                {m, n, k, 1},
                                {x, stride_x, w, stride_w},
                                {{}, c, stride_c, y, stride_y}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = c == nullptr ? 0.0f : 1.0f;
  args.epilogue.thread.bias_ptr = bias;  // null: CUTLASS broadcasts 0 instead
  args.epilogue.thread.activation.leaky_alpha = alpha;
  args.hw_info.device_id = device;
  args.hw_info.sm_count = sms;
  return args;
}

// Y = LeakyRelu(X @ W + b + C) on `stream` with the tile configuration Config.
template <class Config>
void matmul_leaky_relu(const Half* x, const Half* w, const Half* bias, const Half* c, Half* y, int m, int n,
                       int k, float alpha, cudaStream_t stream) {
  using Gemm = typename Config::Gemm;
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  typename Gemm::Arguments args = gemm_arguments<Config>(x, w, bias, c, y, m, n, k, alpha, device, sms);
  Gemm gemm;
  check(gemm.can_implement(args), "cannot run this problem");
  if (Gemm::get_workspace_size(args) != 0) fail("this kernel configuration wants a workspace; none is allocated");
  check(gemm.initialize(args, nullptr, stream), "initialize");
  check(gemm.run(stream), "launch");
  check(cudaGetLastError(), "launch");
}

// The tile configuration $CIPS_CUDA_OPS_TILE asks for (read when a session makes the kernel), or
// kTileByWidth where it is unset (each layer then takes default_tile's).
TileConfig forced_tile() {
  const char* tile = std::getenv("CIPS_CUDA_OPS_TILE");
  if (tile == nullptr || *tile == 0) return kTileByWidth;
  std::string names;
  for (int t = 0; t < kTiles; ++t) {
    if (std::string(tile) == kTileNames[t]) return TileConfig(t);
    names += std::string(t == 0 ? "" : t + 1 == kTiles ? " or " : ", ") + kTileNames[t];
  }
  fail("CIPS_CUDA_OPS_TILE must be " + names + ", not " + tile);
  return kTileByWidth;
}

// The configuration for a layer of n output columns: 256x192 where its tiles pad n to fewer columns of
// MMA work than 256x128-1x2's clusters by more than a 192-wide tile's extra cost per column, else
// 256x128-1x2. That cost is at most 11%: on an H200, paper-256's fused 1024x1024 grid graph (520-column
// layers: 576 columns of work against 768, 0.75) took 20.8 ms against 24.9 (0.835; the other ops'
// fixed time counts against the 192-wide tiles, so 0.835 / 0.75 bounds their cost from above).
// 520, 264 and 136 columns take 256x192; 512, 256 and 200 take 256x128-1x2.
TileConfig default_tile(int64_t n) {
  const int64_t narrow = (n + 191) / 192 * 192, clustered = (n + 255) / 256 * 256;
  return narrow * 111 < clustered * 100 ? kTile256x192 : kTile256x128Cluster1x2;
}

// The configuration a call of n output columns runs with, given the kernel's forced one.
TileConfig layer_tile(TileConfig forced, int64_t n) { return forced == kTileByWidth ? default_tile(n) : forced; }

// with_c: MatMulAddLeakyRelu (inputs X, W, C); else MatMulLeakyRelu (X, W, optional b).
struct MatMulLeakyReluKernel : cips::Kernel<MatMulLeakyReluKernel> {
  float alpha;
  TileConfig forced;  // kTileByWidth: each call's width picks (default_tile)
  bool with_c;

  MatMulLeakyReluKernel(const OrtKernelInfo* info, bool with_c)
      : alpha(Ort::ConstKernelInfo(info).GetAttribute<float>("alpha")),
        forced(with_c ? kTileWithC : forced_tile()),
        with_c(with_c) {}

  void Compute(Ort::KernelContext ctx) const {
    Ort::ConstValue x = ctx.GetInput(0), w = ctx.GetInput(1);
    std::vector<int64_t> x_shape = x.GetTensorTypeAndShapeInfo().GetShape();
    std::vector<int64_t> w_shape = w.GetTensorTypeAndShapeInfo().GetShape();
    if (x_shape.size() < 2 || x_shape.size() > 3 || w_shape.size() != 2 || x_shape.back() != w_shape[0])
      fail("X must be [M, K] or [B, M, K] and W [K, N] with the same K");
    const int64_t k = w_shape[0], n = w_shape[1];
    int64_t m = 1;
    for (size_t i = 0; i + 1 < x_shape.size(); ++i) m *= x_shape[i];
    if (k % kAlign || n % kAlign) fail("K and N must be multiples of 8 (16-byte rows for TMA)");
    if (m > INT32_MAX || k > INT32_MAX || n > INT32_MAX) fail("a dimension exceeds 2^31 - 1");
    std::vector<int64_t> y_shape(x_shape.begin(), x_shape.end() - 1);
    y_shape.push_back(n);
    const Half* bias = nullptr;
    const Half* c = nullptr;
    if (with_c) {
      Ort::ConstValue c_value = ctx.GetInput(2);
      if (c_value.GetTensorTypeAndShapeInfo().GetShape() != y_shape) fail("C must have Y's shape, [..., M, N]");
      c = reinterpret_cast<const Half*>(c_value.GetTensorRawData());
    } else if (ctx.GetInputCount() > 2) {
      Ort::ConstValue b = ctx.GetInput(2);  // empty where the node leaves the optional input out
      if (b != nullptr) {
        std::vector<int64_t> b_shape = b.GetTensorTypeAndShapeInfo().GetShape();
        if (b_shape.size() != 1 || b_shape[0] != n) fail("b must be [N]");
        bias = reinterpret_cast<const Half*>(b.GetTensorRawData());
      }
    }
    Ort::UnownedValue y = ctx.GetOutput(0, y_shape);
    if (m == 0) return;
    auto* x_data = reinterpret_cast<const Half*>(x.GetTensorRawData());
    auto* w_data = reinterpret_cast<const Half*>(w.GetTensorRawData());
    auto* y_data = reinterpret_cast<Half*>(y.GetTensorMutableRawData());
    if (!cips::aligned16(x_data) || !cips::aligned16(w_data) || !cips::aligned16(y_data) ||
        (bias && !cips::aligned16(bias)) || (c && !cips::aligned16(c)))
      fail("X, W, b, C and Y must start on 16-byte boundaries (TMA)");
    auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    with_tile(layer_tile(forced, n), [&](auto config) {
      matmul_leaky_relu<decltype(config)>(x_data, w_data, bias, c, y_data, int(m), int(n), int(k), alpha, stream);
    });
  }
};

// MatMulLeakyRelu (X, W, optional b) or, with kWithC, MatMulAddLeakyRelu (X, W, C).
template <bool kWithC>
struct MatMulLeakyReluOp
    : Ort::CustomOpBase<MatMulLeakyReluOp<kWithC>, MatMulLeakyReluKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept {
    return cips::as_status([&] { *kernel = new MatMulLeakyReluKernel(info, kWithC); });
  }
  const char* GetName() const { return kWithC ? "MatMulAddLeakyRelu" : "MatMulLeakyRelu"; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    // b: the graph may fold it into W; C is always given
    return index == 2 && !kWithC ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16; }
};

// Host-side only, no GPU needed: whether CUTLASS accepts an m x n x k problem with configuration `tile`
// (enum TileConfig; kTileWithC: MatMulAddLeakyRelu's) on `sms` multiprocessors (0 = yes, 1 = no, 2 = no
// such configuration), and the workspace it would want, which the op does not allocate (it must be 0).
// The tests check every layer shape of the packaged model's fused graphs with it.
template <class Config>
int plan(int m, int n, int k, bool with_c, int sms, int64_t* workspace) {
  using Gemm = typename Config::Gemm;
  const auto* at = reinterpret_cast<Half*>(std::uintptr_t(256));  // never read: 16-byte aligned stand-ins
  typename Gemm::Arguments args =
      gemm_arguments<Config>(at, at, at, with_c ? at : nullptr, const_cast<Half*>(at), m, n, k, 0.2f, 0, sms);
  *workspace = int64_t(Gemm::get_workspace_size(args));
  return Gemm::can_implement(args) == cutlass::Status::kSuccess ? 0 : 1;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int CipsFastPlan(int m, int n, int k, int tile, int sms,
                                                                   int64_t* workspace) {
  if (tile < 0 || tile > kTileWithC) return 2;  // no such configuration
  return with_tile(TileConfig(tile), [&](auto config) {
    return plan<decltype(config)>(m, n, k, tile == kTileWithC, sms, workspace);
  });
}

// Host-side only: the configuration (enum TileConfig) a call of n output columns runs with, as a kernel
// made now would choose it: MatMulAddLeakyRelu's (with_c) or MatMulLeakyRelu's, which reads
// $CIPS_CUDA_OPS_TILE (an unknown name is an error: returns -1).
extern "C" __attribute__((visibility("default"))) int CipsFastLayerTile(int with_c, int64_t n) {
  try {
    return layer_tile(with_c ? kTileWithC : forced_tile(), n);
  } catch (...) {
    return -1;
  }
}

// Called by SessionOptions.register_custom_ops_library (ONNX Runtime looks this name up).
extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // an ONNX Runtime older than these headers: no status can be made to say so
    std::fprintf(stderr, "cips.fast: this ONNX Runtime does not offer API version %d\n", ORT_API_VERSION);
    return nullptr;
  }
  Ort::InitApi(api);
  try {
    static const MatMulLeakyReluOp<false> op;
    static const MatMulLeakyReluOp<true> op_with_c;
    // every session registered here reads the same domain, which must outlive them: never freed
    static Ort::CustomOpDomain* domain = [] {
      auto* d = new Ort::CustomOpDomain("cips.fast");
      d->Add(&op);
      d->Add(&op_with_c);
      add_grid_sin(*d);
      add_narrow_matmul(*d);
      add_grid_lookup(*d);
      return d;
    }();
    Ort::UnownedSessionOptions(options).Add(*domain);
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  }
  return nullptr;
}
