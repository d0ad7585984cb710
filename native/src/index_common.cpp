#include "sage/index_common.hpp"

#include <algorithm>
#include <cstring>

namespace sage {

void finish_topk(TopK& heap, std::uint64_t* out_ids, float* out_scores, std::size_t k,
                 float score_offset) {
  std::sort(heap.items, heap.items + heap.size, [](const HeapItem& a, const HeapItem& b) {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
  });
  for (std::size_t i = 0; i < k; ++i) {
    if (i < heap.size) {
      out_ids[i] = heap.items[i].id;
      out_scores[i] = heap.items[i].score + score_offset;
    } else {
      out_ids[i] = kMissingId;
      out_scores[i] = -std::numeric_limits<float>::infinity();
    }
  }
}

void merge_topk(TopK& into, const TopK& from) {
  auto worse = [](const HeapItem& a, const HeapItem& b) { return a.score > b.score; };
  for (std::size_t i = 0; i < from.size; ++i) {
    const HeapItem& item = from.items[i];
    if (into.size < into.k) {
      into.items[into.size++] = item;
      std::push_heap(into.items, into.items + into.size, worse);
    } else if (into.k > 0 && item.score > into.items[0].score) {
      std::pop_heap(into.items, into.items + into.size, worse);
      into.items[into.size - 1] = item;
      std::push_heap(into.items, into.items + into.size, worse);
    }
  }
}

void PanelStore::reserve(std::size_t rows) {
  const std::size_t npanels = (rows + kLanes - 1) / kLanes;
  data_.reserve(npanels * dim_ * kLanes);
  masks_.reserve(npanels);
  ids_.reserve(rows);
  sqnorms_.reserve(npanels * kLanes);
}

void PanelStore::set_row(std::size_t row, std::uint64_t id, const float* vec, float sqnorm) {
  float* panel = data_.data() + (row / kLanes) * dim_ * kLanes;
  const std::size_t lane = row % kLanes;
  for (std::size_t d = 0; d < dim_; ++d) panel[d * kLanes + lane] = vec[d];
  ids_[row] = id;
  sqnorms_[row] = sqnorm;
}

std::size_t PanelStore::append(std::uint64_t id, const float* vec) {
  const std::size_t row = rows_;
  if (row % kLanes == 0) {
    if (data_.size() == data_.capacity()) data_.reserve(std::max<std::size_t>(2 * data_.size(), dim_ * kLanes));
    data_.resize(data_.size() + dim_ * kLanes, 0.0f);
    sqnorms_.resize(sqnorms_.size() + kLanes, 0.0f);
    masks_.push_back(0);
  }
  ids_.push_back(0);
  set_row(row, id, vec, squared_norm(vec, dim_));
  masks_[row / kLanes] |= static_cast<std::uint16_t>(1u << (row % kLanes));
  ++rows_;
  ++live_count_;
  return row;
}

void PanelStore::kill(std::size_t row) {
  std::uint16_t& m = masks_[row / kLanes];
  const auto bit = static_cast<std::uint16_t>(1u << (row % kLanes));
  if (m & bit) {
    m = static_cast<std::uint16_t>(m & ~bit);
    --live_count_;
  }
}

void PanelStore::gather(std::size_t row, float* out) const {
  const float* panel = data_.data() + (row / kLanes) * dim_ * kLanes;
  const std::size_t lane = row % kLanes;
  for (std::size_t d = 0; d < dim_; ++d) out[d] = panel[d * kLanes + lane];
}

}  // namespace sage

#include "sage/kernels.hpp"
#include "sage/thread_pool.hpp"

namespace sage {

void scan_store(const PanelStore& store, const float* queries, std::size_t m, bool l2,
                const std::uint16_t* allow, int threads, HeapSet& out) {
  const std::size_t npanels = store.panels();
  if (m == 0 || npanels == 0) return;
  const ScanFn scan = kernels().scan;
  ScanJob base;
  base.queries = queries;
  base.dim = store.dim();
  base.panels = store.data();
  base.masks = store.masks();
  base.allow = allow;
  base.ids = store.ids();
  base.sqnorms = store.sqnorms();
  base.l2 = l2;
  std::size_t t = threads <= 0 ? hardware_threads() : static_cast<std::size_t>(threads);
  // Waking a helper thread costs tens of microseconds: give each one enough work.
  const double work = double(m) * double(store.rows()) * double(store.dim());
  t = std::max<std::size_t>(1, std::min(t, static_cast<std::size_t>(work / kMinWorkPerThread)));
  const std::size_t k = out.heaps.empty() ? 0 : out.heaps[0].k;
  // Enough queries: every task owns a chunk of queries (a multiple of the 6-query
  // kernel block) and scans all panels; no merging needed.
  if (t <= 1 || m >= 6 * t || npanels < 4 * t) {
    const std::size_t per = std::max<std::size_t>(6, ((m + 4 * t - 1) / (4 * t) + 5) / 6 * 6);
    const std::size_t tasks = (m + per - 1) / per;
    parallel_for(tasks, static_cast<int>(t), [&](std::size_t i) {
      ScanJob job = base;
      const std::size_t q0 = i * per;
      job.queries = queries + q0 * store.dim();
      job.m = std::min(per, m - q0);
      job.heaps = out.heaps.data() + q0;
      job.panel_begin = 0;
      job.panel_end = npanels;
      scan(job);
    });
    return;
  }
  // Few queries: slice the panels; each slice fills its own heaps.
  const std::size_t slices = std::min(npanels, 4 * t);
  std::vector<HeapSet> parts;
  parts.reserve(slices);
  for (std::size_t s = 0; s < slices; ++s) parts.emplace_back(m, k);
  parallel_for(slices, static_cast<int>(t), [&](std::size_t s) {
    ScanJob job = base;
    job.m = m;
    job.heaps = parts[s].heaps.data();
    job.panel_begin = npanels * s / slices;
    job.panel_end = npanels * (s + 1) / slices;
    scan(job);
  });
  for (std::size_t s = 0; s < slices; ++s) {
    for (std::size_t q = 0; q < m; ++q) merge_topk(out.heaps[q], parts[s].heaps[q]);
  }
}

std::vector<float> prepare_queries(const float* queries, std::size_t m, std::size_t dim,
                                   Metric metric, std::vector<float>& offsets) {
  std::vector<float> q(queries, queries + m * dim);
  offsets.assign(m, 0.0f);
  for (std::size_t i = 0; i < m; ++i) {
    if (metric == Metric::cos) normalize(q.data() + i * dim, dim);
    if (metric == Metric::l2) offsets[i] = -squared_norm(q.data() + i * dim, dim);
  }
  return q;
}

void check_finite(const float* v, std::size_t n, const char* what) {
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) {
      throw std::invalid_argument(std::string(what) + " contain NaN or infinite values");
    }
  }
}

}  // namespace sage
