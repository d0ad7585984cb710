// Bounded multi-producer multi-consumer ring buffer.
//
// The queue holds trivially copyable handles (the bindings store PyObject* whose
// references they manage themselves) in a fixed ring under one mutex. Producers wait on
// `not_full_` while the ring is full, consumers on `not_empty_` while it is empty; a
// side only signals a condition variable when someone is waiting on it, so the
// uncontended paths cost a lock/unlock and a few stores.
//
// Counters (pushed, popped, high-watermark, time producers spent blocked on a full
// ring, time consumers spent waiting on an empty one) are updated under the same lock;
// clocks are read only on the slow, waiting paths, so the counters can stay on.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <string>
#include <vector>

#include "sage/limits.hpp"

namespace sage {

enum class QueueStatus { ok, timeout, closed };

struct QueueCounters {
  std::uint64_t pushed = 0;
  std::uint64_t popped = 0;
  std::uint64_t high_watermark = 0;
  std::uint64_t producer_blocks = 0;   // times a producer found the ring full and waited
  std::uint64_t consumer_waits = 0;    // times a consumer found the ring empty and waited
  std::int64_t producer_blocked_ns = 0;
  std::int64_t consumer_wait_ns = 0;
  std::size_t size = 0;
  std::size_t capacity = 0;
  bool closed = false;
};

template <class T>
class BoundedQueue {
  static_assert(std::is_trivially_copyable_v<T>, "the ring stores plain handles");

 public:
  using Clock = std::chrono::steady_clock;

  // Throws std::invalid_argument unless 1 <= capacity <= kMaxQueueCapacity (checked
  // before the ring is allocated).
  explicit BoundedQueue(std::size_t capacity) : buf_(valid_capacity(capacity)), cap_(capacity) {}

  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  std::size_t capacity() const noexcept { return cap_; }

  std::size_t size() const {
    std::lock_guard<std::mutex> lk(mu_);
    return size_;
  }

  bool closed() const {
    std::lock_guard<std::mutex> lk(mu_);
    return closed_;
  }

  // Non-blocking push of one handle. Returns ok, timeout (full) or closed.
  QueueStatus try_push(T item) {
    std::unique_lock<std::mutex> lk(mu_);
    if (closed_) return QueueStatus::closed;
    if (size_ == cap_) return QueueStatus::timeout;
    put(&item, 1);
    const bool wake = waiting_consumers_ > 0;
    lk.unlock();
    if (wake) not_empty_.notify_one();
    return QueueStatus::ok;
  }

  // Non-blocking pop of one handle. closed means closed *and* drained.
  QueueStatus try_pop(T& out) {
    std::unique_lock<std::mutex> lk(mu_);
    if (size_ == 0) return closed_ ? QueueStatus::closed : QueueStatus::timeout;
    take(&out, 1);
    const bool wake = waiting_producers_ > 0;
    lk.unlock();
    if (wake) not_full_.notify_one();
    return QueueStatus::ok;
  }

  // Pushes items[0..n) in order, waiting while the ring is full, until `deadline`
  // (nullptr: no deadline). Returns how many were pushed; `status` says why it stopped
  // short (timeout or closed) or ok when all went in.
  std::size_t push_many(const T* items, std::size_t n, const Clock::time_point* deadline,
                        QueueStatus& status) {
    std::size_t done = 0;
    std::unique_lock<std::mutex> lk(mu_);
    Waits waits = producer_waits();
    for (;;) {
      if (closed_) {
        status = QueueStatus::closed;
        break;
      }
      const std::size_t m = std::min(cap_ - size_, n - done);
      if (m > 0) {
        put(items + done, m);
        done += m;
      }
      if (done == n) {
        status = QueueStatus::ok;
        break;
      }
      if (deadline != nullptr && Clock::now() >= *deadline) {
        status = QueueStatus::timeout;
        break;
      }
      if (m > 0 && waiting_consumers_ > 0) not_empty_.notify_all();
      waits.wait(lk, deadline);
    }
    waits.done();
    const bool wake = done > 0 && waiting_consumers_ > 0;
    lk.unlock();
    if (wake) {
      if (done > 1) {
        not_empty_.notify_all();
      } else {
        not_empty_.notify_one();
      }
    }
    return done;
  }

  // Waits while the ring is full, until `deadline` (nullptr: none). ok: it has room
  // now (another producer may take it first: push with try_push and wait again if
  // that fails); timeout; closed. A wait counts as a producer block.
  QueueStatus wait_room(const Clock::time_point* deadline) {
    QueueStatus status = QueueStatus::ok;
    std::unique_lock<std::mutex> lk(mu_);
    Waits waits = producer_waits();
    for (;;) {
      if (closed_) {
        status = QueueStatus::closed;
        break;
      }
      if (size_ < cap_) break;
      if (deadline != nullptr && Clock::now() >= *deadline) {
        status = QueueStatus::timeout;
        break;
      }
      waits.wait(lk, deadline);
    }
    waits.done();
    return status;
  }

