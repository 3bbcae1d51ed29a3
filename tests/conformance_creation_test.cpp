// Placeholder: filled in by the conformance_creation suite.
#include <gtest/gtest.h>
