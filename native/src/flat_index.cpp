#include "sage/flat_index.hpp"

#include <algorithm>
#include <mutex>
#include <vector>

#include "sage/limits.hpp"
#include "sage/serialize.hpp"

namespace sage {

FlatIndex::FlatIndex(std::size_t dim, Metric metric)
    : dim_(check_dim(dim)), metric_(metric), store_(dim) {}

std::size_t FlatIndex::size() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return store_.live();
}

bool FlatIndex::contains(std::uint64_t id) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return rows_.count(id) != 0;
}

std::size_t FlatIndex::memory_bytes() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return store_.memory_bytes() + rows_.bucket_count() * sizeof(void*) +
         rows_.size() * (sizeof(std::uint64_t) * 2 + sizeof(void*));
}

void FlatIndex::add(const std::uint64_t* ids, const float* vectors, std::size_t n) {
  check_finite(vectors, checked_mul(n, dim_, "the batch"), "vectors");
  std::unique_lock<std::shared_mutex> lk(mu_);
  check_row_room(store_.rows(), n, "a FlatIndex");
  check_new_ids(ids, n, [&](std::uint64_t id) { return rows_.count(id) != 0; });
  add_locked(ids, vectors, n, false);
}

void FlatIndex::add_locked(const std::uint64_t* ids, const float* vectors, std::size_t n,
                           bool prepared) {
  store_.reserve(store_.rows() + n);
  rows_.reserve(rows_.size() + n);
  std::vector<float> row(dim_);
  for (std::size_t i = 0; i < n; ++i) {
    const float* v = vectors + i * dim_;
    if (metric_ == Metric::cos && !prepared) {
      std::copy(v, v + dim_, row.begin());
      normalize(row.data(), dim_);
      v = row.data();
    }
    rows_[ids[i]] = static_cast<std::uint32_t>(store_.append(ids[i], v));
  }
}

std::size_t FlatIndex::remove(const std::uint64_t* ids, std::size_t n) {
  std::unique_lock<std::shared_mutex> lk(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    if (rows_.count(ids[i]) == 0) {
      throw unknown_id("id " + std::to_string(ids[i]) + " is not in the index (nothing removed)");
    }
  }
  std::size_t removed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = rows_.find(ids[i]);
    if (it == rows_.end()) continue;  // repeated in the batch
    store_.kill(it->second);
    rows_.erase(it);
    ++removed;
  }
  const std::size_t dead = store_.rows() - store_.live();
  if (dead > 0 && dead * 4 >= store_.rows()) {
    store_.compact([&](std::uint64_t id, std::size_t row) {
      rows_[id] = static_cast<std::uint32_t>(row);
    });
  }
  return removed;
}

void FlatIndex::get(const std::uint64_t* ids, std::size_t n, float* out) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    auto it = rows_.find(ids[i]);
    if (it == rows_.end()) throw unknown_id("id " + std::to_string(ids[i]) + " is not in the index");
    store_.gather(it->second, out + i * dim_);
  }
}

void FlatIndex::search(const SearchArgs& a) const {
  check_range(a.k, 1, kMaxK, "k");
  check_finite(a.queries, checked_mul(a.m, dim_, "the query batch"), "queries");
  std::vector<float> offsets;
  const std::vector<float> q = prepare_queries(a.queries, a.m, dim_, metric_, offsets);
  std::shared_lock<std::shared_mutex> lk(mu_);
  std::vector<std::uint16_t> allow;
  if (a.filtered) {
    allow.assign(store_.panels(), 0);
    for (std::size_t i = 0; i < a.n_allowed; ++i) {
      auto it = rows_.find(a.allowed[i]);
      if (it != rows_.end()) {
        allow[it->second / kLanes] |= static_cast<std::uint16_t>(1u << (it->second % kLanes));
      }
    }
  }
  // Heaps never hold more than the live rows; the rest of k is padding.
  HeapSet heaps(a.m, std::max<std::size_t>(1, std::min(a.k, store_.live())));
  if (!a.filtered || a.n_allowed > 0) {
    scan_store(store_, q.data(), a.m, metric_ == Metric::l2, a.filtered ? allow.data() : nullptr,
               a.threads, heaps);
  }
  for (std::size_t i = 0; i < a.m; ++i) {
    finish_topk(heaps.heaps[i], a.out_ids + i * a.k, a.out_scores + i * a.k, a.k, offsets[i]);
    if (metric_ == Metric::l2) {
      for (std::size_t j = 0; j < a.k; ++j) {
        float& s = a.out_scores[i * a.k + j];
        s = std::min(s, 0.0f);  // -|q-x|^2 <= 0; the expansion can round above it
      }
    }
  }
}

std::string FlatIndex::serialize() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  Writer w(kKindFlat);
  w.u32(static_cast<std::uint32_t>(metric_));
  w.u64(dim_);
  const std::size_t n = store_.live();
  w.u64(n);
  std::vector<std::uint64_t> ids;
  std::vector<float> vecs(n * dim_);
  ids.reserve(n);
  for (std::size_t r = 0; r < store_.rows(); ++r) {
    if (!store_.is_live(r)) continue;
    store_.gather(r, vecs.data() + ids.size() * dim_);
    ids.push_back(store_.id_at(r));
  }
  w.array(ids.data(), ids.size());
  w.array(vecs.data(), vecs.size());
  return w.finish();
}

std::unique_ptr<FlatIndex> FlatIndex::deserialize(const char* data, std::size_t size) {
  Reader r(data, size, kKindFlat);
  const Metric metric = read_metric(r);
  const std::size_t dim = read_dim(r);
  const std::uint64_t n = r.u64();
  if (n > kMaxRows || n > r.remaining() / sizeof(std::uint64_t)) {
    throw format_error("implausible row count " + std::to_string(n) + " for " +
                       std::to_string(r.remaining()) + " bytes of data");
  }
  const std::vector<std::uint64_t> ids = r.array<std::uint64_t>(n);
  const std::vector<float> vecs = r.array<float>(Reader::product(n, dim));
  r.expect_end();
  check_stored_rows(ids.data(), vecs.data(), n, dim, metric,
                    [](std::uint64_t) { return false; });
  auto index = std::make_unique<FlatIndex>(dim, metric);
  index->add_locked(ids.data(), vecs.data(), n, true);
  return index;
}

}  // namespace sage
