// Python exception types the wrappers install, looked up by name when raising.
#pragma once

#include <nanobind/nanobind.h>

#include <string>

namespace sage_py {

// The installed type for `kind` (e.g. "QueueClosed"), or RuntimeError if the
// wrapper module that defines it has not been imported.
PyObject* error_type(const char* kind);

// Sets the Python error `kind(message)` and throws nanobind::python_error.
// Requires the GIL.
[[noreturn]] void raise(const char* kind, const std::string& message);

}  // namespace sage_py
