// Bindings for sage::BoundedQueue holding Python objects.
//
// Reference rules: the queue owns one reference to every object in the ring. A push
// takes it (incref, with the GIL) before the handle enters the ring; a pop hands it
// to the caller (steal). Handles move in and out of the ring without the GIL, so
// blocking waits release it; objects are only touched while it is held.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errors.hpp"
#include "sage/bounded_queue.hpp"
#include "sage/limits.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Queue = sage::BoundedQueue<PyObject*>;
using Clock = Queue::Clock;
using sage::QueueStatus;

// Blocking waits wake this often to let the main thread see signals (Ctrl-C).
constexpr auto kSlice = std::chrono::milliseconds(200);
const Clock::time_point kNoWait = Clock::time_point::min();

struct PyQueue {
  explicit PyQueue(std::size_t capacity) : q(capacity) {}
  ~PyQueue() { release_all(); }

  void release_all() {
    for (PyObject* obj : q.drain()) Py_DECREF(obj);
  }

  Queue q;
};

struct Deadline {
  bool immediate = false;  // timeout == 0
  bool forever = true;     // timeout is None
  Clock::time_point at{};
};

// Timeouts of this many seconds or more (about 31.7 years), and inf, wait forever:
// a deadline that far ahead would overflow the clock's nanosecond count.
constexpr double kForeverSeconds = 1e9;

Deadline parse_timeout(std::optional<double> timeout) {
  Deadline d;
  if (!timeout) return d;
  const double t = *timeout;
  if (std::isnan(t) || t < 0.0) {
    throw nb::value_error(("timeout must be a number of seconds >= 0, or None (or inf) "
                           "to wait forever; got " + std::to_string(t)).c_str());
  }
  if (t >= kForeverSeconds) return d;
  d.forever = false;
  d.immediate = t == 0.0;
  d.at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(t));
  return d;
}

[[noreturn]] void raise_closed(const char* what, std::size_t pushed = 0) {
  PyObject* type = sage_py::error_type("QueueClosed");
  const std::string msg = std::string(what) + ": the queue is closed";
  PyObject* exc = PyObject_CallFunction(type, "sn", msg.c_str(), static_cast<Py_ssize_t>(pushed));
  if (exc != nullptr) {
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
  }
  throw nb::python_error();
}

[[noreturn]] void raise_timeout(const char* what, std::optional<double> timeout) {
  sage_py::raise("QueueTimeout",
                 std::string(what) + " timed out after " + std::to_string(*timeout) + " s");
}

enum class Waited { done, timeout, closed, interrupted };

// Runs `step(until)` (which waits no later than `until`, without the GIL) in slices
// until it reports ok/closed or the deadline passes; checks signals between slices.
template <class Step>
Waited wait_loop(const Deadline& d, Step&& step) {
  for (;;) {
    const auto slice_end = Clock::now() + kSlice;
    const bool last = !d.forever && d.at <= slice_end;
    const Clock::time_point until = last ? d.at : slice_end;
    QueueStatus st;
    {
      nb::gil_scoped_release nogil;
      st = step(until);
    }
    if (st == QueueStatus::ok) return Waited::done;
    if (st == QueueStatus::closed) return Waited::closed;
    if (last) return Waited::timeout;
    if (PyErr_CheckSignals() != 0) return Waited::interrupted;
  }
}

void push(PyQueue& self, nb::handle obj, std::optional<double> timeout) {
  const Deadline d = parse_timeout(timeout);
  PyObject* p = obj.ptr();
  Py_INCREF(p);
  const QueueStatus st = self.q.try_push(p);
  if (st == QueueStatus::ok) return;
  if (st == QueueStatus::closed || d.immediate) {
    Py_DECREF(p);
    if (st == QueueStatus::closed) raise_closed("push");
    raise_timeout("push", timeout);
  }
  const Waited w = wait_loop(d, [&](Clock::time_point until) {
    QueueStatus s;
    self.q.push_many(&p, 1, &until, s);
    return s;
  });
  if (w == Waited::done) return;
  Py_DECREF(p);
  if (w == Waited::closed) raise_closed("push");
  if (w == Waited::interrupted) throw nb::python_error();
  raise_timeout("push", timeout);
}

