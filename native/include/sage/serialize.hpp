// Versioned, checksummed binary format of the native indexes.
//
//   bytes 0..8    magic "SAGEVIDX"
//   u32           format version (kFormatVersion)
//   u32           kind (1 = flat, 2 = ivf)
//   ...           kind-specific little-endian sections
//   u64           checksum of every byte before it (checksum64)
//
// Readers check the magic, the version, the checksum and every length against the
// bytes available before trusting anything, and raise IndexFormatError otherwise.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sage/errors.hpp"
#include "sage/limits.hpp"

namespace sage {

inline constexpr char kMagic[8] = {'S', 'A', 'G', 'E', 'V', 'I', 'D', 'X'};
inline constexpr std::uint32_t kFormatVersion = 1;
inline constexpr std::uint32_t kKindFlat = 1;
inline constexpr std::uint32_t kKindIvf = 2;

// 64-bit checksum: four interleaved multiply-xorshift lanes over 8-byte words.
inline std::uint64_t checksum64(const char* p, std::size_t n) {
  std::uint64_t h[4] = {0x9E3779B97F4A7C15ULL, 0xC2B2AE3D27D4EB4FULL, 0x165667B19E3779F9ULL,
                        0x27D4EB2F165667C5ULL};
  const std::uint64_t k = 0xff51afd7ed558ccdULL;
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int j = 0; j < 4; ++j) {
      std::uint64_t w;
      std::memcpy(&w, p + i + 8 * j, 8);
      h[j] = (h[j] ^ w) * k;
      h[j] ^= h[j] >> 29;
    }
  }
  std::uint64_t t = n;
  for (; i < n; ++i) t = (t ^ static_cast<unsigned char>(p[i])) * 0x100000001b3ULL;
  std::uint64_t r = t;
  for (int j = 0; j < 4; ++j) {
    r = (r ^ h[j]) * k;
    r ^= r >> 33;
  }
  return r;
}

class Writer {
 public:
  explicit Writer(std::uint32_t kind) {
    raw(kMagic, sizeof(kMagic));
    u32(kFormatVersion);
    u32(kind);
  }
  void raw(const void* p, std::size_t n) { buf_.append(static_cast<const char*>(p), n); }
  void u32(std::uint32_t v) { raw(&v, 4); }
  void u64(std::uint64_t v) { raw(&v, 8); }
  void f32(float v) { raw(&v, 4); }
  template <class T>
  void array(const T* p, std::size_t n) {
    u64(n);
    raw(p, n * sizeof(T));
  }
  std::string finish() {
    u64(checksum64(buf_.data(), buf_.size()));
    return std::move(buf_);
  }

 private:
  std::string buf_;
};

class Reader {
 public:
  // Validates header and checksum; `expected_kind` must match.
  Reader(const char* p, std::size_t n, std::uint32_t expected_kind) : p_(p), n_(n) {
    if (n < sizeof(kMagic) + 16 || std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
      throw format_error("not a SAGE vector index (bad magic bytes)");
    }
    pos_ = sizeof(kMagic);
    const std::uint32_t version = u32();
    if (version != kFormatVersion) {
      throw format_error("unsupported index format version " + std::to_string(version) +
                         " (this build reads version " + std::to_string(kFormatVersion) + ")");
    }
    const std::uint32_t kind = u32();
    if (kind != expected_kind) {
      throw format_error("the data holds another kind of index (kind " + std::to_string(kind) +
                         ", expected " + std::to_string(expected_kind) + ")");
    }
    std::uint64_t stored;
    std::memcpy(&stored, p + n - 8, 8);
    if (stored != checksum64(p, n - 8)) {
      throw format_error("checksum mismatch: the index data is corrupt or truncated");
    }
    n_ = n - 8;
  }
  void raw(void* out, std::size_t n) {
    if (n > n_ - pos_) throw format_error("index data ends early (truncated section)");
    std::memcpy(out, p_ + pos_, n);
    pos_ += n;
  }
  std::uint32_t u32() {
    std::uint32_t v;
    raw(&v, 4);
    return v;
  }
  std::uint64_t u64() {
    std::uint64_t v;
    raw(&v, 8);
    return v;
  }
  float f32() {
    float v;
    raw(&v, 4);
    return v;
  }
  template <class T>
  std::vector<T> array(std::size_t expected_count) {
    const std::uint64_t count = u64();
    if (count != expected_count) throw format_error("inconsistent section length");
    if (count > (n_ - pos_) / sizeof(T)) throw format_error("index data ends early");
    std::vector<T> out(count);
    raw(out.data(), count * sizeof(T));
    return out;
  }
  // Bytes left before the checksum.
  std::size_t remaining() const noexcept { return n_ - pos_; }
  // a * b for a section length; IndexFormatError if it overflows.
  static std::size_t product(std::size_t a, std::size_t b) {
    std::size_t out = 0;
    if (__builtin_mul_overflow(a, b, &out)) throw format_error("implausible section length");
    return out;
  }
  void expect_end() const {
    if (pos_ != n_) throw format_error("unexpected bytes after the index data");
  }

 private:
  const char* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
};

}  // namespace sage
