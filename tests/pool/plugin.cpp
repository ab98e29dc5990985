// A function in a library that a test loads with dlopen after its pool's workers started.
extern "C" int flockTestPluginSquare(int x) { return x * x; }
