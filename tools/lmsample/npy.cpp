// .npy reader and writer; see npy.hpp.
#include "npy.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <system_error>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader assumes a little-endian host"
#endif

namespace lmsample::tool {
namespace {

constexpr char kMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 20;  // NumPy writes a few hundred bytes

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw NpyError(name + ": " + what);
}

std::string printable(const std::string& s, size_t max_len = 40) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

// A recursive-descent parser for the Python literal NumPy writes as the header:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class DictParser {
 public:
  DictParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  void parse(NpyHeader* h) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{', "the header must be a Python dict starting with '{'");
    skip_ws();
    while (peek() != '}') {
      const std::string key = parse_string("a quoted key");
      skip_ws();
      expect(':', "expected ':' after key '" + printable(key) + "'");
      skip_ws();
      if (key == "descr") {
        if (have_descr) error("duplicate key 'descr'");
        have_descr = true;
        if (peek() == '[') error("structured (record) dtypes are not supported");
        h->descr = parse_string("a quoted dtype string for 'descr'");
      } else if (key == "fortran_order") {
        if (have_fortran) error("duplicate key 'fortran_order'");
        have_fortran = true;
        h->fortran_order = parse_bool();
      } else if (key == "shape") {
        if (have_shape) error("duplicate key 'shape'");
        have_shape = true;
        h->shape = parse_shape();
      } else {
        error("unexpected key '" + printable(key) +
              "' (a .npy header has exactly 'descr', 'fortran_order' and 'shape')");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      } else if (peek() != '}') {
        error("expected ',' or '}' after the value of '" + printable(key) + "'");
      }
    }
    ++pos_;  // '}'
    skip_ws();
    if (pos_ != s_.size()) error("unexpected text after the header dict");
    if (!have_descr) error("the header has no 'descr' key");
    if (!have_fortran) error("the header has no 'fortran_order' key");
    if (!have_shape) error("the header has no 'shape' key");
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    std::string shown = s_;  // without NumPy's padding
    while (!shown.empty() && (shown.back() == ' ' || shown.back() == '\n')) shown.pop_back();
    fail(name_, "malformed .npy header: " + what + " (header: \"" + printable(shown, 120) + "\")");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool at_end() const { return pos_ >= s_.size(); }
  void skip_ws() {
    while (!at_end() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c, const std::string& what) {
    if (at_end() || s_[pos_] != c) error(what);
    ++pos_;
  }
  std::string parse_string(const std::string& what) {
    const char q = peek();
    if (q != '\'' && q != '"') error("expected " + what);
    ++pos_;
    std::string out;
    while (true) {
      if (at_end()) error("unterminated string");
      const char c = s_[pos_++];
      if (c == q) break;
      if (c == '\\') error("escape sequences in strings are not supported");
      if (c == '\n') error("unterminated string");
      out += c;
    }
    return out;
  }
  bool parse_bool() {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    error("'fortran_order' must be True or False");
  }
  int64_t parse_dim() {
    if (peek() == '-') error("negative dimension in 'shape'");
    if (peek() < '0' || peek() > '9') error("'shape' must be a tuple of non-negative integers");
    uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      const auto d = static_cast<uint64_t>(peek() - '0');
      if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - d) / 10)
        error("a dimension in 'shape' is too large");
      v = v * 10 + d;
      ++pos_;
    }
    if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 long literal
    return static_cast<int64_t>(v);
  }
  std::vector<int64_t> parse_shape() {
    if (peek() == '[') error("'shape' must be a tuple, not a list");
    expect('(', "'shape' must be a tuple of non-negative integers");
    std::vector<int64_t> dims;
    skip_ws();
    bool trailing_comma = false;
    while (peek() != ')') {
      if (dims.size() >= 64) error("'shape' has more than 64 dimensions");
      dims.push_back(parse_dim());
      skip_ws();
      trailing_comma = false;
      if (peek() == ',') {
        ++pos_;
        trailing_comma = true;
        skip_ws();
      } else if (peek() != ')') {
        error("expected ',' or ')' in 'shape'");
      }
    }
    ++pos_;
    if (dims.size() == 1 && !trailing_comma)
      error("'shape' (n) is not a tuple; a 1-element tuple is written (n,)");
    return dims;
  }

  const std::string& s_;
  const std::string& name_;
  size_t pos_ = 0;
};

