// Scan kernels, compiled once per instruction set and chosen at run time.
//
// native/src/kernels_avx2.cpp and kernels_generic.cpp compile the same source
// (native/src/scan_kernels.inc) with different target flags into different namespaces;
// kernels.cpp picks one at first use from cpuid (override: SAGE_KERNELS=generic|avx2,
// or set_kernels()). The kernel translation units use no inline functions or
// templates shared with other units, so no AVX2 code can leak into the generic path.
#pragma once

#include <string>

#include "sage/scan_job.hpp"

namespace sage {

using ScanFn = void (*)(const ScanJob& job);

struct KernelSet {
  const char* name;  // "avx2+fma" or "generic"
  ScanFn scan;
};

// The kernels in use (selected on first call).
const KernelSet& kernels();

// Force a kernel set by name ("auto", "avx2", "generic"). Throws if the CPU lacks it.
void set_kernels(const std::string& name);

// Whether this CPU can run the AVX2+FMA kernels.
bool cpu_has_avx2_fma();

}  // namespace sage

namespace sage::kernels_avx2 {
void scan(const ScanJob& job);
}
namespace sage::kernels_generic {
void scan(const ScanJob& job);
}
