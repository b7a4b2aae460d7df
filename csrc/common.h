// Shared checks and sizes for the tqsearch native core.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

// Cheap invariant check at the native boundary; nanobind maps std::invalid_argument to ValueError.
#define TQ_CHECK(cond, msg)                                   \
  do {                                                        \
    if (!(cond)) throw std::invalid_argument(std::string(msg)); \
  } while (0)

namespace tq {

// Bytes of one packed code row: dim indices of `bits` bits, LSB-first, padded to a whole byte.
inline size_t packed_row_bytes(size_t dim, int bits) { return (dim * size_t(bits) + 7) / 8; }

// Allocator of 64-byte (cache line) aligned storage: a scan's 64-byte loads of codes and query tables
// then never straddle two lines (measured ~20% on the AVX-512 kLut kernel against 16-byte alignment).
// From 4 MB, storage is 2 MB aligned and asks Linux for transparent huge pages (MADV_HUGEPAGE: where THP is
// "madvise", the common default, anonymous memory otherwise gets 4 KB pages): a one-query scan streams its codes
// without a TLB miss and a prefetcher stop every 4 KB (WordNet 2-bit, AVX-512: +8%), and an HNSW walk's random
// reads miss the TLB less. Every page is written when the vector is sized, so resident memory is unchanged.
template <class T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  static constexpr size_t kHuge = size_t(2) << 20, kHugeFrom = size_t(4) << 20;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugeFrom) return static_cast<T*>(::operator new(bytes, kAlign));
    void* p = ::operator new(bytes, std::align_val_t{kHuge});
#ifdef MADV_HUGEPAGE
    madvise(p, (bytes + 4095) / 4096 * 4096, MADV_HUGEPAGE);  // advice only: no huge pages is no error
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    ::operator delete(p, n * sizeof(T) < kHugeFrom ? kAlign : std::align_val_t{kHuge});
  }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }
};
template <class T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

// v holding exactly n elements (reallocating to exactly n when it must grow); new elements are zero.
template <class T, class A>
void resize_exact(std::vector<T, A>& v, size_t n) {
  if (n > v.capacity()) v.reserve(n);  // libstdc++/libc++ reserve exactly n; resize alone may double
  v.resize(n, T(0));
}

// Thrown by long loops when the interrupt callback reports a pending Python signal.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

}  // namespace tq
