#include "simd/dispatch.h"

#include <cstdlib>
#include <stdexcept>

namespace tq {
namespace {

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // libgcc also checks the OS saves the wide registers (XCR0) before reporting avx/avx512 features.
  if (std::string(feature) == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                        __builtin_cpu_supports("bmi2");
  if (std::string(feature) == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#endif
  (void)feature;
  return false;
}

struct Entry {
  const char* name;
  const Kernels* table;
  bool runnable;
};

std::vector<Entry> entries() {
  std::vector<Entry> e{{"scalar", &kKernelsScalar, true}};
#ifdef TQ_BUILD_AVX2
  e.push_back({"avx2", &kKernelsAVX2, cpu_has("avx2")});
#endif
#ifdef TQ_BUILD_AVX512
  e.push_back({"avx512", &kKernelsAVX512, cpu_has("avx512") && cpu_has("avx2")});
#endif
  return e;
}

}  // namespace

std::vector<std::string> available_simd_levels() {
  std::vector<std::string> out;
  for (const auto& e : entries())
    if (e.runnable) out.push_back(e.name);
  return out;
}

std::vector<std::string> cpu_features() {
  std::vector<std::string> out;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#define TQ_FEATURE(name) \
  if (__builtin_cpu_supports(name)) out.push_back(name);
  TQ_FEATURE("sse4.2") TQ_FEATURE("avx") TQ_FEATURE("avx2") TQ_FEATURE("fma") TQ_FEATURE("bmi2")
  TQ_FEATURE("avx512f") TQ_FEATURE("avx512bw") TQ_FEATURE("avx512vl") TQ_FEATURE("avx512dq")
  TQ_FEATURE("avx512vnni") TQ_FEATURE("avx512vbmi")
#undef TQ_FEATURE
#endif
  return out;
}

const Kernels* kernels_for(const std::string& level) {
  for (const auto& e : entries()) {
    if (level != e.name) continue;
    if (!e.runnable) throw std::invalid_argument("SIMD level '" + level + "' is not supported by this CPU");
    return e.table;
  }
  throw std::invalid_argument("unknown SIMD level '" + level + "' (expected scalar, avx2 or avx512)");
}

const Kernels* default_kernels() {
  static const Kernels* chosen = [] {
    const char* env = std::getenv("TQSEARCH_SIMD");
    if (env && *env) return kernels_for(env);
    const Kernels* best = &kKernelsScalar;
    for (const auto& e : entries())
      if (e.runnable) best = e.table;
    return best;
  }();
  return chosen;
}

}  // namespace tq
