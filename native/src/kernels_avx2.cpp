// The scan kernels compiled for AVX2 + FMA (this file only; see CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "sage/scan_job.hpp"

namespace sage::kernels_avx2 {
#include "scan_kernels.inc"
}  // namespace sage::kernels_avx2
