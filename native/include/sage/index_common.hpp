// Building blocks shared by the vector indexes: metrics, the panel-major row store the
// SIMD kernels scan, top-k result heaps, and the scan job handed to the kernels.
//
// Rows live in panels of kLanes (16) rows. Inside a panel the layout is dimension-major
// (panel[d * 16 + lane]), so a kernel loads the d-th coordinate of 16 rows with two
// 8-float vector loads and multiplies them by one broadcast query coordinate. Each
// panel has a 16-bit mask of live rows; removal clears a bit (tombstone) and
// compaction later moves live rows down to close the holes.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "sage/errors.hpp"
#include "sage/limits.hpp"
#include "sage/scan_job.hpp"

namespace sage {

inline constexpr std::size_t kLanes = 16;
// Multiply-adds below which another search thread costs more than it saves.
inline constexpr double kMinWorkPerThread = 1 << 20;
inline constexpr std::uint64_t kMissingId = std::numeric_limits<std::uint64_t>::max();

// Score convention (all backends): higher is more similar.
//   ip:  <q, x>        cos: <q/|q|, x/|x|>        l2: -|q - x|^2
enum class Metric : std::uint32_t { ip = 0, l2 = 1, cos = 2 };

inline Metric parse_metric(const std::string& name) {
  if (name == "ip") return Metric::ip;
  if (name == "l2") return Metric::l2;
  if (name == "cos") return Metric::cos;
  throw std::invalid_argument("metric must be 'ip', 'l2' or 'cos', not '" + name + "'");
}

inline const char* metric_name(Metric m) {
  switch (m) {
    case Metric::ip: return "ip";
    case Metric::l2: return "l2";
    case Metric::cos: return "cos";
  }
  return "?";
}

// Returns dim, or throws std::invalid_argument unless 1 <= dim <= kMaxDim.
inline std::size_t check_dim(std::size_t dim) {
  check_range(dim, 1, kMaxDim, "dim");
  return dim;
}

// Throws IndexCapacityError when `rows` stored rows plus `n` new ones exceed what
// row numbers (uint32) address.
inline void check_row_room(std::size_t rows, std::size_t n, const char* what) {
  if (n > kMaxRows || rows > kMaxRows - n) {
    throw capacity_error(std::string(what) + " holds at most " + std::to_string(kMaxRows) +
                         " rows (it has " + std::to_string(rows) + ", " + std::to_string(n) +
                         " more were given); split the data over several indexes");
  }
}

// Scales v to unit length in place (zero vectors stay zero).
inline void normalize(float* v, std::size_t dim) {
  double s = 0;
  for (std::size_t d = 0; d < dim; ++d) s += static_cast<double>(v[d]) * v[d];
  if (s > 0) {
    const auto inv = static_cast<float>(1.0 / std::sqrt(s));
    for (std::size_t d = 0; d < dim; ++d) v[d] *= inv;
  }
}

inline float squared_norm(const float* v, std::size_t dim) {
  double s = 0;
  for (std::size_t d = 0; d < dim; ++d) s += static_cast<double>(v[d]) * v[d];
  return static_cast<float>(s);
}

// Whether v is unit length (as normalize() leaves it, within float rounding) or zero.
inline bool unit_or_zero(const float* v, std::size_t dim) {
  const float s = squared_norm(v, dim);
  return s == 0.0f || std::fabs(s - 1.0f) <= 1e-3f;
}

// Sorts a heap best-first (score descending, id ascending on ties) and writes k
// results, padding with kMissingId / -inf.
void finish_topk(TopK& heap, std::uint64_t* out_ids, float* out_scores, std::size_t k,
                 float score_offset);

// Pushes every item of `from` into `into` (merging per-thread heaps).
void merge_topk(TopK& into, const TopK& from);

class PanelStore {
 public:
  PanelStore() = default;
  explicit PanelStore(std::size_t dim) : dim_(dim) {}

