// Placeholder: filled in by the forward-progress conformance suite.
#include <gtest/gtest.h>
