#include "sage/ivf_index.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <random>

#include "sage/kernels.hpp"
#include "sage/limits.hpp"
#include "sage/serialize.hpp"
#include "sage/thread_pool.hpp"

namespace sage {

namespace {

// Scoring against centroids: nearest by l2 for l2, largest inner product otherwise
// (for cos the vectors and centroids are unit length, i.e. spherical k-means).
bool centroid_l2(Metric m) { return m == Metric::l2; }

// IndexFormatError if a saved section holds NaN or infinite values.
void check_finite_or_format_error(const std::vector<float>& v) {
  try {
    check_finite(v.data(), v.size(), "stored centroids");
  } catch (const std::invalid_argument& e) {
    throw format_error(std::string("invalid index contents: ") + e.what());
  }
}

// Throws std::invalid_argument unless the options are within the limits.
void check_options(const IvfOptions& o) {
  check_range(o.nlist, 0, kMaxNlist, "nlist");
  check_range(o.nprobe, 1, kMaxNlist, "nprobe");
  check_range(o.train_iters, 1, kMaxTrainIters, "train_iters");
}

}  // namespace

IVFIndex::IVFIndex(std::size_t dim, Metric metric, const IvfOptions& options)
    : dim_(check_dim(dim)), metric_(metric), opt_(options), centroids_(dim) {
  check_options(opt_);
}

std::size_t IVFIndex::size() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return where_.size();
}

bool IVFIndex::trained() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return trained_;
}

std::size_t IVFIndex::nlist() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return trained_ ? lists_.size() : opt_.nlist;
}

std::size_t IVFIndex::nprobe() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return opt_.nprobe;
}

void IVFIndex::set_nprobe(std::size_t nprobe) {
  check_range(nprobe, 1, kMaxNlist, "nprobe");
  std::unique_lock<std::shared_mutex> lk(mu_);
  opt_.nprobe = nprobe;
}

bool IVFIndex::contains(std::uint64_t id) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  return where_.count(id) != 0;
}

std::vector<std::size_t> IVFIndex::list_sizes() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  std::vector<std::size_t> out;
  for (const PanelStore& l : lists_) out.push_back(l.live());
  return out;
}

std::size_t IVFIndex::memory_bytes() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  std::size_t total = centroids_.memory_bytes() + centroid_rows_.capacity() * sizeof(float);
  for (const PanelStore& l : lists_) total += l.memory_bytes() + sizeof(PanelStore);
  return total + where_.bucket_count() * sizeof(void*) +
         where_.size() * (sizeof(std::uint64_t) * 2 + sizeof(void*));
}

void IVFIndex::set_centroids(const std::vector<float>& centroids) {
  const std::size_t nlist = centroids.size() / dim_;
  centroid_rows_ = centroids;
  centroids_ = PanelStore(dim_);
  centroids_.reserve(nlist);
  for (std::size_t c = 0; c < nlist; ++c) centroids_.append(c, centroids.data() + c * dim_);
  lists_.assign(nlist, PanelStore(dim_));
  opt_.nlist = nlist;
  trained_ = true;
}

std::vector<std::uint32_t> IVFIndex::assign(const float* vectors, std::size_t n,
                                            int threads) const {
  HeapSet best(n, 1);
  scan_store(centroids_, vectors, n, centroid_l2(metric_), nullptr, threads, best);
  std::vector<std::uint32_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint32_t>(best.heaps[i].items[0].id);
  return out;
}

void IVFIndex::train(const float* vectors, std::size_t n, int threads) {
  check_finite(vectors, checked_mul(n, dim_, "the training set"), "training vectors");
  std::unique_lock<std::shared_mutex> lk(mu_);
  if (!where_.empty()) {
    throw std::invalid_argument("train() on an index that holds vectors; remove them first");
  }
  train_locked(vectors, n, threads);
}

