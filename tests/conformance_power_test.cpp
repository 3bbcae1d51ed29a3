// Placeholder: filled in by the conformance_power suite.
#include <gtest/gtest.h>
