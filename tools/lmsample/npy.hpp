// A small, strict reader and writer for NumPy's .npy format (versions 1.0, 2.0 and 3.0).
//
// The reader parses the header dictionary exactly ({'descr': ..., 'fortran_order': ...,
// 'shape': (...)}, nothing else), checks every size against the file before it allocates, and
// reports any problem as an NpyError whose message names the file and what is wrong. It never
// reads past the data it was given. Only little-endian (or byte-sized) numeric types are read;
// big-endian data, Fortran order, structured and object arrays are rejected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace lmsample::tool {

//! Any problem with a .npy file or with how its contents are used; what() is a complete message.
class NpyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

//! Element types the reader understands.
enum class NpyType {
  kBool,     // |b1
  kInt8,     // |i1
  kUInt8,    // |u1
  kInt16,    // <i2
  kUInt16,   // <u2 (also how bfloat16 is usually stored)
  kInt32,    // <i4
  kUInt32,   // <u4
  kInt64,    // <i8
  kUInt64,   // <u8
  kFloat16,  // <f2
  kFloat32,  // <f4
  kFloat64,  // <f8
  kVoid2,    // |V2 (2-byte opaque values: how ml_dtypes' bfloat16 is saved)
};

//! Name of a type for messages ("float32", "uint16", ...).
const char* npy_type_name(NpyType t);
//! Bytes per element.
size_t npy_type_size(NpyType t);
bool npy_is_integer(NpyType t);  // bool counts as an integer (0/1)
bool npy_is_float(NpyType t);

//! The parsed header of a .npy file.
struct NpyHeader {
  int major = 1;  //!< format version
  int minor = 0;
  std::string descr;  //!< as written, e.g. "<f4"
  NpyType type = NpyType::kFloat32;
  bool fortran_order = false;
  std::vector<int64_t> shape;  //!< empty = 0-d (one element)
  int64_t count = 1;           //!< number of elements (product of shape)
  uint64_t data_offset = 0;    //!< bytes before the data
  uint64_t data_bytes = 0;     //!< count * element size
};

//! A whole array in memory. The data is 8-byte aligned.
struct NpyArray {
  std::string source;  //!< file name (or label) the array came from, for messages
  NpyHeader header;
  std::vector<uint64_t> storage;  //!< the data, unless mapped
  //! A regular file's data mapped read-only (read_npy): no copy, pages read as they are used
  //! and dropped under memory pressure, so files larger than memory work.
  std::shared_ptr<const void> mapping;
  const unsigned char* mapped = nullptr;

  NpyType type() const { return header.type; }
  const std::vector<int64_t>& shape() const { return header.shape; }
  int64_t count() const { return header.count; }
  int rank() const { return static_cast<int>(header.shape.size()); }
  const void* data() const {
    return mapped ? static_cast<const void*>(mapped) : static_cast<const void*>(storage.data());
  }
  //! Element i converted to double (any numeric type; float16 exactly, 64-bit integers rounded).
  double as_double(int64_t i) const;
  //! Integer (or bool) element i as sign and magnitude; false for non-integer types.
  bool integer_at(int64_t i, bool* negative, uint64_t* magnitude) const;
};

//! "(2, 3)"-style rendering of a shape, as NumPy prints it ("()" for 0-d, "(3,)" for 1-D).
std::string shape_string(const std::vector<int64_t>& shape);

//! Parses the magic, version and header of an .npy image whose first `size` bytes are `bytes`
//! (at least the whole header). `name` labels messages. Throws NpyError.
NpyHeader parse_npy_header(const void* bytes, size_t size, const std::string& name);

//! Parses the header dictionary text alone (for tests). Throws NpyError.
void parse_header_dict(const std::string& text, const std::string& name, NpyHeader* header);

//! Parses a complete in-memory .npy image. Throws NpyError.
NpyArray parse_npy(const void* bytes, size_t size, const std::string& name);

//! Reads a .npy file. Throws NpyError (missing file, I/O error, malformed or truncated file).
//! This machine's physical memory in bytes (0 where unknown).
uint64_t physical_memory();

//! Reads a .npy file: a regular file's data is mapped (its declared size checked against the file
//! first), anything else ("-" for standard input, pipes) is read in chunks after its declared
//! size was checked against this machine's memory; reads of more than 1 GiB report their
//! progress on stderr. Errors name the file and the sizes.
NpyArray read_npy(const std::string& path);

//! The bytes of a .npy header (magic, version, length, dict, padding to 64 bytes, newline).
//! Uses version 1.0 when the header fits in 65535 bytes, else 2.0.
std::string make_npy_header(const std::string& descr, bool fortran_order,
                            const std::vector<int64_t>& shape);

//! Writes a C-order array. `descr` is e.g. "<f4"; `bytes` must equal product(shape) * item size.
//! Throws NpyError on I/O failure or a size mismatch.
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t bytes);

//! Typed convenience writers.
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint64_t* data);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint32_t* data);
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint16_t* data);

}  // namespace lmsample::tool
