// How flock's non-template code is built. By default flock is header-only: those functions are
// inline and every program compiles them. A program that links flock::engine (which defines
// FLOCK_COMPILED_ENGINE for it) sees only their declarations and links the copy compiled once
// in that library, which is most of what an -O2 build of a call to flock costs.
#pragma once

#if defined(FLOCK_BUILDING_ENGINE)
// The engine library's own source: every definition, emitted once, not inline.
#define FLOCK_ENGINE_DEFINITIONS 1
#define FLOCK_ENGINE_INLINE
#elif defined(FLOCK_COMPILED_ENGINE)
// A program linked with flock::engine: declarations only.
#define FLOCK_ENGINE_DEFINITIONS 0
#define FLOCK_ENGINE_INLINE
#else
// Header-only (the default): every definition, inline.
#define FLOCK_ENGINE_DEFINITIONS 1
#define FLOCK_ENGINE_INLINE inline
#endif
