// What the cips.fast ops share, and the ops defined outside matmul_leaky_relu.cu, which registers the
// domain (RegisterCustomOps).
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT  // Ort::InitApi in RegisterCustomOps
#endif
#include <onnxruntime_cxx_api.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>

namespace cips {

// f() with ONNX Runtime's exceptions and any other std::exception returned as a status (null: success),
// for the noexcept entry points ONNX Runtime calls (ComputeV2, CreateKernelV2).
template <class F>
OrtStatusPtr as_status(F&& f) noexcept {
  try {
    f();
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_RUNTIME_EXCEPTION).release();
  }
  return nullptr;
}

// The entry point ONNX Runtime calls on a kernel: Derived::Compute(Ort::KernelContext), its exceptions
// returned as a status.
template <class Derived>
struct Kernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* raw) noexcept {
    return as_status([&] { static_cast<Derived*>(this)->Compute(Ort::KernelContext(raw)); });
  }
};

// Input the op cannot take: one line naming the op.
[[noreturn]] inline void fail(const char* op, const std::string& message) {
  ORT_CXX_API_THROW(std::string(op) + ": " + message, ORT_INVALID_ARGUMENT);
}

inline void check(cudaError_t error, const char* op, const char* what) {
  if (error != cudaSuccess)
    ORT_CXX_API_THROW(std::string(op) + ": " + what + ": " + cudaGetErrorString(error), ORT_RUNTIME_EXCEPTION);
}

// Whether p may be read or written 16 bytes (8 halves) at a time.
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Blocks of `threads` for a grid-stride loop over `total` items: enough to fill any GPU several times
// over, never more than there is work.
inline int64_t stride_blocks(int64_t total, int threads) {
  return std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20);
}

}  // namespace cips

// cips.fast::GridSin (grid_sin.cu) added to the domain.
void add_grid_sin(Ort::CustomOpDomain& domain);

// cips.fast::NarrowMatMul (narrow_matmul.cu) added to the domain.
void add_narrow_matmul(Ort::CustomOpDomain& domain);

// cips.fast::GridLookup (grid_lookup.cu) added to the domain.
void add_grid_lookup(Ort::CustomOpDomain& domain);
