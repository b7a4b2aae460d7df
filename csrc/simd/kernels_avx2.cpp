// AVX2 + FMA kernel table (compiled with -mavx2 -mfma only in this translation unit).
#include "simd/kernels.h"
#include "simd/lut-inl.h"
#include "simd/kernels_avx2-inl.h"

namespace tq {

constexpr Kernels kKernelsAVX2 = {
    .name = "avx2",
    .mul = avx2::mul,
    .scale = avx2::scale,
    .fwht = avx2::fwht,
    .kac = avx2::kac,
    .dot = avx2::dot,
    .quantize = avx2::quantize,
    .lookup = avx2::lookup,
    .pack = avx2::pack,
    .unpack = avx2::unpack,
    .dot_many = avx2::dot_many,
    .rotate = nullptr,
    .encode = nullptr,
    .dot_i8_block = avx2::dot_i8_block,
    .lut_block = avx2::lut_block,
    .lut_tables = lut_tables,
    .lut_queries = 8,
    .lut_layout = 1,
    .dot_u8_block = avx2::dot_u8_block,
    .score_block = avx2::score_block,
    .first_hit = avx2::first_hit,
    .dot_row4 = avx2::dot_row4,
    .dot_row8 = avx2::dot_row8,
    .dot_u8i8 = avx2::dot_u8i8,
    .mask_bits = avx2::mask_bits,
};
static_assert(complete(kKernelsAVX2), "the AVX2 kernel table is incomplete");

}  // namespace tq
