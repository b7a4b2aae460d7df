// AVX2 + FMA kernel table (compiled with -mavx2 -mfma only in this translation unit).
#include "simd/kernels.h"
#include "simd/kernels_avx2-inl.h"

namespace tq {

const Kernels kKernelsAVX2 = {"avx2",         avx2::mul,      avx2::scale,  avx2::fwht,
                              avx2::kac,       avx2::dot,     avx2::quantize, avx2::lookup,
                              avx2::pack,     avx2::unpack,   avx2::dot_many, nullptr, nullptr, avx2::dot_i8_block,
                              avx2::lut_block, avx2::dot_u8_block,
                              avx2::score16,   avx2::dot_row4, avx2::dot_u8i8};

}  // namespace tq
