// nanobind module tqsearch._core: type mapping, GIL release and error mapping only.
// Python validates inputs and allocates outputs; C++ re-checks cheap invariants.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "codec.h"
#include "flat.h"
#include "hnsw.h"
#include "multivector.h"
#include "common.h"
#include "random.h"
#include "rotation.h"
#include "simd/dispatch.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

template <class T, class Shape = nb::shape<-1, -1>>
using In = nb::ndarray<const T, Shape, nb::c_contig, nb::device::cpu>;
template <class T, class Shape = nb::shape<-1, -1>>
using Out = nb::ndarray<T, Shape, nb::c_contig, nb::device::cpu>;
using Vec = nb::shape<-1>;

const tq::Kernels* pick(const std::string& simd) { return simd.empty() ? tq::default_kernels() : tq::kernels_for(simd); }

// The interpreter's main thread, the only one that runs Python signal handlers (set at import).
unsigned long main_thread_ident = 0;

// Runs fn without the GIL; Ctrl-C pending at a chunk boundary stops it and re-raises KeyboardInterrupt.
// Only the main thread polls: elsewhere PyErr_CheckSignals does nothing, and re-taking the GIL at every
// chunk would make a search on a worker thread (a server's) queue behind the threads holding it.
template <class F>
void without_gil(F&& fn) {
  bool interrupted = false;
  const bool on_main = PyThread_get_thread_ident() == main_thread_ident;
  {
    nb::gil_scoped_release release;
    tq::InterruptCheck check;
    if (on_main) {
      check = [] {
        nb::gil_scoped_acquire acquire;
        return PyErr_CheckSignals() != 0;
      };
    }
    try {
      fn(check);
    } catch (const tq::Interrupted&) {
      interrupted = true;
    }
  }
  if (interrupted) throw nb::python_error();
}

void check_rows(size_t got, size_t want, const char* what) {
  TQ_CHECK(got == want, std::string(what) + " has the wrong number of rows");
}

std::vector<float> to_vector(const In<float, Vec>& a) { return std::vector<float>(a.data(), a.data() + a.shape(0)); }

template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::vector<T> v) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(heap->data(), {heap->size()}, owner);
}

nb::ndarray<nb::numpy, float> to_numpy(std::vector<float> v) { return owned_array(std::move(v)); }
nb::ndarray<nb::numpy, uint8_t> to_numpy_u8(std::vector<uint8_t> v) { return owned_array(std::move(v)); }
nb::ndarray<nb::numpy, uint32_t> to_numpy_u32(std::vector<uint32_t> v) { return owned_array(std::move(v)); }

