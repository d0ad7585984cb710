// Plain data exchanged with the scan kernels: result heaps and scan jobs.
// Header-only PODs with no inline functions, so the per-ISA kernel translation units
// can include it without sharing any code with the rest of the module.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sage {

struct HeapItem {
  float score;
  std::uint64_t id;
};

// A bounded min-heap (the root is the worst kept result) over caller-owned storage.
// The kernels push into it; finish() sorts it best-first.
struct TopK {
  HeapItem* items = nullptr;
  std::size_t size = 0;
  std::size_t k = 0;
};

// One unit of scanning work for the kernels: queries [0, m) against panels
// [panel_begin, panel_end) of a store, results into heaps[0..m).
struct ScanJob {
  const float* queries = nullptr;  // m * dim, row-major
  std::size_t m = 0;
  std::size_t dim = 0;
  const float* panels = nullptr;   // store data
  const std::uint16_t* masks = nullptr;
  const std::uint16_t* allow = nullptr;  // optional, per panel
  const std::uint64_t* ids = nullptr;
  const float* sqnorms = nullptr;  // used when l2
  std::size_t panel_begin = 0;
  std::size_t panel_end = 0;
  bool l2 = false;  // score = 2<q,x> - |x|^2 (the caller subtracts |q|^2)
  TopK* heaps = nullptr;
};

}  // namespace sage
