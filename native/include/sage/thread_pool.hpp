// A small persistent thread pool for data-parallel loops in the indexes.
//
// parallel_for(n, threads, fn) runs fn(i) for i in [0, n) on up to `threads` threads,
// the calling thread included, and returns when all are done. One loop runs at a
// time; a caller that finds the pool busy (another Python thread searching) runs its
// loop on its own thread instead of queueing behind it. Worker threads start on
// first use; a forked child starts a fresh pool.
#pragma once

#include <cstddef>
#include <functional>

namespace sage {

// Number of CPUs this process may run on (its affinity mask on Linux; at least 1).
std::size_t hardware_threads();

// threads <= 0 means hardware_threads() (read at each call).
void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t)>& fn);

}  // namespace sage