  // Pops up to max_n handles into out, waiting only while the ring is empty, until
  // `deadline` (nullptr: none). Returns the count (0 with status timeout or closed).
  std::size_t pop_many(T* out, std::size_t max_n, const Clock::time_point* deadline,
                       QueueStatus& status) {
    std::size_t got = 0;
    std::unique_lock<std::mutex> lk(mu_);
    Waits waits(not_empty_, waiting_consumers_, c_.consumer_waits, c_.consumer_wait_ns);
    for (;;) {
      if (size_ > 0) {
        got = std::min(size_, max_n);
        take(out, got);
        status = QueueStatus::ok;
        break;
      }
      if (closed_) {
        status = QueueStatus::closed;
        break;
      }
      if (deadline != nullptr && Clock::now() >= *deadline) {
        status = QueueStatus::timeout;
        break;
      }
      waits.wait(lk, deadline);
    }
    waits.done();
    const bool wake = got > 0 && waiting_producers_ > 0;
    lk.unlock();
    if (wake) {
      if (got > 1) {
        not_full_.notify_all();
      } else {
        not_full_.notify_one();
      }
    }
    return got;
  }

  // Marks the queue closed and wakes every waiter. Idempotent.
  void close() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
    }
    not_full_.notify_all();
    not_empty_.notify_all();
  }

  // Moves every stored handle out (oldest first), leaving the queue empty.
  std::vector<T> drain() {
    std::vector<T> out;
    {
      std::lock_guard<std::mutex> lk(mu_);
      out.resize(size_);
      take(out.data(), size_, /*count=*/false);
    }
    not_full_.notify_all();
    return out;
  }

  // Calls fn(item) for every stored handle under the lock (for GC traversal).
  template <class Fn>
  int visit(Fn&& fn) const {
    std::lock_guard<std::mutex> lk(mu_);
    std::size_t pos = head_;
    for (std::size_t i = 0; i < size_; ++i) {
      if (int rc = fn(buf_[pos])) return rc;
      if (++pos == cap_) pos = 0;
    }
    return 0;
  }

  QueueCounters counters() const {
    std::lock_guard<std::mutex> lk(mu_);
    QueueCounters c = c_;
    c.size = size_;
    c.capacity = cap_;
    c.closed = closed_;
    return c;
  }

 private:
  static std::size_t valid_capacity(std::size_t capacity) {
    if (capacity < 1) throw std::invalid_argument("capacity must be at least 1");
    if (capacity > kMaxQueueCapacity) {
      throw std::invalid_argument("capacity must be at most " +
                                  std::to_string(kMaxQueueCapacity) + " slots, got " +
                                  std::to_string(capacity));
    }
    return capacity;
  }

  static std::int64_t elapsed_ns(Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  }

  // The waits of one blocking call on `cv`, under mu_: the first counts once in
  // `count` and starts the clock, `waiting` tells the other side to signal, and
  // `done()` adds the time waited to `ns`.
  class Waits {
   public:
    Waits(std::condition_variable& cv, int& waiting, std::uint64_t& count,
          std::int64_t& ns)
        : cv_(cv), waiting_(waiting), count_(count), ns_(ns) {}

    void wait(std::unique_lock<std::mutex>& lk, const Clock::time_point* deadline) {
      if (!started_) {
        started_ = true;
        t0_ = Clock::now();
        ++count_;
      }
      ++waiting_;
      if (deadline != nullptr) {
        cv_.wait_until(lk, *deadline);
      } else {
        cv_.wait(lk);
      }
      --waiting_;
    }

    void done() {
      if (started_) ns_ += elapsed_ns(t0_);
    }

   private:
    std::condition_variable& cv_;
    int& waiting_;
    std::uint64_t& count_;
    std::int64_t& ns_;
    bool started_ = false;
    Clock::time_point t0_{};
  };

  Waits producer_waits() {
    return Waits(not_full_, waiting_producers_, c_.producer_blocks,
                 c_.producer_blocked_ns);
  }

  // Both helpers run under mu_ and assume room / availability was checked.
  void put(const T* items, std::size_t m) {
    std::size_t tail = head_ + size_;
    if (tail >= cap_) tail -= cap_;
    const std::size_t first = std::min(m, cap_ - tail);
    std::copy(items, items + first, buf_.begin() + static_cast<std::ptrdiff_t>(tail));
    std::copy(items + first, items + m, buf_.begin());
    size_ += m;
    c_.pushed += m;
    if (size_ > c_.high_watermark) c_.high_watermark = size_;
  }

  void take(T* out, std::size_t m, bool count = true) {
    const std::size_t first = std::min(m, cap_ - head_);
    const auto h = buf_.begin() + static_cast<std::ptrdiff_t>(head_);
    std::copy(h, h + static_cast<std::ptrdiff_t>(first), out);
    std::copy(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(m - first),
              out + first);
    head_ += m;
    if (head_ >= cap_) head_ -= cap_;
    size_ -= m;
    if (count) c_.popped += m;
  }

  mutable std::mutex mu_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  std::vector<T> buf_;
  const std::size_t cap_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  int waiting_producers_ = 0;
  int waiting_consumers_ = 0;
  bool closed_ = false;
  QueueCounters c_;
};

}  // namespace sage
