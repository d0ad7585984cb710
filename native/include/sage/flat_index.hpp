// Exact vector search: every live row is scored against every query by the SIMD scan
// kernels, keeping a top-k heap per query.
//
// Ids are uint64 (kMissingId is reserved for padding). add() rejects ids that are
// already present or repeated in the batch, before changing anything. remove()
// tombstones rows and compacts once a quarter of the rows are dead. Searches take a
// shared lock and may run concurrently with each other; add/remove take it exclusively.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "sage/index_common.hpp"
#include "sage/serialize.hpp"

namespace sage {

struct SearchArgs {
  const float* queries = nullptr;
  std::size_t m = 0;
  std::size_t k = 0;
  const std::uint64_t* allowed = nullptr;  // allow-list when filtered
  std::size_t n_allowed = 0;
  bool filtered = false;
  int threads = 0;  // <= 0: all hardware threads
  std::uint64_t* out_ids = nullptr;  // m * k
  float* out_scores = nullptr;       // m * k
};

// Validates a batch of new ids against a lookup and itself (no kMissingId, no repeat).
template <class Contains>
void check_new_ids(const std::uint64_t* ids, std::size_t n, Contains&& contains);

class FlatIndex {
 public:
  FlatIndex(std::size_t dim, Metric metric);

  std::size_t dim() const noexcept { return dim_; }
  Metric metric() const noexcept { return metric_; }
  std::size_t size() const;
  std::size_t memory_bytes() const;
  bool contains(std::uint64_t id) const;

  void add(const std::uint64_t* ids, const float* vectors, std::size_t n);
  std::size_t remove(const std::uint64_t* ids, std::size_t n);
  void search(const SearchArgs& args) const;
  // Vectors of the given ids (row-major into out); throws UnknownIdError if absent.
  void get(const std::uint64_t* ids, std::size_t n, float* out) const;

  std::string serialize() const;
  static std::unique_ptr<FlatIndex> deserialize(const char* data, std::size_t size);

 private:
  void add_locked(const std::uint64_t* ids, const float* vectors, std::size_t n, bool prepared);

  std::size_t dim_;
  Metric metric_;
  mutable std::shared_mutex mu_;
  PanelStore store_;
  std::unordered_map<std::uint64_t, std::uint32_t> rows_;
};

template <class Contains>
void check_new_ids(const std::uint64_t* ids, std::size_t n, Contains&& contains) {
  std::vector<std::uint64_t> sorted(ids, ids + n);
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < n; ++i) {
    if (sorted[i] == kMissingId) {
      throw std::invalid_argument("id 2**64-1 is reserved (it pads missing results)");
    }
    if (i > 0 && sorted[i] == sorted[i - 1]) {
      throw duplicate_id("id " + std::to_string(sorted[i]) + " appears twice in the batch");
    }
    if (contains(sorted[i])) {
      throw duplicate_id("id " + std::to_string(sorted[i]) +
                         " is already in the index; remove it first to replace it");
    }
  }
}

// Reads a metric code of a saved index; IndexFormatError unless it is known.
inline Metric read_metric(Reader& r) {
  const std::uint32_t code = r.u32();
  if (code > 2) throw format_error("unknown metric code " + std::to_string(code));
  return static_cast<Metric>(code);
}

// Reads the dimension of a saved index; IndexFormatError unless 1 <= dim <= kMaxDim.
inline std::size_t read_dim(Reader& r) {
  const std::uint64_t dim = r.u64();
  if (dim < 1 || dim > kMaxDim) {
    throw format_error("implausible dimension " + std::to_string(dim) + " (at most " +
                       std::to_string(kMaxDim) + ")");
  }
  return static_cast<std::size_t>(dim);
}

// Checks n stored rows of a saved index before they are used: ids valid and new
// (per `contains`), vectors finite, and unit length (or zero) for cos, as the index
// stores them. Throws IndexFormatError.
template <class Contains>
void check_stored_rows(const std::uint64_t* ids, const float* vectors, std::size_t n,
                       std::size_t dim, Metric metric, Contains&& contains) {
  try {
    check_new_ids(ids, n, contains);
    check_finite(vectors, n * dim, "stored vectors");
  } catch (const std::exception& e) {
    throw format_error(std::string("invalid index contents: ") + e.what());
  }
  if (metric == Metric::cos) {
    for (std::size_t i = 0; i < n; ++i) {
      if (!unit_or_zero(vectors + i * dim, dim)) {
        throw format_error("invalid index contents: a stored cos vector is not unit length");
      }
    }
  }
}

}  // namespace sage
