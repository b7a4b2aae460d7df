// Runtime CPU dispatch: picks the best kernel table once, honouring TQSEARCH_SIMD.
#pragma once
#include <string>
#include <vector>

#include "simd/kernels.h"

namespace tq {

// Kernel tables this build has and this CPU can run, best last ("scalar" always first).
std::vector<std::string> available_simd_levels();
// CPU features relevant to the kernels, as detected at run time.
std::vector<std::string> cpu_features();
// The table named `level`; throws std::invalid_argument when it is unknown or unavailable here.
const Kernels* kernels_for(const std::string& level);
// The default table: TQSEARCH_SIMD if set (and available), else the best available. Resolved once.
const Kernels* default_kernels();

}  // namespace tq