struct TypeInfo {
  const char* code;  // without the byte-order character
  NpyType type;
  size_t size;
  const char* name;
};
constexpr TypeInfo kTypes[] = {
    {"b1", NpyType::kBool, 1, "bool"},
    {"i1", NpyType::kInt8, 1, "int8"},
    {"u1", NpyType::kUInt8, 1, "uint8"},
    {"i2", NpyType::kInt16, 2, "int16"},
    {"u2", NpyType::kUInt16, 2, "uint16"},
    {"i4", NpyType::kInt32, 4, "int32"},
    {"u4", NpyType::kUInt32, 4, "uint32"},
    {"i8", NpyType::kInt64, 8, "int64"},
    {"u8", NpyType::kUInt64, 8, "uint64"},
    {"f2", NpyType::kFloat16, 2, "float16"},
    {"f4", NpyType::kFloat32, 4, "float32"},
    {"f8", NpyType::kFloat64, 8, "float64"},
    {"V2", NpyType::kVoid2, 2, "void16 (2-byte opaque, e.g. ml_dtypes bfloat16)"},
};

const TypeInfo& info(NpyType t) {
  for (const auto& ti : kTypes)
    if (ti.type == t) return ti;
  return kTypes[0];
}

NpyType parse_descr(const std::string& descr, const std::string& name) {
  const std::string supported =
      "supported: '<f4', '<f2', '<f8', '<u2' (bfloat16 with --bf16), '<i4', '<i8', '<u4', '<u8', "
      "'<i2', '|i1', '|u1', '|b1'";
  if (descr.size() < 2)
    fail(name, "unsupported dtype '" + printable(descr) + "' (" + supported + ")");
  const char order = descr[0];
  const std::string code = descr.substr(1);
  const TypeInfo* found = nullptr;
  for (const auto& ti : kTypes)
    if (code == ti.code) found = &ti;
  if (order != '<' && order != '>' && order != '|' && order != '=') found = nullptr;
  if (!found) fail(name, "unsupported dtype '" + printable(descr) + "' (" + supported + ")");
  if (found->size > 1 && found->type != NpyType::kVoid2) {
    if (order == '>')
      fail(name, "big-endian data ('" + descr +
                     "') is not supported; save it little-endian, e.g. "
                     "a.astype('<" +
                     code + "')");
    if (order == '=')
      fail(name, "dtype '" + descr +
                     "' has native byte order, which a file cannot specify; save it "
                     "as '<" +
                     code + "'");
    if (order == '|')
      fail(name, "dtype '" + descr + "' has no byte order but " + std::to_string(found->size) +
                     "-byte elements; expected '<" + code + "'");
  }
  return found->type;
}

uint16_t load_u16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Reads magic and version; returns the prefix size (10 or 12) and the header length.
void parse_prefix(const unsigned char* p, size_t size, const std::string& name, NpyHeader* h,
                  uint64_t* prefix, uint64_t* header_len) {
  if (size < 8) {
    if (size == 0) fail(name, "the file is empty (not a .npy file)");
    if (std::memcmp(p, kMagic, size < 6 ? size : 6) != 0)
      fail(name, "not a .npy file (the magic string \\x93NUMPY is missing)");
    fail(name, "truncated .npy file: " + std::to_string(size) + " bytes, shorter than the header");
  }
  if (std::memcmp(p, kMagic, 6) != 0)
    fail(name, "not a .npy file (the magic string \\x93NUMPY is missing; first bytes: \"" +
                   printable(std::string(reinterpret_cast<const char*>(p), 8)) + "\")");
  h->major = p[6];
  h->minor = p[7];
  if (!((h->major == 1 || h->major == 2 || h->major == 3) && h->minor == 0))
    fail(name, "unsupported .npy format version " + std::to_string(h->major) + "." +
                   std::to_string(h->minor) + " (supported: 1.0, 2.0, 3.0)");
  *prefix = h->major == 1 ? 10 : 12;
  if (size < *prefix)
    fail(name, "truncated .npy file: " + std::to_string(size) + " bytes, shorter than the header");
  *header_len = h->major == 1 ? load_u16(p + 8) : load_u32(p + 8);
  if (*header_len > kMaxHeaderBytes)
    fail(name, "malformed .npy header: its length field says " + std::to_string(*header_len) +
                   " bytes, more than the 1 MiB this reader accepts");
}

void finish_header(const std::string& text, const std::string& name, NpyHeader* h) {
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u == 0 || u >= 0x80)
      fail(name, "malformed .npy header: it contains a byte that is not printable ASCII (\"" +
                     printable(text, 120) + "\")");
  }
  parse_header_dict(text, name, h);
}

}  // namespace