// The per-slot score factor a of a store (FlatStore or HnswGraph) for the given slots.
template <class Store>
nb::ndarray<nb::numpy, float> a_of(const Store& s, const In<int64_t, Vec>& slots) {
  std::vector<float> out(slots.shape(0));
  for (size_t i = 0; i < out.size(); ++i) {
    TQ_CHECK(slots(i) >= 0 && size_t(slots(i)) < s.size(), "slot out of range");
    out[i] = s.a_at(size_t(slots(i)));
  }
  return to_numpy(std::move(out));
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "tqsearch native kernels (rotation, TurboQuant codec, scan)";
  main_thread_ident = nb::cast<unsigned long>(nb::module_::import_("threading").attr("main_thread")().attr("ident"));
  m.attr("__version__") = TQSEARCH_VERSION;
  m.def("available_simd_levels", &tq::available_simd_levels);
  m.def("cpu_features", &tq::cpu_features);
  m.def("default_simd_level", [] { return std::string(tq::default_kernels()->name); });
  m.def("random_signs", [](uint64_t seed, size_t n) { return to_numpy(tq::random_signs(seed, n)); });
  m.def("random_gaussian", [](uint64_t seed, size_t n) { return to_numpy(tq::random_gaussian(seed, n)); });
  m.def("derive_seed", &tq::derive_seed);

  nb::class_<tq::Rotation>(m, "Rotation")
      .def_static("fht_kac", &tq::Rotation::fht_kac, "dim"_a, "seed"_a, "steps"_a)
      .def_static("dense",
                  [](const In<float>& mat) {
                    TQ_CHECK(mat.shape(0) == mat.shape(1), "dense rotation matrix must be square");
                    return tq::Rotation::dense(mat.shape(0),
                                               std::vector<float>(mat.data(), mat.data() + mat.size()));
                  })
      .def_prop_ro("dim", &tq::Rotation::dim)
      .def_prop_ro("steps", &tq::Rotation::steps);

  nb::enum_<tq::ScaleMode>(m, "ScaleMode")
      .value("none", tq::ScaleMode::None)
      .value("unbiased", tq::ScaleMode::Unbiased)
      .value("lsq", tq::ScaleMode::Lsq);

  nb::class_<tq::MSECodec>(m, "MSECodec")
      .def(
          "__init__",
          [](tq::MSECodec* self, const tq::Rotation& rot, int bits, const In<float, Vec>& centroids,
             const std::string& simd) { new (self) tq::MSECodec(rot, bits, to_vector(centroids), pick(simd)); },
          "rotation"_a, "bits"_a, "centroids"_a, "simd"_a = "")
      .def_prop_ro("dim", &tq::MSECodec::dim)
      .def_prop_ro("bits", &tq::MSECodec::bits)
      .def_prop_ro("row_bytes", &tq::MSECodec::row_bytes)
      .def_prop_ro("simd_level", [](const tq::MSECodec& c) { return std::string(c.kernels().name); })
      .def(
          "encode",
          [](const tq::MSECodec& c, const In<float>& x, tq::ScaleMode mode, Out<uint8_t>& codes,
             Out<float, Vec>& norms, Out<float, Vec>& scales, int threads) {
            const size_t n = x.shape(0);
            TQ_CHECK(x.shape(1) == c.dim(), "vectors have the wrong dimension");
            TQ_CHECK(codes.shape(0) == n && codes.shape(1) == c.row_bytes(), "codes buffer has the wrong shape");
            check_rows(norms.shape(0), n, "norms");
            check_rows(scales.shape(0), n, "scales");
            int64_t bad = -1;
            without_gil([&](const tq::InterruptCheck& chk) {
              bad = c.encode(x.data(), n, mode, codes.data(), norms.data(), scales.data(), threads, chk);
            });
            return bad;
          },
          "x"_a, "mode"_a, "codes"_a, "norms"_a, "scales"_a, "threads"_a)
      .def(
          "decode",
          [](const tq::MSECodec& c, const In<uint8_t>& codes, const In<float, Vec>& norms,
             const In<float, Vec>& scales, Out<float>& out, int threads) {
            const size_t n = codes.shape(0);
            TQ_CHECK(codes.shape(1) == c.row_bytes(), "codes have the wrong row size");
            check_rows(norms.shape(0), n, "norms");
            check_rows(scales.shape(0), n, "scales");
            TQ_CHECK(out.shape(0) == n && out.shape(1) == c.dim(), "output buffer has the wrong shape");
            without_gil([&](const tq::InterruptCheck& chk) {
              c.decode(codes.data(), norms.data(), scales.data(), n, out.data(), threads, chk);
            });
          },
          "codes"_a, "norms"_a, "scales"_a, "out"_a, "threads"_a)
      ;

  m.def(
      "rotate",
      [](const tq::Rotation& r, const In<float>& x, bool inverse, Out<float>& out, int threads, const std::string& simd) {
        const size_t n = x.shape(0);
        TQ_CHECK(x.shape(1) == r.dim(), "vectors have the wrong dimension");
        TQ_CHECK(out.shape(0) == n && out.shape(1) == r.dim(), "output buffer has the wrong shape");
        const tq::Kernels* k = pick(simd);
        without_gil([&](const tq::InterruptCheck& chk) { tq::rotate_rows(r, *k, x.data(), n, inverse, out.data(), threads, chk); });
      },
      "rotation"_a, "x"_a, "inverse"_a, "out"_a, "threads"_a, "simd"_a = "");
  m.def(
      "scan_ip",
      [](const In<float>& queries, const In<uint8_t>& codes, int bits, const In<float, Vec>& centroids,
         const In<float, Vec>& factors, Out<float>& out, int threads, const std::string& simd) {
        const size_t nq = queries.shape(0), n = codes.shape(0), dim = queries.shape(1);
        TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
        TQ_CHECK(centroids.shape(0) == (size_t(1) << bits), "need 2^bits centroids");
        TQ_CHECK(codes.shape(1) == tq::packed_row_bytes(dim, bits), "codes have the wrong row size");
        check_rows(factors.shape(0), n, "factors");
        TQ_CHECK(out.shape(0) == nq && out.shape(1) == n, "output buffer has the wrong shape");
        const tq::Kernels* k = pick(simd);
        without_gil([&](const tq::InterruptCheck& chk) {
          tq::scan_ip(*k, queries.data(), nq, codes.data(), n, dim, bits, centroids.data(), factors.data(), out.data(),
                      n, threads, chk);
        });
      },
      "queries"_a, "codes"_a, "bits"_a, "centroids"_a, "factors"_a, "out"_a, "threads"_a, "simd"_a = "");
  nb::class_<tq::FlatStore>(m, "FlatStore")
      .def(
          "__init__",
          [](tq::FlatStore* self, size_t dim, int bits, const In<float, Vec>& centroids, const std::string& simd) {
            new (self) tq::FlatStore(dim, bits, to_vector(centroids), pick(simd));
          },
          "dim"_a, "bits"_a, "centroids"_a, "simd"_a = "")
      .def_prop_ro("size", &tq::FlatStore::size)
      .def("a_of", &a_of<tq::FlatStore>, "slots"_a)
      .def_prop_ro("code_size", &tq::FlatStore::code_size)
      .def_prop_ro("layout", [](const tq::FlatStore& s) { return int(s.layout()); })
      .def(
          "append",
          [](tq::FlatStore& s, const In<uint8_t>& packed, const In<float, Vec>& a, const In<float, Vec>& b) {
            const size_t n = packed.shape(0);
            check_rows(a.shape(0), n, "a");
            check_rows(b.shape(0), n, "b");
            s.append(packed.data(), a.data(), b.data(), n);
          },
          "packed"_a, "a"_a, "b"_a)
      .def("move", &tq::FlatStore::move, "src"_a, "dst"_a)
      .def("truncate", &tq::FlatStore::truncate, "n"_a)
      .def(
          "packed_rows",
          [](const tq::FlatStore& s, const In<int64_t, Vec>& slots, Out<uint8_t>& out) {
            check_rows(out.shape(0), slots.shape(0), "output buffer");
            s.packed_rows(slots.data(), slots.shape(0), out.data());
          },
          "slots"_a, "out"_a)
      .def(
          "search",
          [](const tq::FlatStore& s, const In<float>& queries, size_t k, std::optional<In<uint64_t, Vec>> allowed,
             Out<float>& scores, Out<int64_t>& slots, int threads) {
            const size_t nq = queries.shape(0);
            TQ_CHECK(scores.shape(0) == nq && scores.shape(1) == k && slots.shape(0) == nq && slots.shape(1) == k,
                     "output buffers have the wrong shape");
            TQ_CHECK(!allowed || allowed->shape(0) >= (s.size() + 63) / 64, "allowed bitset is too short");
            const uint64_t* bits = allowed ? allowed->data() : nullptr;
            without_gil([&](const tq::InterruptCheck& chk) {
              s.search(queries.data(), nq, k, bits, scores.data(), slots.data(), threads, chk);
            });
          },
          "queries"_a, "k"_a, "allowed"_a.none(), "scores"_a, "slots"_a, "threads"_a)
      .def("codes", [](const tq::FlatStore& s) { return to_numpy_u8(s.codes()); })
      .def("a", [](const tq::FlatStore& s) { return to_numpy(s.a()); })
      .def("b", [](const tq::FlatStore& s) { return to_numpy(s.b()); })
      .def_prop_ro("attached", &tq::FlatStore::attached)
      .def(
          "attach",  // zero-copy: the caller keeps the arrays alive (FlatIndex holds them)
          [](tq::FlatStore& s, const In<uint8_t, Vec>& codes, const In<float, Vec>& a, const In<float, Vec>& b,
             size_t n) {
            TQ_CHECK(a.shape(0) == n && b.shape(0) == n, "stored index arrays have inconsistent sizes");
            s.attach(codes.data(), codes.shape(0), a.data(), b.data(), n);
          },
          "codes"_a, "a"_a, "b"_a, "n"_a);

  nb::class_<tq::HnswGraph>(m, "HnswGraph")
      .def(
          "__init__",
          [](tq::HnswGraph* self, size_t dim, int bits, const In<float, Vec>& centroids, size_t M,
             size_t ef_construction, uint64_t seed, float decode_div, const std::string& simd) {
            new (self) tq::HnswGraph(dim, bits, to_vector(centroids), M, ef_construction, seed, decode_div,
                                     pick(simd));
          },
          "dim"_a, "bits"_a, "centroids"_a, "M"_a, "ef_construction"_a, "seed"_a, "decode_div"_a, "simd"_a = "")
      .def_prop_ro("size", &tq::HnswGraph::size)
      .def("a_of", &a_of<tq::HnswGraph>, "slots"_a)
      .def_prop_ro("entry", &tq::HnswGraph::entry)
      .def_prop_ro("max_level", &tq::HnswGraph::max_level)
      .def_prop_ro("memory_bytes", &tq::HnswGraph::memory_bytes)
      .def("deleted", &tq::HnswGraph::deleted, "slot"_a)
      .def(
          "add",
          [](tq::HnswGraph& g, const In<float>& rotated, const In<uint8_t>& packed, const In<float, Vec>& a,
             const In<float, Vec>& b, const In<int64_t, Vec>& slots, int threads) {
            const size_t n = packed.shape(0);
            check_rows(rotated.shape(0), n, "rotated");
            check_rows(a.shape(0), n, "a");
            check_rows(b.shape(0), n, "b");
            check_rows(slots.shape(0), n, "slots");
            TQ_CHECK(rotated.shape(1) == g.dim() && packed.shape(1) == g.row_bytes(), "rows have the wrong width");
            without_gil([&](const tq::InterruptCheck& chk) {
              g.add(rotated.data(), packed.data(), a.data(), b.data(), slots.data(), n, threads, chk);
            });
          },
          "rotated"_a, "packed"_a, "a"_a, "b"_a, "slots"_a, "threads"_a)
      .def("remove", &tq::HnswGraph::remove, "slot"_a)
      .def(
          "search",
          [](const tq::HnswGraph& g, const In<float>& queries, size_t k, size_t ef,
             std::optional<In<uint64_t, Vec>> allowed, size_t candidates, Out<float>& scores, Out<int64_t>& slots,
             int threads) {
            const size_t nq = queries.shape(0);
            TQ_CHECK(queries.shape(1) == g.dim(), "queries have the wrong width");
            TQ_CHECK(scores.shape(0) == nq && scores.shape(1) == k && slots.shape(0) == nq && slots.shape(1) == k,
                     "output buffers have the wrong shape");
            TQ_CHECK(!allowed || allowed->shape(0) >= (g.size() + 63) / 64, "allowed bitset is too short");
            const uint64_t* bits = allowed ? allowed->data() : nullptr;
            without_gil([&](const tq::InterruptCheck& chk) {
              g.search(queries.data(), nq, k, ef, bits, candidates, scores.data(), slots.data(), threads, chk);
            });
          },
          "queries"_a, "k"_a, "ef"_a, "allowed"_a.none(), "candidates"_a, "scores"_a, "slots"_a, "threads"_a)
      .def(
          "packed_rows",
          [](const tq::HnswGraph& g, const In<int64_t, Vec>& slots, Out<uint8_t>& out) {
            check_rows(out.shape(0), slots.shape(0), "output buffer");
            g.packed_rows(slots.data(), slots.shape(0), out.data());
          },
          "slots"_a, "out"_a)
      .def("arrays",
           [](const tq::HnswGraph& g) {
             nb::dict d;
             d["codes"] = to_numpy_u8(g.codes());
             d["a"] = to_numpy(g.a());
             d["b"] = to_numpy(g.b());
             d["levels"] = to_numpy_u8(g.levels());
             d["deleted"] = to_numpy_u8(g.deleted_flags());
             d["level0"] = to_numpy_u32(g.level0());
             d["upper"] = to_numpy_u32(g.upper());
             return d;
           })
      .def(
          "restore",
          [](tq::HnswGraph& g, const In<uint8_t, Vec>& codes, const In<float, Vec>& a, const In<float, Vec>& b,
             const In<uint8_t, Vec>& levels, const In<uint8_t, Vec>& deleted, const In<uint32_t, Vec>& level0,
             const In<uint32_t, Vec>& upper, size_t n, int64_t entry, int max_level) {
            TQ_CHECK(codes.shape(0) == n * g.row_bytes() && a.shape(0) == n && b.shape(0) == n &&
                         levels.shape(0) == n && deleted.shape(0) == n &&
                         level0.shape(0) == n * (g.max_links0() + 1),
                     "stored graph arrays have inconsistent sizes");
            g.restore(codes.data(), a.data(), b.data(), levels.data(), deleted.data(), level0.data(), upper.data(),
                      upper.shape(0), n, entry, max_level);
          },
          "codes"_a, "a"_a, "b"_a, "levels"_a, "deleted"_a, "level0"_a, "upper"_a, "n"_a, "entry"_a, "max_level"_a);

  m.def(
      "fde_aggregate",
      [](const In<float>& proj, const In<uint32_t>& buckets, const In<int64_t, Vec>& offsets, size_t buckets_per_rep,
         size_t width, bool average, bool fill, bool normalize, Out<float>& out, int threads) {
        const size_t sets = offsets.shape(0) - 1, reps = buckets.shape(1);
        TQ_CHECK(offsets.shape(0) >= 1 && offsets(0) == 0 && size_t(offsets(sets)) == proj.shape(0),
                 "offsets must run from 0 to the number of tokens");
        check_rows(buckets.shape(0), proj.shape(0), "buckets");
        const tq::FdeShape shape{reps, buckets_per_rep, width};
        TQ_CHECK(out.shape(0) == sets && out.shape(1) == shape.dim(), "output buffer has the wrong shape");
        without_gil([&](const tq::InterruptCheck& chk) {
          tq::fde_aggregate(proj.data(), proj.shape(1), buckets.data(), offsets.data(), sets, shape, average, fill,
                            normalize, out.data(), threads, chk);
        });
      },
      "proj"_a, "buckets"_a, "offsets"_a, "buckets_per_rep"_a, "width"_a, "average"_a, "fill"_a, "normalize"_a,
      "out"_a, "threads"_a);
  m.def(
      "count_sketch",
      [](const In<float>& in, const In<uint32_t, Vec>& slot, const In<float, Vec>& sign, Out<float>& out) {
        TQ_CHECK(slot.shape(0) == in.shape(1) && sign.shape(0) == in.shape(1), "sketch has the wrong input width");
        check_rows(out.shape(0), in.shape(0), "output buffer");
        nb::gil_scoped_release release;
        tq::count_sketch(in.data(), in.shape(0), in.shape(1), slot.data(), sign.data(), out.shape(1), out.data());
      },
      "x"_a, "slot"_a, "sign"_a, "out"_a);

  nb::class_<tq::ChamferScorer>(m, "ChamferScorer")
      .def(
          "__init__",
          [](tq::ChamferScorer* self, size_t dim, int bits, const In<float, Vec>& centroids, const std::string& simd) {
            new (self) tq::ChamferScorer(dim, bits, to_vector(centroids), pick(simd));
          },
          "dim"_a, "bits"_a, "centroids"_a, "simd"_a = "")
      .def(
          "score",
          [](const tq::ChamferScorer& s, const In<uint8_t>& codes, const In<float, Vec>& a,
             const In<int64_t, Vec>& starts, const In<int64_t, Vec>& counts, const In<float>& queries,
             const In<int64_t, Vec>& qoff, const In<int64_t>& cand, Out<float>& scores, int threads) {
            const size_t nq = cand.shape(0), c = cand.shape(1);
            check_rows(a.shape(0), codes.shape(0), "a");
            TQ_CHECK(codes.shape(1) == s.row_bytes() && queries.shape(1) == s.dim(), "rows have the wrong width");
            check_rows(counts.shape(0), starts.shape(0), "counts");
            TQ_CHECK(qoff.shape(0) == nq + 1 && qoff(0) == 0 && size_t(qoff(nq)) == queries.shape(0),
                     "query offsets must run from 0 to the number of query tokens");
            TQ_CHECK(scores.shape(0) == nq && scores.shape(1) == c, "output buffer has the wrong shape");
            const tq::TokenRows rows{codes.data(), a.data(), codes.shape(0), starts.data(), counts.data(),
                                     starts.shape(0)};
            without_gil([&](const tq::InterruptCheck& chk) {
              s.score(rows, queries.data(), qoff.data(), nq, cand.data(), c, scores.data(), threads, chk);
            });
          },
          "codes"_a, "a"_a, "starts"_a, "counts"_a, "queries"_a, "qoff"_a, "cand"_a, "scores"_a, "threads"_a);

  m.def(
      "unpack",
      [](const In<uint8_t>& codes, size_t dim, int bits, Out<uint8_t>& out) {
        const size_t n = codes.shape(0);
        TQ_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8");
        TQ_CHECK(codes.shape(1) == tq::packed_row_bytes(dim, bits), "codes have the wrong row size");
        TQ_CHECK(out.shape(0) == n && out.shape(1) == dim, "output buffer has the wrong shape");
        const tq::Kernels* k = tq::default_kernels();
        for (size_t i = 0; i < n; ++i) k->unpack(codes.data() + i * codes.shape(1), dim, bits, out.data() + i * dim);
      },
      "codes"_a, "dim"_a, "bits"_a, "out"_a);
}
