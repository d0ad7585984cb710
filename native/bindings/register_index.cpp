// Bindings for the native vector indexes (FlatIndex, IVFIndex) and kernel selection.
//
// Arrays cross as C-contiguous CPU ndarrays (float32 vectors, uint64 ids); the
// Python wrappers in sage_core/vector_index.py convert input first. All scanning,
// adding and (de)serialising runs with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "sage/flat_index.hpp"
#include "sage/ivf_index.hpp"
#include "sage/kernels.hpp"
#include "sage/limits.hpp"
#include "sage/thread_pool.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Ids = nb::ndarray<const std::uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Matrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using IdsOut = nb::ndarray<nb::numpy, std::uint64_t, nb::ndim<2>>;
using ScoresOut = nb::ndarray<nb::numpy, float, nb::ndim<2>>;
using MatrixOut = nb::ndarray<nb::numpy, float, nb::ndim<2>>;

void check_matrix(const Matrix& m, std::size_t dim, const char* what) {
  if (m.shape(1) != dim) {
    throw sage::dimension_error(std::string(what) + " have " + std::to_string(m.shape(1)) +
                                " columns but the index has dim=" + std::to_string(dim));
  }
}

void check_pair(const Ids& ids, const Matrix& vectors, std::size_t dim) {
  check_matrix(vectors, dim, "vectors");
  if (ids.shape(0) != vectors.shape(0)) {
    throw std::invalid_argument("got " + std::to_string(ids.shape(0)) + " ids for " +
                                std::to_string(vectors.shape(0)) + " vectors");
  }
}

template <class T>
nb::ndarray<nb::numpy, T, nb::ndim<2>> owned(T* data, std::size_t rows, std::size_t cols) {
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return nb::ndarray<nb::numpy, T, nb::ndim<2>>(data, {rows, cols}, owner);
}

void check_threads(int threads) {
  if (threads < 0) {
    throw std::invalid_argument("threads must be >= 0 (0: every CPU this process may run "
                                "on), got " + std::to_string(threads));
  }
}

// Runs fn(args) without the GIL and returns (ids, scores) arrays of shape (m, k).
template <class Fn>
nb::tuple run_search(const Matrix& queries, std::size_t dim, std::size_t k,
                     const std::optional<Ids>& allowed, int threads, Fn&& fn) {
  check_matrix(queries, dim, "queries");
  sage::check_range(k, 1, sage::kMaxK, "k");
  check_threads(threads);
  const std::size_t m = queries.shape(0);
  const std::size_t total = sage::checked_mul(m, k, "len(queries) * k");
  sage::checked_mul(total, sizeof(std::uint64_t), "len(queries) * k");
  auto* ids = new std::uint64_t[total];
  auto* scores = new float[total];
  IdsOut ids_out = owned(ids, m, k);
  ScoresOut scores_out = owned(scores, m, k);
  sage::SearchArgs a;
  a.queries = queries.data();
  a.m = m;
  a.k = k;
  a.filtered = allowed.has_value();
  if (allowed) {
    a.allowed = allowed->data();
    a.n_allowed = allowed->shape(0);
  }
  a.threads = threads;
  a.out_ids = ids;
  a.out_scores = scores;
  {
    nb::gil_scoped_release nogil;
    fn(a);
  }
  return nb::make_tuple(ids_out, scores_out);
}

template <class Index>
MatrixOut get_vectors(const Index& index, const Ids& ids) {
  const std::size_t n = ids.shape(0);
  const std::size_t total = sage::checked_mul(n, index.dim(), "len(ids) * dim");
  sage::checked_mul(total, sizeof(float), "len(ids) * dim");
  auto* out = new float[total];
  MatrixOut arr = owned(out, n, index.dim());
  {
    nb::gil_scoped_release nogil;
    index.get(ids.data(), n, out);
  }
  return arr;
}

template <class Index>
nb::bytes to_bytes(const Index& index) {
  std::string data;
  {
    nb::gil_scoped_release nogil;
    data = index.serialize();
  }
  return nb::bytes(data.data(), data.size());
}

template <class Index>
std::unique_ptr<Index> from_bytes(nb::bytes data) {
  const char* p = data.c_str();
  const std::size_t n = data.size();
  nb::gil_scoped_release nogil;
  return Index::deserialize(p, n);
}

constexpr const char* kSearchDoc =
    "Top-``k`` most similar rows for each query (rows of a float32 matrix).\n\n"
    "Args:\n"
    "    allowed_ids: if given, only these ids can be returned (filter applied\n"
    "        during the scan, so up to k allowed results come back).\n"
    "    threads: worker threads; 0 uses every CPU this process may run on.\n\n"
    "Returns:\n"
    "    ``(ids, scores)``, both of shape (len(queries), k), best first; higher\n"
    "    scores are more similar (ip: dot product, cos: cosine, l2: minus the\n"
    "    squared distance). Missing results have id 2**64-1 and score -inf.\n\n"
    "Raises:\n"
    "    ValueError: k outside 1..2**16 (``limits()['max_k']``) or threads < 0.";

}  // namespace

