# Install rules, the exported CMake package (find_package(ioq CONFIG)) and ioq.pc.
include(CMakePackageConfigHelpers)

install(TARGETS ioq EXPORT ioqTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/ioq DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT ioqTargets NAMESPACE ioq:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ioq)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ioqConfig.cmake.in
  ${PROJECT_BINARY_DIR}/ioqConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ioq)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ioqConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/ioqConfig.cmake ${PROJECT_BINARY_DIR}/ioqConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/ioq)

# The .pc file finds its prefix relative to itself, so a staged or moved install works.
file(RELATIVE_PATH IOQ_PC_RELATIVE_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" IOQ_PC_RELATIVE_PREFIX "${IOQ_PC_RELATIVE_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/ioq.pc.in ${PROJECT_BINARY_DIR}/ioq.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/ioq.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
