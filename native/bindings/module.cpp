// The single extension module of SAGE: sage_core._native.
// Each binding file registers its own part; the module only calls them in order.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

void register_hash(nb::module_& m);
void register_errors(nb::module_& m);
void register_queue(nb::module_& m);
void register_index(nb::module_& m);

NB_MODULE(_native, m) {
  m.doc() = "SAGE native core: stable hashing, bounded queues and vector indexes.";
  register_hash(m);
  register_errors(m);
  register_queue(m);
  register_index(m);
}
