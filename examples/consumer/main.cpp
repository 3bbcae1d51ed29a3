// Uses only ioq's installed public headers and library.
#include <ioq/fault.hpp>
#include <ioq/status.hpp>

#include <cstdio>

int main() {
  ioq::FaultInjector fi;
  fi.set_every_nth(2);
  const bool first = fi.should_fail();
  const bool second = fi.should_fail();
  std::printf("ioq consumer: %s, injector %d%d\n",
              ioq::to_string(ioq::Status::wdf_busy).data(), first, second);
  return (!first && second && ioq::to_string(ioq::Status::wdf_busy) == "wdf_busy") ? 0 : 1;
}