void IVFIndex::train_locked(const float* vectors, std::size_t n, int threads) {
  std::size_t nlist = opt_.nlist;
  if (nlist == 0) {
    nlist = std::clamp<std::size_t>(static_cast<std::size_t>(std::lround(std::sqrt(double(n)))),
                                    1, kMaxNlist);
  }
  if (n < nlist) {
    throw not_trained("an IVF index with nlist=" + std::to_string(nlist) + " needs at least " +
                      std::to_string(nlist) + " training vectors, got " + std::to_string(n) +
                      "; add a larger first batch or call train() with a sample");
  }
  std::mt19937_64 rng(opt_.seed);
  // Sample without replacement (partial Fisher-Yates over indices).
  const std::size_t cap = opt_.max_train ? opt_.max_train : 256 * nlist;
  const std::size_t ns = std::min(n, std::max(cap, nlist));
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  for (std::size_t i = 0; i < ns; ++i) {
    std::uniform_int_distribution<std::size_t> pick(i, n - 1);
    std::swap(idx[i], idx[pick(rng)]);
  }
  std::vector<float> sample(ns * dim_);
  for (std::size_t i = 0; i < ns; ++i) {
    std::copy(vectors + idx[i] * dim_, vectors + (idx[i] + 1) * dim_, sample.begin() + i * dim_);
    if (metric_ == Metric::cos) normalize(sample.data() + i * dim_, dim_);
  }
  // Initial centroids: the first nlist sampled points (already a random subset).
  std::vector<float> cent(sample.begin(), sample.begin() + nlist * dim_);
  std::vector<double> sums(nlist * dim_);
  std::vector<std::size_t> counts(nlist);
  for (std::size_t it = 0; it < opt_.train_iters; ++it) {
    set_centroids(cent);
    const std::vector<std::uint32_t> a = assign(sample.data(), ns, threads);
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (std::size_t i = 0; i < ns; ++i) {
      const float* v = sample.data() + i * dim_;
      double* s = sums.data() + a[i] * dim_;
      for (std::size_t d = 0; d < dim_; ++d) s[d] += v[d];
      ++counts[a[i]];
    }
    for (std::size_t c = 0; c < nlist; ++c) {
      if (counts[c] == 0) continue;
      for (std::size_t d = 0; d < dim_; ++d) {
        cent[c * dim_ + d] = static_cast<float>(sums[c * dim_ + d] / double(counts[c]));
      }
    }
    // Empty clusters take half of the largest one: a slightly shifted copy of it.
    for (std::size_t c = 0; c < nlist; ++c) {
      if (counts[c] != 0) continue;
      const std::size_t big = static_cast<std::size_t>(
          std::max_element(counts.begin(), counts.end()) - counts.begin());
      for (std::size_t d = 0; d < dim_; ++d) {
        const float v = cent[big * dim_ + d];
        const float eps = (d % 2 == 0 ? 1.0f : -1.0f) * (1.0f / 1024.0f);
        cent[c * dim_ + d] = v * (1.0f + eps);
        cent[big * dim_ + d] = v * (1.0f - eps);
      }
      counts[c] = counts[big] / 2;
      counts[big] -= counts[c];
    }
    if (metric_ == Metric::cos) {
      for (std::size_t c = 0; c < nlist; ++c) normalize(cent.data() + c * dim_, dim_);
    }
  }
  set_centroids(cent);
}

void IVFIndex::append_locked(const std::uint64_t* ids, const float* prepared, std::size_t n,
                             const std::vector<std::uint32_t>& lists) {
  // Rows within a list are uint32: refuse the batch before adding any of it.
  std::vector<std::size_t> adding(lists_.size(), 0);
  for (std::size_t i = 0; i < n; ++i) ++adding[lists[i]];
  for (std::size_t l = 0; l < lists_.size(); ++l) {
    if (adding[l] > 0) check_row_room(lists_[l].rows(), adding[l], "an IVF list");
  }
  where_.reserve(where_.size() + n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t l = lists[i];
    const std::size_t row = lists_[l].append(ids[i], prepared + i * dim_);
    where_[ids[i]] = {l, static_cast<std::uint32_t>(row)};
  }
}

void IVFIndex::add(const std::uint64_t* ids, const float* vectors, std::size_t n, int threads) {
  const std::size_t total = checked_mul(n, dim_, "the batch");
  check_finite(vectors, total, "vectors");
  std::vector<float> prepared(vectors, vectors + total);
  if (metric_ == Metric::cos) {
    for (std::size_t i = 0; i < n; ++i) normalize(prepared.data() + i * dim_, dim_);
  }
  std::unique_lock<std::shared_mutex> lk(mu_);
  check_new_ids(ids, n, [&](std::uint64_t id) { return where_.count(id) != 0; });
  if (n == 0) return;
  if (!trained_) train_locked(prepared.data(), n, threads);
  const std::vector<std::uint32_t> lists = assign(prepared.data(), n, threads);
  append_locked(ids, prepared.data(), n, lists);
}

std::size_t IVFIndex::remove(const std::uint64_t* ids, std::size_t n) {
  std::unique_lock<std::shared_mutex> lk(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    if (where_.count(ids[i]) == 0) {
      throw unknown_id("id " + std::to_string(ids[i]) + " is not in the index (nothing removed)");
    }
  }
  std::size_t removed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto it = where_.find(ids[i]);
    if (it == where_.end()) continue;
    const std::uint32_t l = it->second.first;
    PanelStore& list = lists_[l];
    list.kill(it->second.second);
    where_.erase(it);
    ++removed;
    const std::size_t dead = list.rows() - list.live();
    if (dead * 4 >= list.rows() && dead >= kLanes / 2) {
      list.compact([&](std::uint64_t id, std::size_t row) {
        where_[id].second = static_cast<std::uint32_t>(row);
      });
    }
  }
  return removed;
}

