// Linked into _C only for a manylinux wheel (CMake option SQAT_LINK_GLIBC; see CMakeLists.txt).
//
// GCC's libstdc++ headers, seeing glibc >= 2.32 at compile time, read glibc's flag __libc_single_threaded to
// skip atomic operations (reference counts, ...) while a process has one thread. An older glibc has no such
// symbol, and the module would not load there. This hidden definition takes its place inside _C only: it
// says "not single-threaded" forever, so libstdc++ always takes the atomic path, which is correct in every
// case (the flag is an optimisation hint, never a requirement).
extern "C" {
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