nb::object pop(PyQueue& self, std::optional<double> timeout) {
  const Deadline d = parse_timeout(timeout);
  PyObject* out = nullptr;
  const QueueStatus st = self.q.try_pop(out);
  if (st == QueueStatus::ok) return nb::steal(out);
  if (st == QueueStatus::closed) raise_closed("pop");
  if (d.immediate) raise_timeout("pop", timeout);
  const Waited w = wait_loop(d, [&](Clock::time_point until) {
    QueueStatus s;
    self.q.pop_many(&out, 1, &until, s);
    return s;
  });
  if (w == Waited::done) return nb::steal(out);
  if (w == Waited::closed) raise_closed("pop");
  if (w == Waited::interrupted) throw nb::python_error();
  raise_timeout("pop", timeout);
}

PyObject* kEmpty = nullptr;  // the (False, None) tuple, created once, never freed

nb::object try_pop(PyQueue& self) {
  PyObject* out = nullptr;
  const QueueStatus st = self.q.try_pop(out);
  if (st == QueueStatus::ok) {
    PyObject* t = PyTuple_New(2);
    if (t == nullptr) {
      Py_DECREF(out);
      throw nb::python_error();
    }
    Py_INCREF(Py_True);
    PyTuple_SET_ITEM(t, 0, Py_True);
    PyTuple_SET_ITEM(t, 1, out);
    return nb::steal(t);
  }
  if (st == QueueStatus::closed) raise_closed("try_pop");
  return nb::borrow(kEmpty);
}

bool try_push(PyQueue& self, nb::handle obj) {
  PyObject* p = obj.ptr();
  Py_INCREF(p);
  const QueueStatus st = self.q.try_push(p);
  if (st == QueueStatus::ok) return true;
  Py_DECREF(p);
  if (st == QueueStatus::closed) raise_closed("try_push");
  return false;
}

bool wait_room(PyQueue& self, std::optional<double> timeout) {
  const Deadline d = parse_timeout(timeout);
  const QueueStatus st = self.q.wait_room(&kNoWait);
  if (st == QueueStatus::ok) return true;
  if (st == QueueStatus::closed) raise_closed("wait_room");
  if (d.immediate) return false;
  const Waited w = wait_loop(d, [&](Clock::time_point until) { return self.q.wait_room(&until); });
  if (w == Waited::done) return true;
  if (w == Waited::closed) raise_closed("wait_room");
  if (w == Waited::interrupted) throw nb::python_error();
  return false;
}

std::size_t push_many(PyQueue& self, nb::handle items, std::optional<double> timeout) {
  const Deadline d = parse_timeout(timeout);
  nb::object seq = nb::steal(PySequence_Fast(items.ptr(), "push_many expects an iterable"));
  if (!seq.is_valid()) throw nb::python_error();
  const auto n = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq.ptr()));
  PyObject** arr = PySequence_Fast_ITEMS(seq.ptr());
  for (std::size_t i = 0; i < n; ++i) Py_INCREF(arr[i]);
  QueueStatus st;
  std::size_t done = self.q.push_many(arr, n, &kNoWait, st);
  if (st == QueueStatus::timeout && !d.immediate) {
    // Copy the rest: the sequence may change while the GIL is released.
    std::vector<PyObject*> rest(arr + done, arr + n);
    std::size_t more = 0;
    const Waited w = wait_loop(d, [&](Clock::time_point until) {
      QueueStatus s;
      more += self.q.push_many(rest.data() + more, rest.size() - more, &until, s);
      return s;
    });
    for (std::size_t i = more; i < rest.size(); ++i) Py_DECREF(rest[i]);
    done += more;
    if (w == Waited::closed) raise_closed("push_many", done);
    if (w == Waited::interrupted) throw nb::python_error();
    return done;
  }
  for (std::size_t i = done; i < n; ++i) Py_DECREF(arr[i]);
  if (st == QueueStatus::closed) raise_closed("push_many", done);
  return done;
}