void IVFIndex::get(const std::uint64_t* ids, std::size_t n, float* out) const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    auto it = where_.find(ids[i]);
    if (it == where_.end()) throw unknown_id("id " + std::to_string(ids[i]) + " is not in the index");
    lists_[it->second.first].gather(it->second.second, out + i * dim_);
  }
}

void IVFIndex::search(const SearchArgs& a, std::size_t nprobe) const {
  check_range(a.k, 1, kMaxK, "k");
  check_finite(a.queries, checked_mul(a.m, dim_, "the query batch"), "queries");
  std::vector<float> offsets;
  const std::vector<float> q = prepare_queries(a.queries, a.m, dim_, metric_, offsets);
  std::shared_lock<std::shared_mutex> lk(mu_);
  // Heaps never hold more than the stored rows; the rest of k is padding.
  const std::size_t kk = std::max<std::size_t>(1, std::min(a.k, where_.size()));
  HeapSet results(a.m, kk);
  const bool l2 = metric_ == Metric::l2;
  if (trained_ && !where_.empty() && !(a.filtered && a.n_allowed == 0)) {
    const std::size_t nlist = lists_.size();
    if (nprobe == 0) nprobe = opt_.nprobe;
    nprobe = std::min(nprobe, nlist);
    // Allowed rows as per-list panel masks (only for lists that hold some).
    std::vector<std::vector<std::uint16_t>> allow;
    std::size_t n_allowed_live = 0;
    if (a.filtered) {
      allow.resize(nlist);
      for (std::size_t i = 0; i < a.n_allowed; ++i) {
        auto it = where_.find(a.allowed[i]);
        if (it == where_.end()) continue;
        auto& masks = allow[it->second.first];
        if (masks.empty()) masks.assign(lists_[it->second.first].panels(), 0);
        const std::uint16_t bit = static_cast<std::uint16_t>(1u << (it->second.second % kLanes));
        if (!(masks[it->second.second / kLanes] & bit)) ++n_allowed_live;
        masks[it->second.second / kLanes] |= bit;
      }
    }
    // Few allowed rows: scanning all of them exactly is cheaper than probing.
    const bool exact = a.filtered && n_allowed_live <= std::max<std::size_t>(
                                         4 * a.k, where_.size() * nprobe / nlist);
    std::vector<std::uint32_t> order;  // per query: lists to scan, best first
    std::size_t per_query = 0;
    if (exact) {
      for (std::size_t l = 0; l < nlist; ++l) {
        if (!allow[l].empty()) order.push_back(static_cast<std::uint32_t>(l));
      }
      per_query = order.size();
    } else {
      const std::size_t kc = a.filtered ? nlist : nprobe;
      HeapSet near(a.m, kc);
      scan_store(centroids_, q.data(), a.m, centroid_l2(metric_), nullptr, a.threads, near);
      order.assign(checked_mul(a.m, nprobe, "the query batch"), 0);
      per_query = nprobe;
      std::vector<std::uint64_t> ids(kc);
      std::vector<float> scores(kc);
      for (std::size_t i = 0; i < a.m; ++i) {
        finish_topk(near.heaps[i], ids.data(), scores.data(), kc, 0.0f);
        std::size_t taken = 0;
        for (std::size_t j = 0; j < kc && taken < nprobe; ++j) {
          if (ids[j] == kMissingId) break;
          if (a.filtered && allow[ids[j]].empty()) continue;
          order[i * nprobe + taken++] = static_cast<std::uint32_t>(ids[j]);
        }
        for (; taken < nprobe; ++taken) order[i * nprobe + taken] = UINT32_MAX;
      }
    }
    // Tasks: one per query, or per (query, slice of its lists) when queries are few.
    std::size_t t = a.threads <= 0 ? hardware_threads() : static_cast<std::size_t>(a.threads);
    const double work = double(a.m) * double(where_.size()) * double(per_query) /
                        double(exact ? 1 : nlist) * double(dim_);
    t = std::max<std::size_t>(1, std::min(t, static_cast<std::size_t>(work / kMinWorkPerThread)));
    const std::size_t slices = a.m >= t ? 1 : std::min<std::size_t>(t, std::max<std::size_t>(1, per_query));
    std::vector<HeapSet> parts;
    if (slices > 1) {
      for (std::size_t s = 0; s < slices; ++s) parts.emplace_back(a.m, kk);
    }
    const ScanFn scan = kernels().scan;
    parallel_for(a.m * slices, static_cast<int>(t), [&](std::size_t task) {
      const std::size_t i = task / slices, s = task % slices;
      TopK* heap = slices > 1 ? &parts[s].heaps[i] : &results.heaps[i];
      const std::size_t j0 = per_query * s / slices, j1 = per_query * (s + 1) / slices;
      for (std::size_t j = j0; j < j1; ++j) {
        const std::uint32_t l = exact ? order[j] : order[i * per_query + j];
        if (l == UINT32_MAX) break;
        const PanelStore& list = lists_[l];
        if (list.panels() == 0) continue;
        ScanJob job;
        job.queries = q.data() + i * dim_;
        job.m = 1;
        job.dim = dim_;
        job.panels = list.data();
        job.masks = list.masks();
        job.allow = a.filtered ? allow[l].data() : nullptr;
        job.ids = list.ids();
        job.sqnorms = list.sqnorms();
        job.panel_begin = 0;
        job.panel_end = list.panels();
        job.l2 = l2;
        job.heaps = heap;
        scan(job);
      }
    });
    for (std::size_t s = 0; s < parts.size(); ++s) {
      for (std::size_t i = 0; i < a.m; ++i) merge_topk(results.heaps[i], parts[s].heaps[i]);
    }
  }
  for (std::size_t i = 0; i < a.m; ++i) {
    finish_topk(results.heaps[i], a.out_ids + i * a.k, a.out_scores + i * a.k, a.k, offsets[i]);
    if (l2) {
      for (std::size_t j = 0; j < a.k; ++j) {
        a.out_scores[i * a.k + j] = std::min(a.out_scores[i * a.k + j], 0.0f);
      }
    }
  }
}

