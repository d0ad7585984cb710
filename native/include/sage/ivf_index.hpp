// Approximate search over inverted lists: k-means centroids are trained on a sample,
// every vector goes to the list of its nearest centroid, and a query scans only the
// lists of its `nprobe` nearest centroids.
//
// The first add() trains on that batch when the index is untrained (or call train()
// with a sample); later adds are assigned to the existing centroids without
// retraining. Lists store rows in the same panel layout as FlatIndex, so the same
// kernels scan them; removal tombstones rows and compacts a list once a quarter of it
// is dead. Filtered search probes the nprobe nearest lists that hold allowed ids, or
// scans every allowed row exactly when the allow-list is small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sage/flat_index.hpp"
#include "sage/index_common.hpp"

namespace sage {

struct IvfOptions {
  std::size_t nlist = 0;       // 0: round(sqrt(n)) of the training set
  std::size_t nprobe = 8;
  std::size_t train_iters = 10;
  std::size_t max_train = 0;   // 0: 256 * nlist points at most
  std::uint64_t seed = 0;
};

class IVFIndex {
 public:
  IVFIndex(std::size_t dim, Metric metric, const IvfOptions& options);

  std::size_t dim() const noexcept { return dim_; }
  Metric metric() const noexcept { return metric_; }
  std::size_t size() const;
  std::size_t memory_bytes() const;
  bool trained() const;
  std::size_t nlist() const;
  std::size_t nprobe() const;
  void set_nprobe(std::size_t nprobe);
  bool contains(std::uint64_t id) const;
  std::vector<std::size_t> list_sizes() const;

  void train(const float* vectors, std::size_t n, int threads);
  void add(const std::uint64_t* ids, const float* vectors, std::size_t n, int threads);
  std::size_t remove(const std::uint64_t* ids, std::size_t n);
  // nprobe == 0 uses the index's nprobe.
  void search(const SearchArgs& args, std::size_t nprobe) const;
  void get(const std::uint64_t* ids, std::size_t n, float* out) const;

  std::string serialize() const;
  static std::unique_ptr<IVFIndex> deserialize(const char* data, std::size_t size);

 private:
  void train_locked(const float* vectors, std::size_t n, int threads);
  std::vector<std::uint32_t> assign(const float* vectors, std::size_t n, int threads) const;
  void append_locked(const std::uint64_t* ids, const float* prepared, std::size_t n,
                     const std::vector<std::uint32_t>& lists);
  void set_centroids(const std::vector<float>& centroids);

  std::size_t dim_;
  Metric metric_;
  IvfOptions opt_;
  mutable std::shared_mutex mu_;
  bool trained_ = false;
  std::vector<float> centroid_rows_;  // nlist * dim, row-major (for serialisation)
  PanelStore centroids_;              // the same, scanned to pick lists
  std::vector<PanelStore> lists_;
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::uint32_t>> where_;
};

}  // namespace sage
