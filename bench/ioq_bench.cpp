// ioq-bench: ioq's load tool (see engine.hpp and tool/options.hpp).
//   ioq-bench                       the default job: the null target, then a temporary file
//                                   through the io_uring target, 2 s each
//   ioq-bench --help                every option, with its default
//   ioq-bench --target=null --dispatch=parallel --cores=1 --iodepth=32 --time_based --runtime=5
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "engine.hpp"
#include "tool/options.hpp"
#include "tool/report.hpp"

// Heap allocations in the whole process, for "allocations per request".
// These operators pair malloc with free; GCC's -Wmismatched-new-delete sees
// only the names.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<std::uint64_t> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t align = std::max<std::size_t>(static_cast<std::size_t>(a), sizeof(void*));
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

std::uint64_t ioq::bench::allocation_count() noexcept { return g_allocations.load(std::memory_order_relaxed); }

namespace {

using namespace ioq::bench;

// Exit codes: 0 done, 1 the run could not start or its report not be
// written, 2 a bad option (parse_options), 3 --verify found a bad block.
constexpr int kExitVerify = 3;

// A data file laid out for the uring target: the temporary file of a job
// without --filename (removed when the job ends), or a --filename that is
// missing or shorter than --size (created or extended, as fio lays out files).
class DataFile {
 public:
  ~DataFile() {
    if (temporary_ && !path_.empty()) ::unlink(path_.c_str());
  }
  const std::string& path() const noexcept { return path_; }

  // Empty on success, else the message.
  std::string prepare(const Options& o) {
    int fd = -1;
    if (o.filename.empty()) {
      const char* dir = std::getenv("TMPDIR");
      std::string tmpl = std::string(dir != nullptr && *dir != '\0' ? dir : "/var/tmp") + "/ioq-bench.XXXXXX";
      fd = ::mkstemp(tmpl.data());
      if (fd < 0) return "cannot create a temporary file " + tmpl + ": " + std::strerror(errno);
      path_ = tmpl;
      temporary_ = true;
    } else {
      path_ = o.filename;
      struct stat st{};
      if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) return {};  // a device: used as it is
      if (::stat(path_.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) >= o.size_bytes) return {};
      fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return "--filename: cannot create " + path_ + ": " + std::strerror(errno);
    }
    // Real data, not a hole: reads of a hole cost the kernel nothing.
    struct stat st{};
    (void)::fstat(fd, &st);
    std::vector<char> chunk(1 << 20);
    std::uint64_t x = 0x9E3779B97F4A7C15ull;
    for (std::size_t i = 0; i < chunk.size(); i += 8) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      std::memcpy(chunk.data() + i, &x, 8);
    }
    for (std::uint64_t off = static_cast<std::uint64_t>(st.st_size); off < o.size_bytes;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), o.size_bytes - off));
      const ssize_t w = ::pwrite(fd, chunk.data(), n, static_cast<off_t>(off));
      if (w <= 0) {
        const std::string why = w < 0 ? std::strerror(errno) : "no space";
        ::close(fd);
        return "cannot lay out " + path_ + ": " + why;
      }
      off += static_cast<std::uint64_t>(w);
    }
    const bool synced = ::fsync(fd) == 0;
    ::close(fd);
    if (!synced) return "cannot lay out " + path_ + ": fsync: " + std::strerror(errno);
    return {};
  }

 private:
  std::string path_;
  bool temporary_ = false;
};

void print_note(const Options& o, const EngineResult& r) {
  if (r.target_note.empty() || o.output_format != OutputFormat::normal) return;
  std::cout << "  target: " << to_string(o.target) << ", " << r.target_note << '\n';
}

