// The public Queue and Device member functions, forwarding to the implementation.
#include <ioq/device.hpp>
#include <ioq/queue.hpp>

#include <atomic>
#include <sstream>
#include <string>
#include <vector>

#include "queue/impl.hpp"

namespace ioq {

using detail::impl;
using SyncOp = detail::QueueImpl::SyncOp;

// ---- Queue ----

Status Queue::start() noexcept { return impl(*this).start_impl(); }
Status Queue::stop(QueueCallback cb, void* ctx) noexcept { return impl(*this).stop_impl(cb, ctx, false); }
Status Queue::stop_synchronously() noexcept { return impl(*this).sync_impl(SyncOp::stop); }
Status Queue::stop_and_purge(QueueCallback cb, void* ctx) noexcept {
  return impl(*this).stop_impl(cb, ctx, true);
}
Status Queue::stop_and_purge_synchronously() noexcept { return impl(*this).sync_impl(SyncOp::stop_and_purge); }
Status Queue::drain(QueueCallback cb, void* ctx) noexcept { return impl(*this).drain_impl(cb, ctx, false); }
Status Queue::drain_synchronously() noexcept { return impl(*this).sync_impl(SyncOp::drain); }
Status Queue::purge(QueueCallback cb, void* ctx) noexcept { return impl(*this).drain_impl(cb, ctx, true); }
Status Queue::purge_synchronously() noexcept { return impl(*this).sync_impl(SyncOp::purge); }
QueueState Queue::get_state() const noexcept { return impl(*this).get_state_impl(); }
Status Queue::ready_notify(QueueCallback cb, void* ctx) noexcept { return impl(*this).ready_notify_impl(cb, ctx); }
Status Queue::retrieve_next_request(Request& out) noexcept {
  return impl(*this).retrieve_impl(FileHandle{}, false, out);
}
Status Queue::retrieve_next_request_by_file_object(FileHandle file, Request& out) noexcept {
  return impl(*this).retrieve_impl(file, true, out);
}
Status Queue::find_request(Request after, FileHandle file, Request& out) noexcept {
  return impl(*this).find_impl(after, file, out);
}
Status Queue::retrieve_found_request(Request tag, Request& out) noexcept {
  return impl(*this).retrieve_found_impl(tag, out);
}
Status Queue::assign_forward_progress_policy(const ForwardProgressConfig& config) noexcept {
  return impl(*this).assign_fp(config);
}
ForwardProgressStats Queue::forward_progress_stats() const noexcept { return impl(*this).fp_stats(); }
Device& Queue::device() const noexcept { return impl(*this).dev(); }
const char* Queue::name() const noexcept { return impl(*this).config().name; }
DispatchType Queue::dispatch_type() const noexcept { return impl(*this).config().dispatch; }
bool Queue::power_managed() const noexcept { return impl(*this).is_power_managed(); }
QueueCounters Queue::counters() const noexcept { return impl(*this).counters_impl(); }

// ---- Device ----

Result<std::unique_ptr<Device>> Device::create(const DeviceConfig& config) {
  if (config.max_requests == 0 || config.max_requests > detail::qs::kMaxRequests ||
      config.max_reserved_requests > detail::qs::kMaxRequests - config.max_requests)
    return fail(Status::invalid_parameter,
                "device: max_requests (at least 1) plus max_reserved_requests must not exceed " +
                    std::to_string(detail::qs::kMaxRequests));
  if (config.lower != nullptr && !config.filter)
    return fail(Status::invalid_parameter, "device: only a filter has a lower device");
  auto d = std::make_unique<detail::DeviceImpl>(config);
  if (const Status s = d->init(); s != Status::success)
    return fail(s, "device: cannot allocate the request slab");
  return std::unique_ptr<Device>(d.release());
}

Device::~Device() = default;

Result<Queue*> Device::create_queue(const QueueConfig& config) { return impl(*this).create_queue_impl(config); }
Status Device::configure_request_dispatching(Queue& queue, RequestType type) noexcept {
  return impl(*this).route_impl(queue, type);
}
Queue* Device::default_queue() const noexcept { return impl(*this).default_queue_; }
Status Device::start() noexcept { return impl(*this).start_impl(); }
Status Device::submit(Packet& packet) noexcept { return impl(*this).submit_impl(packet); }
Status Device::submit_batch(Packet* const* packets, std::size_t n) noexcept {
  return impl(*this).submit_batch_impl(packets, n);
}
Status Device::cancel(Packet& packet) noexcept {
  // A packet parked for a reserved request has no request yet.
  const std::uintptr_t parked = std::atomic_ref<std::uintptr_t>(packet.parked).load(std::memory_order_acquire);
  if (parked != 0 && reinterpret_cast<detail::QueueImpl*>(parked)->fp_cancel_parked(&packet))
    return Status::success;
  return impl(*this).cancel_impl(std::atomic_ref<std::uint64_t>(packet.request).load(std::memory_order_acquire));
}
Status Device::cancel(std::uint64_t request_handle) noexcept { return impl(*this).cancel_impl(request_handle); }
FileHandle Device::open_file() noexcept { return impl(*this).open_file_impl(); }
Status Device::close_file(FileHandle file) noexcept { return impl(*this).close_file_impl(file); }
Status Device::suspend() noexcept { return impl(*this).suspend_impl(); }
Status Device::resume() noexcept { return impl(*this).resume_impl(); }
Status Device::remove() noexcept { return impl(*this).remove_impl(); }
PowerState Device::power_state() const noexcept { return impl(*this).power_.load(std::memory_order_acquire); }

VerifierCounts Device::verifier() const noexcept {
  VerifierCounts out;
  const auto& d = impl(*this);
  for (std::size_t i = 0; i < kStatusCount; ++i) out.by_status[i] = d.verifier_[i].load(std::memory_order_relaxed);
  return out;
}

void Device::set_abort_on_misuse(bool on) noexcept {
  impl(*this).abort_on_misuse_.store(on, std::memory_order_relaxed);
}

DeviceStats Device::stats() const noexcept {
  const auto& d = impl(*this);
  const detail::SlabStats s = d.slab_->stats();
  const auto c = d.counters_.snapshot();
  DeviceStats out;
  out.max_requests = s.slots;
  out.free_requests = s.free_slots;
  out.allocation_failures = s.exhausted;
  out.injected_failures = s.injected;
  out.submitted = c[detail::DeviceImpl::kSubmitted];
  out.completed = c[detail::DeviceImpl::kCompletedPackets] + detail::deferred_completions(nullptr, &d);
  return out;
}

const DeviceConfig& Device::config() const noexcept { return impl(*this).cfg(); }

std::string Device::prometheus() const {
  const auto& d = impl(*this);
  std::ostringstream out;
  struct Metric {
    const char* name;
    const char* type;
    const char* help;
  };
  static constexpr Metric metrics[] = {
      {"ioq_queue_arrived_total", "counter", "Requests routed to the queue and accepted."},
      {"ioq_queue_presented_total", "counter", "Requests delivered to a handler or retrieved."},
      {"ioq_queue_completed_total", "counter", "Requests completed through the queue."},
      {"ioq_queue_cancelled_total", "counter", "Requests completed cancelled."},
      {"ioq_queue_forwarded_total", "counter", "Requests forwarded to another queue."},
      {"ioq_queue_requeued_total", "counter", "Requests requeued."},
      {"ioq_queue_rejected_total", "counter", "Arrivals refused (not accepting)."},
      {"ioq_queue_depth", "gauge", "Requests queued plus owned by the driver."},
      {"ioq_queue_reserved_in_use", "gauge", "Reserved requests bound to a packet."},
      {"ioq_queue_parked", "gauge", "Packets waiting for a reserved request."},
  };
  // One sample set per queue, and per core for a queue with per-core shards.
  struct Sample {
    std::string labels;
    std::uint64_t v[std::size(metrics)];
  };
  std::vector<Sample> samples;
  auto add = [&](const detail::QueueImpl& q, const std::string& labels, bool with_fp) {
    const QueueCounters c = q.counters_impl();
    const QueueState st = q.get_state_impl();
    const ForwardProgressStats fp = with_fp ? q.fp_stats() : ForwardProgressStats{};
    samples.push_back(Sample{labels,
                             {c.arrived, c.presented, c.completed, c.cancelled, c.forwarded, c.requeued,
                              c.rejected, std::uint64_t{st.queued} + st.driver_owned, fp.in_use, fp.parked}});
  };
  std::size_t i = 0;
  for (const detail::QueueImpl* q : d.queue_list()) {
    const std::string base = "device=\"" + std::string(d.cfg().name) + "\",queue=\"" +
                             (q->config().name[0] ? std::string(q->config().name) : "q" + std::to_string(i)) + "\"";
    add(*q, base, true);
    std::uint32_t core = 0;
    for (const auto& shard : q->shards()) add(*shard, base + ",core=\"" + std::to_string(core++) + "\"", false);
    ++i;
  }
  for (std::size_t m = 0; m < std::size(metrics); ++m) {
    out << "# HELP " << metrics[m].name << ' ' << metrics[m].help << "\n# TYPE " << metrics[m].name << ' '
        << metrics[m].type << '\n';
    for (const Sample& s : samples) out << metrics[m].name << '{' << s.labels << "} " << s.v[m] << '\n';
  }
  const DeviceStats ds = stats();
  out << "# HELP ioq_device_free_requests Free request slots.\n# TYPE ioq_device_free_requests gauge\n"
      << "ioq_device_free_requests{device=\"" << d.cfg().name << "\"} " << ds.free_requests << '\n';
  return out.str();
}

const char* to_string(RequestType t) noexcept {
  switch (t) {
    case RequestType::create: return "create";
    case RequestType::read: return "read";
    case RequestType::write: return "write";
    case RequestType::device_control: return "device_control";
    case RequestType::internal_device_control: return "internal_device_control";
    case RequestType::flush: return "flush";
    case RequestType::discard: return "discard";
    case RequestType::write_zeroes: return "write_zeroes";
  }
  return "unknown";
}

}  // namespace ioq