void register_index(nb::module_& m) {
  m.def("kernels", [] { return std::string(sage::kernels().name); },
        "Name of the scan kernels in use (``\"avx2+fma\"`` or ``\"generic\"``).");
  m.def("set_kernels", &sage::set_kernels, "name"_a,
        "Choose the scan kernels: ``\"auto\"`` (cpuid), ``\"avx2\"`` or ``\"generic\"``.\n\n"
        "For tests and benchmarks; the environment variable SAGE_KERNELS sets the\n"
        "initial choice.");
  m.def("hardware_threads", &sage::hardware_threads,
        "Number of CPUs this process may run on (its affinity mask): what index\n"
        "searches and adds with ``threads=0`` use.");
  m.def(
      "limits",
      [] {
        nb::dict out;
        out["max_dim"] = sage::kMaxDim;
        out["max_k"] = sage::kMaxK;
        out["max_nlist"] = sage::kMaxNlist;
        out["max_train_iters"] = sage::kMaxTrainIters;
        out["max_queue_capacity"] = sage::kMaxQueueCapacity;
        out["max_rows"] = sage::kMaxRows;
        return out;
      },
      nb::sig("def limits() -> dict[str, int]"),
      "Bounds the native code enforces: max_dim, max_k, max_nlist (also the\n"
      "largest nprobe), max_train_iters, max_queue_capacity, and max_rows (rows\n"
      "of one FlatIndex or one IVF list).");

  nb::class_<sage::FlatIndex>(m, "FlatIndex", "Exact (brute-force) vector index.")
      .def(
          "__init__",
          [](sage::FlatIndex* self, std::size_t dim, const std::string& metric) {
            new (self) sage::FlatIndex(dim, sage::parse_metric(metric));
          },
          "dim"_a, "metric"_a = "cos",
          "Create an empty index of ``dim``-dimensional vectors (1 <= dim <= 2**20);\n"
          "metric is 'ip', 'l2' or 'cos'.")
      .def_prop_ro("dim", &sage::FlatIndex::dim, "Vector dimension.")
      .def_prop_ro("metric", [](const sage::FlatIndex& s) { return std::string(sage::metric_name(s.metric())); },
                   "Similarity metric: 'ip', 'l2' or 'cos'.")
      .def("__len__", &sage::FlatIndex::size, "Number of vectors in the index.")
      .def("memory_bytes", &sage::FlatIndex::memory_bytes, "Bytes held by the index.")
      .def("contains", &sage::FlatIndex::contains, "id"_a, "Whether ``id`` is in the index.")
      .def(
          "add",
          [](sage::FlatIndex& self, const Ids& ids, const Matrix& vectors) {
            check_pair(ids, vectors, self.dim());
            nb::gil_scoped_release nogil;
            self.add(ids.data(), vectors.data(), ids.shape(0));
          },
          "ids"_a, "vectors"_a,
          "Add vectors under new uint64 ids (cos vectors are stored normalised).\n\n"
          "Raises:\n    DuplicateIdError: an id is present or repeated (nothing added).")
      .def(
          "remove",
          [](sage::FlatIndex& self, const Ids& ids) {
            nb::gil_scoped_release nogil;
            return self.remove(ids.data(), ids.shape(0));
          },
          "ids"_a,
          "Remove ids; returns how many. Raises UnknownIdError (removing nothing) if\n"
          "any is absent.")
      .def(
          "search",
          [](const sage::FlatIndex& self, const Matrix& queries, std::size_t k,
             std::optional<Ids> allowed_ids, int threads) {
            return run_search(queries, self.dim(), k, allowed_ids, threads,
                              [&](const sage::SearchArgs& a) { self.search(a); });
          },
          "queries"_a, "k"_a, "allowed_ids"_a = nb::none(), "threads"_a = 0, kSearchDoc)
      .def("get", &get_vectors<sage::FlatIndex>, "ids"_a,
           "Stored vectors of ``ids`` (normalised for cos), shape (len(ids), dim).")
      .def("to_bytes", &to_bytes<sage::FlatIndex>,
           "Serialise to bytes (versioned format with a checksum).")
      .def_static("from_bytes", &from_bytes<sage::FlatIndex>, "data"_a,
                  "Rebuild an index from to_bytes() output.\n\n"
                  "Raises:\n    IndexFormatError: corrupt, truncated or foreign data.");

  nb::class_<sage::IVFIndex>(m, "IVFIndex", "Inverted-file index over k-means centroids.")
      .def(
          "__init__",
          [](sage::IVFIndex* self, std::size_t dim, const std::string& metric, std::size_t nlist,
             std::size_t nprobe, std::size_t train_iters, std::size_t max_train,
             std::uint64_t seed) {
            sage::IvfOptions opt;
            opt.nlist = nlist;
            opt.nprobe = nprobe;
            opt.train_iters = train_iters;
            opt.max_train = max_train;
            opt.seed = seed;
            new (self) sage::IVFIndex(dim, sage::parse_metric(metric), opt);
          },
          "dim"_a, "metric"_a = "cos", "nlist"_a = 0, "nprobe"_a = 8, "train_iters"_a = 10,
          "max_train"_a = 0, "seed"_a = 0,
          "Create an untrained index. nlist=0 picks round(sqrt(n)) of the training set;\n"
          "max_train=0 trains on at most 256*nlist sampled vectors. Bounds: 1 <= dim\n"
          "<= 2**20, nlist <= 2**20, 1 <= nprobe <= 2**20, 1 <= train_iters <= 1000\n"
          "(see limits()).")
      .def_prop_ro("dim", &sage::IVFIndex::dim, "Vector dimension.")
      .def_prop_ro("metric", [](const sage::IVFIndex& s) { return std::string(sage::metric_name(s.metric())); },
                   "Similarity metric: 'ip', 'l2' or 'cos'.")
      .def_prop_ro("trained", &sage::IVFIndex::trained, "Whether centroids exist.")
      .def_prop_ro("nlist", &sage::IVFIndex::nlist, "Number of inverted lists.")
      .def_prop_rw("nprobe", &sage::IVFIndex::nprobe, &sage::IVFIndex::set_nprobe,
                   "Lists scanned per query by default.")
      .def("__len__", &sage::IVFIndex::size, "Number of vectors in the index.")
      .def("memory_bytes", &sage::IVFIndex::memory_bytes, "Bytes held by the index.")
      .def("contains", &sage::IVFIndex::contains, "id"_a, "Whether ``id`` is in the index.")
      .def("list_sizes", &sage::IVFIndex::list_sizes, "Live vectors per inverted list.")
      .def(
          "train",
          [](sage::IVFIndex& self, const Matrix& vectors, int threads) {
            check_matrix(vectors, self.dim(), "vectors");
            check_threads(threads);
            nb::gil_scoped_release nogil;
            self.train(vectors.data(), vectors.shape(0), threads);
          },
          "vectors"_a, "threads"_a = 0,
          "Train the centroids by k-means on (a sample of) ``vectors``.")
      .def(
          "add",
          [](sage::IVFIndex& self, const Ids& ids, const Matrix& vectors, int threads) {
            check_pair(ids, vectors, self.dim());
            check_threads(threads);
            nb::gil_scoped_release nogil;
            self.add(ids.data(), vectors.data(), ids.shape(0), threads);
          },
          "ids"_a, "vectors"_a, "threads"_a = 0,
          "Add vectors under new ids; the first add trains an untrained index.\n\n"
          "Raises:\n    DuplicateIdError: an id is present or repeated (nothing added).\n"
          "    IndexNotTrainedError: untrained and the batch is smaller than nlist.")
      .def(
          "remove",
          [](sage::IVFIndex& self, const Ids& ids) {
            nb::gil_scoped_release nogil;
            return self.remove(ids.data(), ids.shape(0));
          },
          "ids"_a, "Remove ids; returns how many (UnknownIdError if any is absent).")
      .def(
          "search",
          [](const sage::IVFIndex& self, const Matrix& queries, std::size_t k,
             std::optional<Ids> allowed_ids, int threads, std::size_t nprobe) {
            return run_search(queries, self.dim(), k, allowed_ids, threads,
                              [&](const sage::SearchArgs& a) { self.search(a, nprobe); });
          },
          "queries"_a, "k"_a, "allowed_ids"_a = nb::none(), "threads"_a = 0, "nprobe"_a = 0,
          kSearchDoc)
      .def("get", &get_vectors<sage::IVFIndex>, "ids"_a,
           "Stored vectors of ``ids`` (normalised for cos), shape (len(ids), dim).")
      .def("to_bytes", &to_bytes<sage::IVFIndex>,
           "Serialise to bytes (versioned format with a checksum).")
      .def_static("from_bytes", &from_bytes<sage::IVFIndex>, "data"_a,
                  "Rebuild an index from to_bytes() output.\n\n"
                  "Raises:\n    IndexFormatError: corrupt, truncated or foreign data.");
}
