// The differential driver: one operation sequence, applied to ioq and to the
// reference model (tests/model/reference_model.hpp) in lockstep, compared after
// every step. Shared by tests/differential_test.cpp (random sequences from a
// seed) and tests/fuzz/queue_fuzz.cpp (sequences decoded from fuzzer bytes).
//
// An episode
//   32 configuration bytes pick a device (slab size, control device or not)
//   and 2-5 queues (sequential, parallel with or without a presented limit,
//   manual; power-managed or not; zero-length handling; which I/O handlers,
//   stop/resume/canceled-on-queue handlers; routing; forward-progress
//   policies with their callbacks). Then come operations, 8 bytes each (kind,
//   three parameters, a 32-bit decision seed): submit, cancel, complete,
//   forward, requeue, retrieve (next, by file, find + retrieve found), mark
//   and unmark cancelable, start, stop, drain, purge, stop_and_purge, the
//   synchronous forms, ready_notify, suspend, resume, remove, file open and
//   close, the allocation fault injector (ioq::FaultInjector: never, always,
//   every n-th), forward-progress assignment, queries and stray stop
//   acknowledgements. Parameters are read against the driver's ledger at the
//   time the operation runs ("the k-th request the driver owns"), so any
//   subsequence of an episode is a valid episode: that is what makes
//   shrinking work. A fixed teardown follows (remove, complete whatever the
//   driver owns, purge every queue), and every packet must have completed
//   exactly once on both sides.
//
// ioq runs in direct mode: no Runtime, every queue at dispatch level, one
// thread, so every callback has run when the call that caused it returns and
// the whole run is deterministic.
//
// The driver (the "Side")
//   Each side has the same driver: its handlers record what they are called
//   with and act inline (hold, complete, forward, mark cancelable, cancel a
//   packet, misuse...), choosing by a hash of the operation's seed and the
//   request, so both sides choose alike while they agree. Everything lands in
//   the step's event list: handler deliveries, packet completions (status,
//   information), canceled-on-queue, cancel, stop and resume callbacks,
//   stop/drain/purge callbacks, ready-notify, the forward-progress callbacks,
//   and the status of every inline action. After each step the sides compare
//   the operation's status and results, the events (in order, except that
//   consecutive stop, resume and cancel callbacks of one batch are compared
//   as a set: ioq visits owned requests in slab-slot order, which the spec
//   leaves open), and a snapshot: every queue's get_state flags and counts
//   and forward-progress stats, the verifier's usage-error counts and the
//   free request count. usage_already_completed and invalid_handle are one
//   class for a stale handle (ioq gives either, depending on whether the slot
//   was reused).
//
// Blocking calls
//   suspend and remove wait until every request the driver owns through a
//   powered-down queue is completed or acknowledged, and the *_synchronously
//   forms until their condition holds. Single-threaded, the driver makes sure
//   they never wait: before suspend/remove it completes the canceled requests
//   it owns (they get no stop callback) and those of queues without a stop
//   handler; its stop callbacks always acknowledge or complete the request;
//   during a power operation its canceled-on-queue and cancel callbacks
//   complete inline, and so do its I/O handlers for a request the power-down
//   would wait for (delivered during the call: a parked packet served by a
//   returning reserved request, a queue not shut down yet); it calls a
//   synchronous form only when the model's state says the condition already
//   holds (else the operation is skipped on both sides). The model runs first
//   and says when a call would block; that is reported as a driver error
//   instead of calling ioq. A watchdog (see run_episode) turns an unexpected
//   hang of ioq into a report.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ioq::diff {

inline constexpr std::size_t kConfigBytes = 32;
inline constexpr std::size_t kOpBytes = 8;

struct Op {
  std::uint8_t kind = 0, a = 0, b = 0, c = 0;
  std::uint32_t aux = 0;  // seeds the driver's inline decisions during this operation
};

struct Episode {
  std::array<std::uint8_t, kConfigBytes> config{};
  std::vector<Op> ops;
};

// Bytes <-> episodes: the fuzzer's input format, and the replay string
// (IOQ_DIFF_REPLAY=<hex>) printed with every divergence.
Episode decode(const std::uint8_t* data, std::size_t size);
std::vector<std::uint8_t> encode(const Episode& e);
std::string to_hex(const std::vector<std::uint8_t>& bytes);
std::optional<std::vector<std::uint8_t>> from_hex(std::string_view hex);

// A random episode of `ops` operations, drawn from a splitmix64 state.
Episode random_episode(std::uint64_t& rng, std::size_t ops);

struct Divergence {
  std::size_t step = 0;  // the operation's index; ops.size() and above: setup/teardown/final check
  std::string what;      // both sides' view of the step
};

struct RunResult {
  std::optional<Divergence> divergence;
  bool driver_error = false;  // the model says a call would block: the driver's fault, not ioq's
  std::string driver_error_text;
  std::size_t steps = 0;  // steps compared (operations + setup + teardown)
};

// Runs the episode on ioq and on the model in lockstep; stops at the first
// step where they differ.
RunResult run_episode(const Episode& e);

// Delta debugging: removes operations (chunks, then single ones) while the
// episode still diverges. At most `max_runs` episode runs.
Episode shrink(const Episode& e, std::size_t max_runs = 4000);

// The human-readable log of an episode: the configuration and each operation
// with the model's result and events, for a report.
std::string describe(const Episode& e);

// The full report of a failing episode: seed line (given), replay string,
// minimal log, and the diverging step in detail.
std::string report(const std::string& header, const Episode& minimal, const RunResult& r);

}  // namespace ioq::diff
