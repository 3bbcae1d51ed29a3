// A downstream user of an installed ioq: one device, one sequential queue
// that completes reads inline, one packet submitted and completed.
#include <ioq/ioq.hpp>

#include <cstdio>

int main() {
  auto dev = ioq::Device::create({.max_requests = 16});
  if (!dev) return 1;
  ioq::QueueConfig qc{.dispatch = ioq::DispatchType::sequential, .default_queue = true};
  qc.on_read = [](ioq::Queue&, ioq::Request r) { (void)r.complete(ioq::Status::success, r.length()); };
  if (!(*dev)->create_queue(qc) || (*dev)->start() != ioq::Status::success) return 1;

  int completed = 0;
  ioq::Packet p;
  p.type = ioq::RequestType::read;
  p.length = 4096;
  p.user = &completed;
  p.on_complete = [](ioq::Packet& pk) noexcept { ++*static_cast<int*>(pk.user); };
  if ((*dev)->submit(p) != ioq::Status::pending) return 1;
  std::printf("ioq consumer: %s, %llu bytes, %d completion\n", ioq::to_string(p.status).data(),
              static_cast<unsigned long long>(p.information), completed);
  return (completed == 1 && p.status == ioq::Status::success && p.information == 4096) ? 0 : 1;
}
