// The cips.fast ops defined outside matmul_leaky_relu.cu, which registers the domain (RegisterCustomOps).
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT  // Ort::InitApi in RegisterCustomOps
#endif
#include <onnxruntime_cxx_api.h>

// cips.fast::GridSin (grid_sin.cu) added to the domain.
void add_grid_sin(Ort::CustomOpDomain& domain);

// cips.fast::NarrowMatMul (narrow_matmul.cu) added to the domain.
void add_narrow_matmul(Ort::CustomOpDomain& domain);