// Objects popped by one pop_many call before they go into the result list. Each call
// has its own: building the list can run the garbage collector, whose finalizers may
// pop other queues on this thread before the list is filled.
class PopBuffer {
 public:
  explicit PopBuffer(std::size_t n) {
    if (n > kInline) {
      heap_.reset(new PyObject*[n]);
      data_ = heap_.get();
    }
  }
  PyObject** data() noexcept { return data_; }

 private:
  static constexpr std::size_t kInline = 256;
  PyObject* inline_[kInline];
  std::unique_ptr<PyObject*[]> heap_;
  PyObject** data_ = inline_;
};

nb::list pop_many(PyQueue& self, std::size_t max_n, std::optional<double> timeout) {
  if (max_n < 1) throw nb::value_error("max_n must be at least 1");
  const Deadline d = parse_timeout(timeout);
  max_n = std::min(max_n, self.q.capacity());  // never more than the ring holds
  PopBuffer buf(max_n);
  QueueStatus st;
  std::size_t got = self.q.pop_many(buf.data(), max_n, &kNoWait, st);
  if (st == QueueStatus::closed) raise_closed("pop_many");
  if (got == 0 && !d.immediate) {
    const Waited w = wait_loop(d, [&](Clock::time_point until) {
      QueueStatus s;
      got = self.q.pop_many(buf.data(), max_n, &until, s);
      return s;
    });
    if (w == Waited::closed) raise_closed("pop_many");
    if (w == Waited::interrupted) throw nb::python_error();
  }
  PyObject** items = buf.data();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(got));
  if (list == nullptr) {
    for (std::size_t i = 0; i < got; ++i) Py_DECREF(items[i]);
    throw nb::python_error();
  }
  for (std::size_t i = 0; i < got; ++i) PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), items[i]);
  return nb::steal<nb::list>(list);
}

nb::dict counters(PyQueue& self) {
  const sage::QueueCounters c = self.q.counters();
  nb::dict out;
  out["pushed"] = c.pushed;
  out["popped"] = c.popped;
  out["size"] = c.size;
  out["capacity"] = c.capacity;
  out["high_watermark"] = c.high_watermark;
  out["producer_blocks"] = c.producer_blocks;
  out["consumer_waits"] = c.consumer_waits;
  out["producer_blocked_s"] = static_cast<double>(c.producer_blocked_ns) * 1e-9;
  out["consumer_wait_s"] = static_cast<double>(c.consumer_wait_ns) * 1e-9;
  out["closed"] = c.closed;
  return out;
}

// Cyclic GC support: objects in the ring may refer back to the queue.
int queue_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!nb::inst_ready(self)) return 0;
  return nb::inst_ptr<PyQueue>(self)->q.visit([&](PyObject* obj) {
    Py_VISIT(obj);
    return 0;
  });
}

int queue_clear(PyObject* self) {
  if (nb::inst_ready(self)) nb::inst_ptr<PyQueue>(self)->release_all();
  return 0;
}

PyType_Slot queue_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(queue_traverse)},
                             {Py_tp_clear, reinterpret_cast<void*>(queue_clear)},
                             {0, nullptr}};

}  // namespace