const char* npy_type_name(NpyType t) { return info(t).name; }
size_t npy_type_size(NpyType t) { return info(t).size; }
bool npy_is_float(NpyType t) {
  return t == NpyType::kFloat16 || t == NpyType::kFloat32 || t == NpyType::kFloat64;
}
bool npy_is_integer(NpyType t) { return !npy_is_float(t) && t != NpyType::kVoid2; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

void parse_header_dict(const std::string& text, const std::string& name, NpyHeader* h) {
  DictParser(text, name).parse(h);
  h->type = parse_descr(h->descr, name);
  const auto item = static_cast<uint64_t>(npy_type_size(h->type));
  uint64_t count = 1;
  int non_trivial = 0;
  for (const int64_t d : h->shape) {
    if (d > 1) ++non_trivial;
    const auto ud = static_cast<uint64_t>(d);
    if (ud != 0 && count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / item / ud)
      fail(name, "the shape " + shape_string(h->shape) + " is too large (its size overflows)");
    count *= ud;
  }
  if (h->fortran_order && non_trivial > 1)
    fail(name,
         "Fortran-order (column-major) arrays are not supported; save "
         "np.ascontiguousarray(a) instead");
  h->count = static_cast<int64_t>(count);
  h->data_bytes = count * item;
}

NpyHeader parse_npy_header(const void* bytes, size_t size, const std::string& name) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  NpyHeader h;
  uint64_t prefix = 0, header_len = 0;
  parse_prefix(p, size, name, &h, &prefix, &header_len);
  if (size - prefix < header_len)
    fail(name, "truncated .npy header: it should have " + std::to_string(header_len) +
                   " bytes, the file has " + std::to_string(size - prefix));
  finish_header(std::string(reinterpret_cast<const char*>(p + prefix), header_len), name, &h);
  h.data_offset = prefix + header_len;
  return h;
}

[[noreturn]] static void truncated_data(const std::string& name, const NpyHeader& h,
                                        uint64_t have) {
  fail(name, "truncated .npy data: shape " + shape_string(h.shape) + " of " +
                 npy_type_name(h.type) + " needs " + std::to_string(h.data_bytes) +
                 " bytes, the file has only " + std::to_string(have) + " after the header");
}

NpyArray parse_npy(const void* bytes, size_t size, const std::string& name) {
  NpyArray a;
  a.source = name;
  a.header = parse_npy_header(bytes, size, name);
  const uint64_t have = size - a.header.data_offset;
  if (have < a.header.data_bytes) truncated_data(name, a.header, have);
  a.storage.resize((a.header.data_bytes + 7) / 8);
  if (a.header.data_bytes)
    std::memcpy(a.storage.data(), static_cast<const unsigned char*>(bytes) + a.header.data_offset,
                a.header.data_bytes);
  return a;
}

