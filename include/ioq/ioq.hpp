// ioq/ioq.hpp — everything of ioq's public API in one include.
#pragma once

#include <ioq/device.hpp>
#include <ioq/fault.hpp>
#include <ioq/packet.hpp>
#include <ioq/queue.hpp>
#include <ioq/request.hpp>
#include <ioq/result.hpp>
#include <ioq/status.hpp>
#include <ioq/types.hpp>
