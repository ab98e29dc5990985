// Catch2WithMain provides main(); this file only gives the library a source.
#include <catch2/catch_all.hpp>
