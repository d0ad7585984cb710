#include "sage/thread_pool.hpp"

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace sage {

namespace {

class Pool {
 public:
  explicit Pool(std::size_t workers) {
    for (std::size_t i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  // Never destroyed: worker threads may outlive static destruction at exit.

  std::size_t workers() const { return threads_.size(); }

  // Returns false (and runs nothing) when another loop holds the pool.
  bool run(std::size_t n, std::size_t helpers, const std::function<void(std::size_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      helpers_wanted_ = helpers;
      active_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lk(mu_);
    helpers_wanted_ = 0;  // helpers not awake yet are not needed any more
    done_.wait(lk, [&] { return active_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void drain() {
    for (;;) {
      const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_) return;
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_, std::memory_order_relaxed);
      }
    }
  }

  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return generation_ != seen && helpers_wanted_ > 0; });
        seen = generation_;
        --helpers_wanted_;
        ++active_;
      }
      drain();
      {
        std::lock_guard<std::mutex> lk(mu_);
        --active_;
      }
      done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex busy_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(std::size_t)>* fn_ = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::size_t> next_{0};
  std::size_t helpers_wanted_ = 0;
  std::size_t active_ = 0;
  std::uint64_t generation_ = 0;
  std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_mu;

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  std::lock_guard<std::mutex> lk(g_pool_mu);
  p = g_pool.load(std::memory_order_relaxed);
  if (p == nullptr) {
    static const bool registered = [] {
      // The child of a fork has none of the parent's threads: start a new pool there.
      pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr); });
      return true;
    }();
    (void)registered;
    p = new Pool(hardware_threads() > 1 ? hardware_threads() - 1 : 0);
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

std::size_t hardware_threads() {
#if defined(__linux__)
  // The CPUs this process may run on: taskset, cgroup cpusets and Dask's worker
  // pinning all show up in the affinity mask, which hardware_concurrency() ignores.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<std::size_t>(n);
  } else {
    // More CPUs than a cpu_set_t holds: ask with a mask of the kernel's size.
    for (int ncpu = 2 * CPU_SETSIZE; ncpu <= (1 << 20); ncpu *= 2) {
      cpu_set_t* big = CPU_ALLOC(ncpu);
      if (big == nullptr) break;
      const std::size_t bytes = CPU_ALLOC_SIZE(ncpu);
      CPU_ZERO_S(bytes, big);
      const bool ok = sched_getaffinity(0, bytes, big) == 0;
      const int n = ok ? CPU_COUNT_S(bytes, big) : 0;
      CPU_FREE(big);
      if (n > 0) return static_cast<std::size_t>(n);
      if (ok) break;
    }
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn) {
  const std::size_t want = threads <= 0 ? hardware_threads() : static_cast<std::size_t>(threads);
  const std::size_t used = std::min(want, n);
  if (used <= 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  Pool& p = pool();
  const std::size_t helpers = std::min(used - 1, p.workers());
  if (helpers == 0 || !p.run(n, helpers, fn)) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
  }
}

}  // namespace sage
