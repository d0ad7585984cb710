// The scan kernels compiled for the baseline target (x86-64-v2 / armv8-a).
#include <cstddef>
#include <cstdint>

#include "sage/scan_job.hpp"

namespace sage::kernels_generic {
#include "scan_kernels.inc"
}  // namespace sage::kernels_generic
