// Errors raised by the binding-free core. Each carries the name of the Python
// exception it becomes (installed by the Python wrappers through
// sage_core._native._install_errors), so the core never includes Python headers.
#pragma once

#include <stdexcept>
#include <string>

namespace sage {

class Error : public std::runtime_error {
 public:
  Error(const char* kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  const char* kind() const noexcept { return kind_; }

 private:
  const char* kind_;
};

// A saved index is truncated, corrupt, of another format or of a newer version.
inline Error format_error(const std::string& what) { return Error("IndexFormatError", what); }
// An id given to add() is already present (or repeated in the batch).
inline Error duplicate_id(const std::string& what) { return Error("DuplicateIdError", what); }
// An id given to remove() is not present.
inline Error unknown_id(const std::string& what) { return Error("UnknownIdError", what); }
// Vectors or queries whose width differs from the index's dimension.
inline Error dimension_error(const std::string& what) {
  return Error("DimensionMismatchError", what);
}
// A row store asked to hold more rows than its row numbers can address.
inline Error capacity_error(const std::string& what) {
  return Error("IndexCapacityError", what);
}
// An IVF index asked to search or add before it has centroids.
inline Error not_trained(const std::string& what) { return Error("IndexNotTrainedError", what); }

}  // namespace sage
