// Bounds on every size the native code accepts, and overflow-checked arithmetic.
//
// Sizes that come from callers or from files (dimensions, k, list counts, training
// iterations, queue capacities) are checked against these limits before anything is
// allocated or multiplied, so no product of two of them can overflow size_t. The
// Python wrappers read the same values through sage_core._native.limits().
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace sage {

// Largest vector dimension an index accepts (and a saved index may declare).
inline constexpr std::size_t kMaxDim = std::size_t{1} << 20;
// Largest k a search accepts.
inline constexpr std::size_t kMaxK = std::size_t{1} << 16;
// Largest number of IVF lists, and largest nprobe.
inline constexpr std::size_t kMaxNlist = std::size_t{1} << 20;
// Most k-means iterations an IVF index runs when it trains.
inline constexpr std::size_t kMaxTrainIters = 1000;
// Most slots of a BoundedQueue (8 bytes each, allocated up front).
inline constexpr std::size_t kMaxQueueCapacity = std::size_t{1} << 26;
// Most rows one row store holds: rows are addressed by uint32 in the id maps.
inline constexpr std::size_t kMaxRows = std::numeric_limits<std::uint32_t>::max();

// a * b, or std::invalid_argument naming `what` when the product overflows size_t.
inline std::size_t checked_mul(std::size_t a, std::size_t b, const char* what) {
  std::size_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    throw std::invalid_argument(std::string(what) + " is too large (" + std::to_string(a) +
                                " x " + std::to_string(b) + " overflows)");
  }
  return out;
}

// a + b, or std::invalid_argument naming `what` when the sum overflows size_t.
inline std::size_t checked_add(std::size_t a, std::size_t b, const char* what) {
  std::size_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) {
    throw std::invalid_argument(std::string(what) + " is too large (" + std::to_string(a) +
                                " + " + std::to_string(b) + " overflows)");
  }
  return out;
}

// Throws std::invalid_argument unless lo <= value <= hi; the message names the limit.
inline void check_range(std::size_t value, std::size_t lo, std::size_t hi, const char* what) {
  if (value < lo || value > hi) {
    throw std::invalid_argument(std::string(what) + " must be between " + std::to_string(lo) +
                                " and " + std::to_string(hi) + ", got " +
                                std::to_string(value));
  }
}

}  // namespace sage
