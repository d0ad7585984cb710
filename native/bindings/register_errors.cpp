// Exception plumbing: Python-defined exception types (subclasses of SageError) are
// installed by the wrapper modules, and core C++ errors are translated into them.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <map>
#include <mutex>
#include <string>

#include "errors.hpp"
#include "sage/errors.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Types are kept alive for the life of the process (never decref'd at shutdown).
std::map<std::string, PyObject*>& installed() {
  static auto* types = new std::map<std::string, PyObject*>();
  return *types;
}

}  // namespace

namespace sage_py {

PyObject* error_type(const char* kind) {
  auto& types = installed();
  auto it = types.find(kind);
  return it == types.end() ? PyExc_RuntimeError : it->second;
}

void raise(const char* kind, const std::string& message) {
  PyErr_SetString(error_type(kind), message.c_str());
  throw nb::python_error();
}

}  // namespace sage_py

void register_errors(nb::module_& m) {
  m.def(
      "install_errors",
      [](nb::dict types) {
        for (auto [key, value] : types) {
          if (!PyType_Check(value.ptr()) ||
              !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(value.ptr()),
                                reinterpret_cast<PyTypeObject*>(PyExc_Exception))) {
            throw nb::type_error("install_errors expects exception classes");
          }
          auto& slot = installed()[nb::cast<std::string>(key)];
          Py_XDECREF(slot);
          slot = nb::handle(value).inc_ref().ptr();
        }
      },
      "types"_a,
      "Install the Python exception classes native errors are raised as.\n\n"
      "Called by sage_core.channels and sage_core.vector_index at import; maps an\n"
      "error name (``\"QueueClosed\"``, ``\"IndexFormatError\"``, ...) to its class.");

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const sage::Error& e) {
      PyErr_SetString(sage_py::error_type(e.kind()), e.what());
    }
  });
}