// One job (or, with --verify on a writing job, its write pass and its
// read-back pass). Returns the exit code.
// skip_unavailable: a target the kernel or the file system refuses is
// reported and skipped (exit code 0), for the default job.
int run_job(Options o, bool skip_unavailable = false) {
  DataFile file;
  if (o.target == Target::uring) {
    if (std::string err = file.prepare(o); !err.empty()) {
      std::cerr << tool_name() << ": " << err << '\n';
      return 1;
    }
    o.filename = file.path();
  }
  const bool verifying = o.verify != Verify::none;
  std::uint64_t generation = 0;
  if (verifying && o.writes()) {
    // The write pass: every block of --size once, stamped with this run's
    // generation; then the read-back below expects exactly that generation.
    generation = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) | 1;
    Options w = o;
    w.rw = o.random() ? RwMode::randwrite : RwMode::write;
    w.time_based = false;
    w.runtime_ns = 0;
    w.ramp_time_ns = 0;
    EngineResult wr = run_engine(w, RunPlan{.each_block_once = true, .generation = generation});
    if (!wr.error.empty()) {
      std::cerr << wr.error << '\n';
      return 1;
    }
    if (const int rc = write_report(wr.job, std::cerr); rc != 0) return rc;
    print_note(w, wr);
    if (wr.job.failed != 0) {
      std::cerr << tool_name() << ": verify: " << wr.job.failed << " writes failed\n";
      return kExitVerify;
    }
  }
  Options r = o;
  if (verifying) {
    // The read-back: every block once, each checked (a read-only job checks
    // blocks written by an earlier verifying run, of any generation).
    r.rw = o.random() ? RwMode::randread : RwMode::read;
    r.time_based = false;
    r.runtime_ns = 0;
    r.ramp_time_ns = 0;
    if (!o.output.empty() && o.writes()) r.output.clear();  // --output holds the write pass
  }
  EngineResult result = run_engine(r, RunPlan{.each_block_once = verifying, .generation = generation});
  if (!result.error.empty()) {
    if (skip_unavailable && result.target_unavailable) {
      std::cout << "io_uring job skipped: " << result.error << '\n';
      return 0;
    }
    std::cerr << result.error << '\n';
    return 1;
  }
  int rc = write_report(result.job, std::cerr);
  print_note(r, result);
  if (o.prometheus) std::cout << result.prometheus;
  if (verifying) {
    const std::uint64_t blocks = o.size_bytes / o.bs_bytes;
    if (result.verify_errors != 0) {
      std::cerr << tool_name() << ": verify: " << result.verify_errors << " of " << blocks
                << " blocks bad; the first at offset " << result.first_bad_offset << " (" << result.first_bad_reason
                << ")\n";
      return kExitVerify;
    }
    if (result.verified != blocks || result.job.failed != 0) {
      std::cerr << tool_name() << ": verify: " << result.verified << " of " << blocks << " blocks checked, "
                << result.job.failed << " reads failed\n";
      return kExitVerify;
    }
    if (o.output_format == OutputFormat::normal)
      std::cout << "  verify: " << to_string(o.verify) << ", " << result.verified << " blocks good\n";
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<const char*> args(argv, argv + argc);
  Options options;
  if (argc == 1) {
    // The default job: the null target, then random 4 KiB reads of a
    // temporary file through the io_uring target (skipped, saying why, where
    // the kernel refuses io_uring).
    const char* null_job[] = {argv[0], "--target=null", "--time_based", "--runtime=2"};
    if (const int rc = parse_options(4, null_job, options, std::cout, std::cerr); rc >= 0) return rc;
    if (const int rc = run_job(options); rc != 0) return rc;
    std::cout << '\n';
    const char* uring_job[] = {argv[0], "--target=uring", "--rw=randread", "--size=64m", "--time_based",
                               "--runtime=2"};
    Options u;
    if (const int rc = parse_options(6, uring_job, u, std::cout, std::cerr); rc >= 0) return rc;
    return run_job(u, /*skip_unavailable=*/true);
  }
  if (const int rc = parse_options(static_cast<int>(args.size()), args.data(), options, std::cout, std::cerr);
      rc >= 0)
    return rc;
  return run_job(options);
}
