// Placeholder: filled in by the scenarios suite.
#include <gtest/gtest.h>
