#include <ioq/status.hpp>

namespace ioq {

std::string_view to_string(Status s) noexcept {
  switch (s) {
    case Status::success: return "success";
    case Status::pending: return "pending";
    case Status::cancelled: return "cancelled";
    case Status::invalid_device_state: return "invalid_device_state";
    case Status::invalid_device_request: return "invalid_device_request";
    case Status::wdf_busy: return "wdf_busy";
    case Status::wdf_paused: return "wdf_paused";
    case Status::device_busy: return "device_busy";
    case Status::no_more_entries: return "no_more_entries";
    case Status::not_found: return "not_found";
    case Status::invalid_parameter: return "invalid_parameter";
    case Status::invalid_parameter_4: return "invalid_parameter_4";
    case Status::insufficient_resources: return "insufficient_resources";
    case Status::unsuccessful: return "unsuccessful";
    case Status::wdf_no_callback: return "wdf_no_callback";
    case Status::delete_pending: return "delete_pending";
    case Status::info_length_mismatch: return "info_length_mismatch";
    case Status::not_supported: return "not_supported";
    case Status::end_of_file: return "end_of_file";
    case Status::invalid_handle: return "invalid_handle";
    case Status::usage_already_completed: return "usage_already_completed";
    case Status::usage_not_owned: return "usage_not_owned";
    case Status::usage_cancelable: return "usage_cancelable";
    case Status::usage_not_cancelable: return "usage_not_cancelable";
    case Status::usage_slot_busy: return "usage_slot_busy";
    case Status::usage_in_handler: return "usage_in_handler";
    case Status::io_error: return "io_error";
  }
  return "unknown";
}

}  // namespace ioq
