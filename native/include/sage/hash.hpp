// Stable 64-bit hashing of byte strings.
//
// Keys are partitioned across replicas and engines by this hash, so it must give the
// same value in every process, on every run and on every platform: FNV-1a over the bytes
// followed by the splitmix64 finaliser for avalanche. sage_core/_reference.py holds the
// same algorithm in pure Python for differential tests.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sage {

inline constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
inline constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

inline std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline std::uint64_t hash64(const void* data, std::size_t size, std::uint64_t seed = 0) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = kFnvOffset ^ mix64(seed);
  for (std::size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return mix64(h ^ static_cast<std::uint64_t>(size));
}

}  // namespace sage
