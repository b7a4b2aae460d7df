#include "codec.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "common.h"

namespace tq {
namespace {

constexpr size_t kEncodeChunk = 512;
constexpr size_t kScanChunk = 256;
constexpr size_t kPrefetchRows = 4;
constexpr float kAngleSpan = 0.2f;  // angle rounding tries t in [1 - span, 1 + span]

float scale_for(ScaleMode mode, float dot_uc, float sq_c) {
  if (mode == ScaleMode::Unbiased) return dot_uc > 1e-30f ? 1.0f / dot_uc : 1.0f;
  if (mode == ScaleMode::Lsq) return sq_c > 0.0f ? dot_uc / sq_c : 1.0f;
  return 1.0f;
}

void record_bad(std::atomic<int64_t>& first_bad, size_t row) {
  int64_t seen = first_bad.load();
  while (int64_t(row) < seen && !first_bad.compare_exchange_weak(seen, int64_t(row))) {
  }
}

}  // namespace

MSECodec::MSECodec(Rotation rotation, int bits, const std::vector<float>& centroids, const Kernels* kernels,
                   int angle_steps)
    : rotation_(std::move(rotation)), bits_(bits), k_(kernels) {
  TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
  TQ_CHECK(angle_steps >= 0 && angle_steps <= 64, "angle_steps must be in 0..64");
  for (int s = 1; s <= angle_steps; ++s) {
    const float step = kAngleSpan * float(s) / float(angle_steps);
    grid_.push_back(1.0f - step);
    grid_.push_back(1.0f + step);
  }
  TQ_CHECK(centroids.size() == (size_t(1) << bits), "need 2^bits centroids");
  TQ_CHECK(std::is_sorted(centroids.begin(), centroids.end()), "centroids must be sorted");
  row_bytes_ = packed_row_bytes(dim(), bits);
  centroids_.assign(std::max<size_t>(16, centroids.size()), 0.0f);
  std::copy(centroids.begin(), centroids.end(), centroids_.begin());
  bounds_.resize(centroids.size() - 1);
  for (size_t i = 0; i + 1 < centroids.size(); ++i)
    bounds_[i] = float((double(centroids[i]) + double(centroids[i + 1])) * 0.5);
  if (bits <= 5) {
    levels_.assign(size_t(bits) * 32, 0.0f);
    for (int k = 0; k < bits; ++k) {
      const size_t step = size_t(1) << (bits - 1 - k);
      for (size_t p = 0; p + step - 1 < bounds_.size(); p += 2 * step) levels_[k * 32 + p] = bounds_[p + step - 1];
    }
  }
}

int64_t MSECodec::encode(const float* x, size_t n, ScaleMode mode, uint8_t* codes, float* norms, float* scales,
                         int threads, const InterruptCheck& interrupted) const {
  const size_t d = dim();
  std::atomic<int64_t> first_bad{int64_t(n)};
  parallel_for(n, kEncodeChunk, threads, interrupted, [&](size_t b, size_t e) {
    std::vector<float> y(d), scratch(d);
    std::vector<uint8_t> idx(d), trial(grid_.empty() ? 0 : d);
    const bool fused = k_->encode && rotation_.kind() == Rotation::Kind::FhtKac && grid_.empty();
    const EncodePlan plan{rotation_.plan(), bounds_.data(), centroids_.data(), bits_, levels_.data()};
    for (size_t i = b; i < e; ++i) {
      const float* xi = x + i * d;
      if (i + kPrefetchRows < e)  // rows stream from DRAM: ask for them before the core needs them
        for (size_t off = 0; off < d; off += 16) __builtin_prefetch(xi + kPrefetchRows * d + off);
      float stats[3];
      if (fused && k_->encode(plan, xi, codes + i * row_bytes_, stats)) {
        if (!std::isfinite(stats[0])) {
          record_bad(first_bad, i);
          continue;
        }
        norms[i] = stats[0];
        scales[i] = stats[0] > 0.0f ? scale_for(mode, stats[1], stats[2]) : 1.0f;
        continue;
      }
      const float norm = std::sqrt(k_->dot(xi, xi, d));
      if (!std::isfinite(norm)) {
        record_bad(first_bad, i);
        continue;
      }
      rotation_.forward(*k_, xi, y.data(), scratch.data());
      const float inv = norm > 0.0f ? 1.0f / norm : 0.0f;
      float dot_uc = 0, sq_c = 0;
      if (grid_.empty())
        k_->quantize(y.data(), inv, bounds_.data(), centroids_.data(), bits_, d, idx.data(), &dot_uc, &sq_c);
      else
        round_by_angle(y.data(), inv, idx.data(), trial.data(), &dot_uc, &sq_c);
      k_->pack(idx.data(), d, bits_, codes + i * row_bytes_);
      norms[i] = norm;
      scales[i] = norm > 0.0f ? scale_for(mode, dot_uc, sq_c) : 1.0f;
    }
  });
  return first_bad.load() < int64_t(n) ? first_bad.load() : -1;
}

void MSECodec::round_by_angle(const float* y, float inv, uint8_t* idx, uint8_t* trial, float* dot_uc,
                              float* sq_c) const {
  const size_t d = dim();
  k_->quantize(y, inv, bounds_.data(), centroids_.data(), bits_, d, idx, dot_uc, sq_c);
  // Compare cosines <u, c> / ||c|| through their squares (both positive where it matters) to skip a sqrt.
  float best_dot = *dot_uc, best_sq = *sq_c;
  for (float t : grid_) {
    float dot = 0, sq = 0;
    k_->quantize(y, inv * t, bounds_.data(), centroids_.data(), bits_, d, trial, &dot, &sq);
    dot /= t;  // quantize returns <t u, c>
    if (dot > 0.0f && sq > 0.0f && dot * dot * best_sq > best_dot * best_dot * sq) {
      best_dot = dot;
      best_sq = sq;
      std::copy(trial, trial + d, idx);
    }
  }
  *dot_uc = best_dot;
  *sq_c = best_sq;
}

void MSECodec::decode(const uint8_t* codes, const float* norms, const float* scales, size_t n, float* out, int threads,
                      const InterruptCheck& interrupted) const {
  const size_t d = dim();
  parallel_for(n, kEncodeChunk, threads, interrupted, [&](size_t b, size_t e) {
    std::vector<float> scratch(d);
    std::vector<uint8_t> idx(d);
    for (size_t i = b; i < e; ++i) {
      float* yi = out + i * d;
      k_->unpack(codes + i * row_bytes_, d, bits_, idx.data());
      k_->lookup(idx.data(), centroids_.data(), d, yi);
      rotation_.inverse(*k_, yi, yi, scratch.data());
      k_->scale(yi, norms[i] * (scales ? scales[i] : 1.0f), d);
    }
  });
}

void rotate_rows(const Rotation& rotation, const Kernels& k, const float* x, size_t n, bool inverse, float* out,
                 int threads, const InterruptCheck& interrupted) {
  const size_t d = rotation.dim();
  parallel_for(n, kEncodeChunk, threads, interrupted, [&](size_t b, size_t e) {
    std::vector<float> scratch(d);
    for (size_t i = b; i < e; ++i) {
      if (inverse)
        rotation.inverse(k, x + i * d, out + i * d, scratch.data());
      else
        rotation.forward(k, x + i * d, out + i * d, scratch.data());
    }
  });
}

void scan_ip(const Kernels& k, const float* queries, size_t nq, const uint8_t* codes, size_t n, size_t dim, int bits,
             const float* centroids, const float* factors, float* out, size_t ld, int threads,
             const InterruptCheck& interrupted) {
  TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
  const size_t rb = packed_row_bytes(dim, bits);
  parallel_for(n, kScanChunk, threads, interrupted, [&](size_t b, size_t e) {
    std::vector<uint8_t> idx(dim);
    std::vector<float> row(dim), s(nq);
    for (size_t i = b; i < e; ++i) {
      k.unpack(codes + i * rb, dim, bits, idx.data());
      k.lookup(idx.data(), centroids, dim, row.data());
      k.dot_many(queries, nq, row.data(), dim, s.data());
      const float f = factors ? factors[i] : 1.0f;
      for (size_t q = 0; q < nq; ++q) out[q * ld + i] = f * s[q];
    }
  });
}

}  // namespace tq
