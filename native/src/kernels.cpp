// Run-time choice of the scan kernels (cpuid), with an override for tests/benchmarks.
#include "sage/kernels.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace sage {

namespace {

const KernelSet kAvx2{"avx2+fma", &kernels_avx2::scan};
const KernelSet kGeneric{"generic", &kernels_generic::scan};

std::atomic<const KernelSet*> g_active{nullptr};

const KernelSet* pick(const std::string& name) {
  if (name == "generic") return &kGeneric;
  if (name == "avx2") {
    if (!cpu_has_avx2_fma()) throw std::invalid_argument("this CPU has no AVX2+FMA");
    return &kAvx2;
  }
  if (name == "auto" || name.empty()) return cpu_has_avx2_fma() ? &kAvx2 : &kGeneric;
  throw std::invalid_argument("kernels must be 'auto', 'avx2' or 'generic', not '" + name +
                              "'");
}

}  // namespace

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const KernelSet& kernels() {
  const KernelSet* k = g_active.load(std::memory_order_acquire);
  if (k == nullptr) {
    const char* env = std::getenv("SAGE_KERNELS");
    k = pick(env != nullptr ? env : "auto");
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

void set_kernels(const std::string& name) { g_active.store(pick(name), std::memory_order_release); }

}  // namespace sage