std::string IVFIndex::serialize() const {
  std::shared_lock<std::shared_mutex> lk(mu_);
  Writer w(kKindIvf);
  w.u32(static_cast<std::uint32_t>(metric_));
  w.u64(dim_);
  w.u64(opt_.nlist);
  w.u64(opt_.nprobe);
  w.u64(opt_.train_iters);
  w.u64(opt_.max_train);
  w.u64(opt_.seed);
  w.u32(trained_ ? 1 : 0);
  if (trained_) {
    w.array(centroid_rows_.data(), centroid_rows_.size());
    std::vector<std::uint64_t> ids;
    std::vector<float> vecs;
    for (const PanelStore& list : lists_) {
      ids.clear();
      vecs.assign(list.live() * dim_, 0.0f);
      for (std::size_t r = 0; r < list.rows(); ++r) {
        if (!list.is_live(r)) continue;
        list.gather(r, vecs.data() + ids.size() * dim_);
        ids.push_back(list.id_at(r));
      }
      w.u64(ids.size());
      w.array(ids.data(), ids.size());
      w.array(vecs.data(), vecs.size());
    }
  }
  return w.finish();
}

std::unique_ptr<IVFIndex> IVFIndex::deserialize(const char* data, std::size_t size) {
  Reader r(data, size, kKindIvf);
  const Metric metric = read_metric(r);
  const std::size_t dim = read_dim(r);
  IvfOptions opt;
  opt.nlist = r.u64();
  opt.nprobe = r.u64();
  opt.train_iters = r.u64();
  opt.max_train = r.u64();
  opt.seed = r.u64();
  try {
    check_options(opt);
  } catch (const std::invalid_argument& e) {
    throw format_error(std::string("implausible IVF parameters: ") + e.what());
  }
  const std::uint32_t trained = r.u32();
  if (trained > 1) throw format_error("invalid trained flag " + std::to_string(trained));
  auto index = std::make_unique<IVFIndex>(dim, metric, opt);
  if (trained == 1) {
    if (opt.nlist < 1) throw format_error("a trained IVF index with no lists");
    std::vector<float> cent = r.array<float>(Reader::product(opt.nlist, dim));
    check_finite_or_format_error(cent);
    if (metric == Metric::cos) {
      for (std::size_t c = 0; c < opt.nlist; ++c) {
        if (!unit_or_zero(cent.data() + c * dim, dim)) {
          throw format_error("invalid index contents: a cos centroid is not unit length");
        }
      }
    }
    index->set_centroids(cent);
    for (std::size_t l = 0; l < opt.nlist; ++l) {
      const std::uint64_t n = r.u64();
      if (n > kMaxRows || n > r.remaining() / sizeof(std::uint64_t)) {
        throw format_error("implausible length " + std::to_string(n) + " of list " +
                           std::to_string(l));
      }
      const std::vector<std::uint64_t> ids = r.array<std::uint64_t>(n);
      const std::vector<float> vecs = r.array<float>(Reader::product(n, dim));
      check_stored_rows(ids.data(), vecs.data(), n, dim, metric,
                        [&](std::uint64_t id) { return index->where_.count(id) != 0; });
      index->append_locked(ids.data(), vecs.data(), n, std::vector<std::uint32_t>(n, l));
    }
  }
  r.expect_end();
  return index;
}

}  // namespace sage