void register_queue(nb::module_& m) {
  kEmpty = Py_BuildValue("(OO)", Py_False, Py_None);

  nb::class_<PyQueue>(m, "BoundedQueue", nb::type_slots(queue_slots),
                      "Bounded multi-producer multi-consumer FIFO of Python objects.\n\n"
                      "A ring buffer of fixed capacity. Blocking waits release the GIL;\n"
                      "``try_push``/``try_pop`` never block (for async callers).")
      .def(nb::init<std::size_t>(), "capacity"_a,
           "Create an empty queue holding at most ``capacity`` objects\n"
           "(1 <= capacity <= 2**26; the ring is allocated up front).\n\n"
           "Raises:\n    ValueError: capacity out of range.")
      .def("try_push", &try_push, "obj"_a.none(),
           "Append ``obj`` if there is room; return False when full. Never blocks.\n\n"
           "Raises:\n    QueueClosed: the queue is closed.")
      .def("try_pop", &try_pop, nb::sig("def try_pop(self) -> tuple[bool, typing.Any]"),
           "Return ``(True, obj)`` for the oldest object, or ``(False, None)`` when\n"
           "empty. Never blocks.\n\n"
           "Raises:\n    QueueClosed: the queue is closed and drained.")
      .def("push", &push, "obj"_a.none(), "timeout"_a = nb::none(),
           "Append ``obj``, waiting (GIL released) while the queue is full.\n\n"
           "Args:\n    timeout: seconds to wait; None, inf or >= 1e9 (31 years) wait\n"
           "        forever, 0 never waits.\n\n"
           "Raises:\n    QueueTimeout: still full when the timeout expired.\n"
           "    QueueClosed: the queue is or became closed.\n"
           "    ValueError: the timeout is NaN or negative.")
      .def("pop", &pop, "timeout"_a = nb::none(),
           nb::sig("def pop(self, timeout: float | None = None) -> typing.Any"),
           "Remove and return the oldest object, waiting while the queue is empty.\n\n"
           "Args:\n    timeout: as for push (None, inf or >= 1e9 wait forever).\n\n"
           "Raises:\n    QueueTimeout: still empty when the timeout expired.\n"
           "    QueueClosed: the queue is closed and drained.\n"
           "    ValueError: the timeout is NaN or negative.")
      .def("wait_room", &wait_room, "timeout"_a = nb::none(),
           "Wait (GIL released) until the queue has room; return True then, False\n"
           "when the timeout expired first. Another producer may take the room:\n"
           "push with ``try_push`` and wait again when it returns False (a value\n"
           "built after the wait, such as the time it entered, goes in as built).\n\n"
           "Args:\n    timeout: as for ``push``.\n\n"
           "Raises:\n"
           "    QueueClosed: the queue is or became closed.\n"
           "    ValueError: the timeout is NaN or negative.")
      .def("push_many", &push_many, "items"_a, "timeout"_a = nb::none(),
           nb::sig("def push_many(self, items: collections.abc.Iterable[typing.Any], "
                   "timeout: float | None = None) -> int"),
           "Append ``items`` in order, waiting while full; return how many went in.\n\n"
           "Fewer than ``len(items)`` only when the timeout expired (the rest were\n"
           "not queued; retry them). ``timeout=0`` pushes what fits now.\n\n"
           "Raises:\n    QueueClosed: closed before all were pushed (``.pushed`` counts\n"
           "        the ones that went in).")
      .def("pop_many", &pop_many, "max_n"_a, "timeout"_a = nb::none(),
           nb::sig("def pop_many(self, max_n: int, timeout: float | None = None) "
                   "-> list[typing.Any]"),
           "Remove and return up to ``max_n`` objects, oldest first.\n\n"
           "Returns what is there at once; waits only while the queue is empty, and\n"
           "returns ``[]`` if it is still empty when the timeout expires.\n\n"
           "Raises:\n    QueueClosed: the queue is closed and drained.")
      .def("close", [](PyQueue& self) { self.q.close(); },
           "Close the queue and wake every waiter. Pushes then raise QueueClosed;\n"
           "pops drain what remains, then raise QueueClosed. Idempotent.")
      .def_prop_ro("closed", [](PyQueue& self) { return self.q.closed(); },
                   "Whether close() was called.")
      .def_prop_ro("size", [](PyQueue& self) { return self.q.size(); },
                   "Number of objects in the queue now.")
      .def_prop_ro("capacity", [](PyQueue& self) { return self.q.capacity(); },
                   "Most objects the queue holds.")
      .def("counters", &counters,
           "Counters since creation: pushed, popped, high_watermark, producer_blocks,\n"
           "consumer_waits, producer_blocked_s, consumer_wait_s, size, capacity, closed.");
}
