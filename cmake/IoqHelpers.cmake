# Helpers shared by runtime/, tests/ and bench/.

# Sanitizers through one knob (IOQ_SANITIZE), applied to everything built here.
function(ioq_apply_sanitizers sanitizers)
  if(sanitizers STREQUAL "")
    return()
  endif()
  set(flags -fsanitize=${sanitizers} -fno-omit-frame-pointer -g)
  if(sanitizers MATCHES "undefined")
    list(APPEND flags -fno-sanitize-recover=undefined)
  endif()
  add_compile_options(${flags})
  add_link_options(-fsanitize=${sanitizers})
  add_compile_definitions(IOQ_SANITIZED=1)
  if(sanitizers MATCHES "thread")
    add_compile_definitions(IOQ_TSAN=1)
  endif()
endfunction()

# Warnings for ioq's own targets.
function(ioq_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                           -Wno-sign-conversion -Werror=return-type)
endfunction()

# ioq_add_test(<stem> [LABELS ...] [LIBS ...]): tests/<stem>_test.cpp -> <stem>_test,
# linked with gtest_main and the runtime's internals, registered per TEST through
# gtest_discover_tests.
function(ioq_add_test stem)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS;LIBS;SOURCES" ${ARGN})
  add_executable(${stem}_test ${stem}_test.cpp ${ARG_SOURCES})
  target_link_libraries(${stem}_test PRIVATE ioq_internal GTest::gtest_main ${ARG_LIBS})
  ioq_warnings(${stem}_test)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  gtest_discover_tests(${stem}_test
    DISCOVERY_TIMEOUT 60
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

# ioq_add_bench(<stem> [LIBS ...]): bench/<stem>_bench.cpp -> <stem>_bench, plus a
# smoke run in CTest (label "bench") so a broken benchmark fails the test command.
function(ioq_add_bench stem)
  cmake_parse_arguments(ARG "" "" "LIBS;SOURCES" ${ARGN})
  add_executable(${stem}_bench ${stem}_bench.cpp ${ARG_SOURCES})
  target_link_libraries(${stem}_bench PRIVATE ioq_internal benchmark::benchmark ${ARG_LIBS})
  ioq_warnings(${stem}_bench)
  if(IOQ_BUILD_TESTS)
    add_test(NAME bench.${stem}.smoke
             COMMAND ${stem}_bench --benchmark_min_time=0.001 --benchmark_repetitions=1)
    set_tests_properties(bench.${stem}.smoke PROPERTIES LABELS "bench" TIMEOUT 300)
  endif()
endfunction()