  std::size_t dim() const noexcept { return dim_; }
  std::size_t rows() const noexcept { return rows_; }       // including tombstones
  std::size_t live() const noexcept { return live_count_; }  // rows not removed
  std::size_t panels() const noexcept { return masks_.size(); }
  const float* data() const noexcept { return data_.data(); }
  const std::uint16_t* masks() const noexcept { return masks_.data(); }
  const std::uint64_t* ids() const noexcept { return ids_.data(); }
  const float* sqnorms() const noexcept { return sqnorms_.data(); }
  std::uint64_t id_at(std::size_t row) const noexcept { return ids_[row]; }
  bool is_live(std::size_t row) const noexcept {
    return (masks_[row / kLanes] >> (row % kLanes)) & 1u;
  }

  void reserve(std::size_t rows);
  // Appends one row; returns its row number.
  std::size_t append(std::uint64_t id, const float* vec);
  void kill(std::size_t row);
  // Copies row `row` into out[0..dim).
  void gather(std::size_t row, float* out) const;
  // Moves live rows down over tombstones (order kept). Calls moved(id, new_row) for
  // every live row.
  template <class Moved>
  void compact(Moved&& moved);
  std::size_t memory_bytes() const {
    return data_.capacity() * sizeof(float) + ids_.capacity() * sizeof(std::uint64_t) +
           masks_.capacity() * sizeof(std::uint16_t) + sqnorms_.capacity() * sizeof(float);
  }

 private:
  void set_row(std::size_t row, std::uint64_t id, const float* vec, float sqnorm);

  std::size_t dim_ = 0;
  std::size_t rows_ = 0;
  std::size_t live_count_ = 0;
  std::vector<float> data_;            // panels * dim * 16
  std::vector<std::uint64_t> ids_;     // per row
  std::vector<float> sqnorms_;         // per row, |x|^2
  std::vector<std::uint16_t> masks_;   // per panel, live rows
};

template <class Moved>
void PanelStore::compact(Moved&& moved) {
  std::vector<float> row(dim_);
  std::size_t out = 0;
  for (std::size_t r = 0; r < rows_; ++r) {
    if (!is_live(r)) continue;
    if (out != r) {
      gather(r, row.data());
      set_row(out, ids_[r], row.data(), sqnorms_[r]);
    }
    moved(ids_[out], out);
    ++out;
  }
  rows_ = out;
  const std::size_t npanels = (rows_ + kLanes - 1) / kLanes;
  masks_.assign(npanels, 0);
  for (std::size_t r = 0; r < rows_; ++r) masks_[r / kLanes] |= static_cast<std::uint16_t>(1u << (r % kLanes));
  data_.resize(npanels * dim_ * kLanes);
  ids_.resize(rows_);
  sqnorms_.resize(rows_);
  live_count_ = rows_;
}

}  // namespace sage

namespace sage {

// Heaps for m queries with capacity k each, over one contiguous allocation.
struct HeapSet {
  HeapSet(std::size_t m, std::size_t k) : storage(m * k), heaps(m) {
    for (std::size_t i = 0; i < m; ++i) heaps[i] = TopK{storage.data() + i * k, 0, k};
  }
  std::vector<HeapItem> storage;
  std::vector<TopK> heaps;
};

// Top-k of m queries against every live (and allowed) row of `store`, on up to
// `threads` threads. Splits the work by queries when there are enough of them,
// otherwise by panels with one heap set per slice, merged at the end.
void scan_store(const PanelStore& store, const float* queries, std::size_t m, bool l2,
                const std::uint16_t* allow, int threads, HeapSet& out);

// Copies queries, normalising them for cos; for l2 fills offsets with -|q|^2 (the
// part of -|q - x|^2 the kernels leave out).
std::vector<float> prepare_queries(const float* queries, std::size_t m, std::size_t dim,
                                   Metric metric, std::vector<float>& offsets);

// Throws std::invalid_argument if any value is NaN or infinite.
void check_finite(const float* v, std::size_t n, const char* what);

}  // namespace sage
