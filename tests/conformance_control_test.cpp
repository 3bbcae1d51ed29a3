// Placeholder: filled in by the conformance_control suite.
#include <gtest/gtest.h>
