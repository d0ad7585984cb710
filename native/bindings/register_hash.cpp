// Bindings for stable hashing and build information.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "sage/hash.hpp"
#include "sage/kernels.hpp"
#include "sage/thread_pool.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

nb::dict build_info() {
  nb::dict info;
  info["version"] = SAGE_VERSION;
  info["arch"] = SAGE_NATIVE_ARCH;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
#if defined(__AVX512F__)
  info["simd"] = "avx512";
#elif defined(__AVX2__)
  info["simd"] = "avx2";
#elif defined(__SSE4_2__)
  info["simd"] = "sse4.2";
#elif defined(__ARM_NEON)
  info["simd"] = "neon";
#else
  info["simd"] = "baseline";
#endif
  // What the vector-index scans dispatch to at run time (cpuid), on how many threads.
  info["kernels"] = sage::kernels().name;
  info["hardware_threads"] = std::to_string(sage::hardware_threads());
  info["nanobind"] = std::to_string(NB_VERSION_MAJOR) + "." + std::to_string(NB_VERSION_MINOR) + "." + std::to_string(NB_VERSION_PATCH);
  return info;
}

}  // namespace

void register_hash(nb::module_& m) {
  m.def(
      "hash64",
      [](nb::bytes data, std::uint64_t seed) {
        return sage::hash64(data.c_str(), data.size(), seed);
      },
      "data"_a, "seed"_a = 0,
      "Stable 64-bit hash of a byte string (FNV-1a + splitmix64 finaliser).\n\n"
      "The value is identical across processes, runs and platforms, unlike Python's\n"
      "salted ``hash()``; it is what key-based routing partitions by.");
  m.def("build_info", &build_info,
        "Compiler, target instruction set and version the extension was built with.");
}
