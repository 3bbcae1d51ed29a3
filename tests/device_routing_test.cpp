// Routing of request types (spec section 2): routed queue, default queue,
// function device versus filter (pass-down to the lower device), and a
// device with no queue for a type.
#include <ioq/ioq.hpp>

#include <gtest/gtest.h>

#include "queue_harness.hpp"

namespace ioq {
namespace {

using test::make_device;
using test::make_queue;
using test::Packets;

void complete_ok(Queue&, Request r) { (void)r.complete(Status::success, 1); }
void complete_lower(Queue&, Request r) { (void)r.complete(Status::success, 2); }

TEST(DeviceRouting, FilterPassesTypesItsDefaultQueueCannotHandleDown) {
  auto lower = make_device({.max_requests = 16});
  QueueConfig lc{.dispatch = DispatchType::parallel, .default_queue = true};
  lc.on_default = complete_lower;
  Queue* lq = make_queue(*lower, lc);
  ASSERT_EQ(lower->start(), Status::success);

  auto filter = make_device({.max_requests = 16, .filter = true, .lower = lower.get()});
  QueueConfig fc{.dispatch = DispatchType::parallel, .default_queue = true};
  fc.on_read = complete_ok;  // the filter handles reads only
  Queue* fq = make_queue(*filter, fc);
  ASSERT_EQ(filter->start(), Status::success);

  Packets packets;
  auto& read = packets.make(RequestType::read);
  auto& write = packets.make(RequestType::write);
  auto& ioctl = packets.make(RequestType::device_control);
  ASSERT_EQ(filter->submit(read.packet), Status::pending);
  ASSERT_EQ(filter->submit(write.packet), Status::pending);
  ASSERT_EQ(filter->submit(ioctl.packet), Status::pending);
  EXPECT_EQ(read.information.load(), 1u) << "handled by the filter";
  EXPECT_EQ(write.information.load(), 2u) << "sent down, never queued in the filter";
  EXPECT_EQ(ioctl.information.load(), 2u);
  EXPECT_EQ(fq->counters().arrived, 1u);
  EXPECT_EQ(lq->counters().arrived, 2u);
  packets.expect_all_completed_once();
}

TEST(DeviceRouting, FilterWithoutAnyQueuePassesEverythingDown) {
  auto lower = make_device({.max_requests = 8});
  QueueConfig lc{.dispatch = DispatchType::sequential, .default_queue = true};
  lc.on_default = complete_lower;
  make_queue(*lower, lc);
  ASSERT_EQ(lower->start(), Status::success);
  auto filter = make_device({.max_requests = 8, .filter = true, .lower = lower.get()});
  ASSERT_EQ(filter->start(), Status::success);
  Packets packets;
  auto& p = packets.make(RequestType::internal_device_control);
  ASSERT_EQ(filter->submit(p.packet), Status::pending);
  EXPECT_EQ(p.status.load(), Status::success);
  EXPECT_EQ(p.information.load(), 2u);
}

TEST(DeviceRouting, FunctionDeviceWithoutQueueForTypeCompletesInvalidDeviceRequest) {
  auto dev = make_device({.max_requests = 8});
  QueueConfig qc{.dispatch = DispatchType::parallel};
  qc.on_read = complete_ok;
  Queue* q = make_queue(*dev, qc);
  ASSERT_EQ(dev->configure_request_dispatching(*q, RequestType::read), Status::success);
  ASSERT_EQ(dev->start(), Status::success);
  Packets packets;
  auto& read = packets.make(RequestType::read);
  auto& write = packets.make(RequestType::write);
  ASSERT_EQ(dev->submit(read.packet), Status::pending);
  ASSERT_EQ(dev->submit(write.packet), Status::pending);
  EXPECT_EQ(read.status.load(), Status::success);
  EXPECT_EQ(write.status.load(), Status::invalid_device_request) << "no routed queue, no default queue";
  packets.expect_all_completed_once();
}

TEST(DeviceRouting, SubmitBeforeStartAndMalformedPackets) {
  auto dev = make_device({.max_requests = 8});
  QueueConfig qc{.dispatch = DispatchType::parallel, .default_queue = true};
  qc.on_default = complete_ok;
  make_queue(*dev, qc);
  Packets packets;
  auto& early = packets.make(RequestType::read);
  ASSERT_EQ(dev->submit(early.packet), Status::pending);
  EXPECT_EQ(early.status.load(), Status::invalid_device_state) << "routing is not fixed before start";
  ASSERT_EQ(dev->start(), Status::success);
  EXPECT_EQ(dev->start(), Status::invalid_device_state) << "started once";
  Packet no_callback;
  EXPECT_EQ(dev->submit(no_callback), Status::invalid_parameter) << "rejected, no callback to run";
  EXPECT_EQ(no_callback.status, Status::invalid_parameter);
  auto& bad_type = packets.make(static_cast<RequestType>(99));
  ASSERT_EQ(dev->submit(bad_type.packet), Status::pending);
  EXPECT_EQ(bad_type.status.load(), Status::invalid_parameter);
  packets.expect_all_completed_once();
}

TEST(DeviceRouting, DeviceConfigIsValidated) {
  EXPECT_EQ(Device::create({.max_requests = 0}).error().status, Status::invalid_parameter);
  EXPECT_EQ(Device::create({.max_requests = 1u << 20}).error().status, Status::invalid_parameter);
  auto lower = make_device();
  EXPECT_EQ(Device::create({.lower = lower.get()}).error().status, Status::invalid_parameter)
      << "only a filter has a lower device";
}

}  // namespace
}  // namespace ioq