namespace {

std::string mib(uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// Maps a regular file read-only and points a.mapped at its data (false: mapping failed; the caller
// reads it instead).
bool map_data(const std::string& path, uint64_t fsize, NpyArray* a) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  void* p = ::mmap(nullptr, static_cast<size_t>(fsize), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return false;
  ::madvise(p, static_cast<size_t>(fsize), MADV_SEQUENTIAL);
  a->mapping = std::shared_ptr<const void>(
      p, [fsize](const void* q) { ::munmap(const_cast<void*>(q), static_cast<size_t>(fsize)); });
  a->mapped = static_cast<const unsigned char*>(p) + a->header.data_offset;
  return true;
}

// A read's progress on stderr (reads above 1 GiB: a line at each further 10%).
class Progress {
 public:
  Progress(const std::string& path, uint64_t total) : path_(path), total_(total) {}
  void update(uint64_t got) {
    if (total_ < (uint64_t{1} << 30)) return;
    const int tenth = static_cast<int>(got * 10 / total_);
    if (tenth <= shown_) return;
    shown_ = tenth;
    std::fprintf(stderr, "lmsample: reading %s: %s of %s\n", path_.c_str(), mib(got).c_str(),
                 mib(total_).c_str());
  }

 private:
  std::string path_;
  uint64_t total_;
  int shown_ = 0;
};

}  // namespace

uint64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

NpyArray read_npy(const std::string& path) {
  // "-" is standard input; pipes and other special files are read as a stream (nothing seeks)
  const bool stdin_ = path == "-";
  std::error_code ec;
  const auto st = stdin_ ? std::filesystem::file_status{} : std::filesystem::status(path, ec);
  if (!stdin_ && (ec || !std::filesystem::exists(st))) fail(path, "no such file");
  if (std::filesystem::is_directory(st)) fail(path, "is a directory, not a .npy file");
  std::ifstream file;
  if (!stdin_) {
    file.open(path, std::ios::binary);
    if (!file) fail(path, std::string("cannot open: ") + std::strerror(errno));
  }
  std::istream& in = stdin_ ? std::cin : file;

  auto read_some = [&](char* dst, uint64_t n) -> uint64_t {
    uint64_t got = 0;
    while (got < n && in) {
      const uint64_t chunk = std::min<uint64_t>(n - got, uint64_t{1} << 30);
      in.read(dst + got, static_cast<std::streamsize>(chunk));
      got += static_cast<uint64_t>(in.gcount());
    }
    if (in.bad()) fail(path, "read error");
    return got;
  };

  unsigned char prefix_bytes[12] = {};
  const uint64_t got_prefix = read_some(reinterpret_cast<char*>(prefix_bytes), 12);
  NpyArray a;
  a.source = path;
  uint64_t prefix = 0, header_len = 0;
  parse_prefix(prefix_bytes, got_prefix, path, &a.header, &prefix, &header_len);
  // The header follows the prefix (10 bytes in version 1, whose header's first 2 bytes were read
  // with it: no seek, so that pipes work).
  std::string text(header_len, '\0');
  const uint64_t early = std::min<uint64_t>(got_prefix - prefix, header_len);
  std::memcpy(text.data(), prefix_bytes + prefix, early);
  const uint64_t got_header = early + read_some(text.data() + early, header_len - early);
  if (got_header < header_len)
    fail(path, "truncated .npy header: it should have " + std::to_string(header_len) +
                   " bytes, the file has " + std::to_string(got_header));
  finish_header(text, path, &a.header);
  a.header.data_offset = prefix + header_len;

  const uint64_t need = a.header.data_bytes;
  if (!stdin_ && std::filesystem::is_regular_file(st)) {
    const uint64_t fsize = std::filesystem::file_size(path, ec);
    if (!ec) {
      const uint64_t have = fsize > a.header.data_offset ? fsize - a.header.data_offset : 0;
      if (have < need) truncated_data(path, a.header, have);
      if (need > 0 && map_data(path, fsize, &a)) return a;
    }
  }
  // A stream (or a file that could not be mapped) is copied: its declared size must fit in memory.
  const uint64_t mem = physical_memory();
  if (mem > 0 && need > mem)
    fail(path, "the array needs " + mib(need) + " (shape " + shape_string(a.header.shape) + " of " +
                   npy_type_name(a.header.type) + "), more than this machine's " + mib(mem) +
                   " of memory");
  // Read in bounded chunks so that a lying header cannot make us allocate more than the file has.
  uint64_t got = 0;
  const uint64_t chunk = uint64_t{64} << 20;
  Progress progress(path, need);
  while (got < need) {
    const uint64_t n = std::min(chunk, need - got);
    a.storage.resize((got + n + 7) / 8);
    const uint64_t r = read_some(reinterpret_cast<char*>(a.storage.data()) + got, n);
    got += r;
    if (r < n) truncated_data(path, a.header, got);
    progress.update(got);
  }
  a.storage.resize((need + 7) / 8);
  return a;
}

double NpyArray::as_double(int64_t i) const {
  const auto* p = static_cast<const unsigned char*>(data());
  auto load = [&](auto tag) {
    decltype(tag) v;
    std::memcpy(&v, p + static_cast<size_t>(i) * sizeof v, sizeof v);
    return v;
  };
  switch (header.type) {
    case NpyType::kBool:
      return load(uint8_t{}) != 0 ? 1.0 : 0.0;
    case NpyType::kInt8:
      return load(int8_t{});
    case NpyType::kUInt8:
      return load(uint8_t{});
    case NpyType::kInt16:
      return load(int16_t{});
    case NpyType::kUInt16:
      return load(uint16_t{});
    case NpyType::kInt32:
      return load(int32_t{});
    case NpyType::kUInt32:
      return load(uint32_t{});
    case NpyType::kInt64:
      return static_cast<double>(load(int64_t{}));
    case NpyType::kUInt64:
      return static_cast<double>(load(uint64_t{}));
    case NpyType::kFloat32:
      return load(float{});
    case NpyType::kFloat64:
      return load(double{});
    case NpyType::kFloat16: {
      const uint16_t h = load(uint16_t{});
      const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
      const uint32_t exp = (h >> 10) & 0x1fu;
      const uint32_t mant = h & 0x3ffu;
      uint32_t bits;
      if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
      } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
      } else {
        const double v = static_cast<double>(mant) * 0x1p-24;  // exact
        return sign ? -v : v;
      }
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    case NpyType::kVoid2:
      return load(uint16_t{});
  }
  return 0.0;
}

bool NpyArray::integer_at(int64_t i, bool* negative, uint64_t* magnitude) const {
  const auto* p = static_cast<const unsigned char*>(data());
  auto load = [&](auto tag) {
    decltype(tag) v;
    std::memcpy(&v, p + static_cast<size_t>(i) * sizeof v, sizeof v);
    return v;
  };
  auto set_signed = [&](int64_t v) {
    *negative = v < 0;
    *magnitude = v < 0 ? uint64_t{0} - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  };
  auto set_unsigned = [&](uint64_t v) {
    *negative = false;
    *magnitude = v;
  };
  switch (header.type) {
    case NpyType::kBool:
      set_unsigned(load(uint8_t{}) != 0 ? 1 : 0);
      return true;
    case NpyType::kInt8:
      set_signed(load(int8_t{}));
      return true;
    case NpyType::kUInt8:
      set_unsigned(load(uint8_t{}));
      return true;
    case NpyType::kInt16:
      set_signed(load(int16_t{}));
      return true;
    case NpyType::kUInt16:
      set_unsigned(load(uint16_t{}));
      return true;
    case NpyType::kInt32:
      set_signed(load(int32_t{}));
      return true;
    case NpyType::kUInt32:
      set_unsigned(load(uint32_t{}));
      return true;
    case NpyType::kInt64:
      set_signed(load(int64_t{}));
      return true;
    case NpyType::kUInt64:
      set_unsigned(load(uint64_t{}));
      return true;
    default:
      return false;
  }
}

std::string make_npy_header(const std::string& descr, bool fortran_order,
                            const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '" + descr +
                     "', 'fortran_order': " + (fortran_order ? "True" : "False") +
                     ", 'shape': " + shape_string(shape) + ", }";
  // Pad with spaces so that magic + length + dict + '\n' is a multiple of 64 bytes.
  size_t prefix = 10;
  size_t total = prefix + dict.size() + 1;
  if ((total + 63) / 64 * 64 - prefix > 65535) prefix = 12;
  total = prefix + dict.size() + 1;
  const size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict += '\n';
  std::string out(kMagic, 6);
  const size_t hlen = dict.size();
  if (prefix == 10) {
    out += '\x01';
    out += '\x00';
    out += static_cast<char>(hlen & 0xff);
    out += static_cast<char>((hlen >> 8) & 0xff);
  } else {
    out += '\x02';
    out += '\x00';
    for (int b = 0; b < 4; ++b) out += static_cast<char>((hlen >> (8 * b)) & 0xff);
  }
  return out + dict;
}

void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t bytes) {
  NpyHeader check;
  parse_header_dict(
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_string(shape) + "}",
      path, &check);
  if (check.data_bytes != bytes)
    fail(path, "write_npy: " + std::to_string(bytes) + " bytes given for shape " +
                   shape_string(shape) + " of " + npy_type_name(check.type));
  const std::string header = make_npy_header(descr, false, shape);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, std::string("cannot create: ") + std::strerror(errno));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  if (bytes) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  out.close();
  if (!out) fail(path, std::string("write error: ") + std::strerror(errno));
}

namespace {
size_t elements(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (const int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}
}  // namespace

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  write_npy(path, "<f4", shape, data, elements(shape) * sizeof *data);
}
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data) {
  write_npy(path, "<i4", shape, data, elements(shape) * sizeof *data);
}
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data) {
  write_npy(path, "<i8", shape, data, elements(shape) * sizeof *data);
}
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint64_t* data) {
  write_npy(path, "<u8", shape, data, elements(shape) * sizeof *data);
}
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint32_t* data) {
  write_npy(path, "<u4", shape, data, elements(shape) * sizeof *data);
}
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const uint16_t* data) {
  write_npy(path, "<u2", shape, data, elements(shape) * sizeof *data);
}

}  // namespace lmsample::tool
